"""Encoding search for additive (direct-sum) quantizers.

Shapes: n = frames, D = dim, N = codebooks, K = codebook size.
A code ``(i_1, ..., i_N)`` reconstructs ``z_hat = sum_m C[m, i_m]``.

The squared error decomposes into look-up tables (as in faiss' LUT beam search):

    ||z - z_hat||^2 = ||z||^2 + sum_m (||C[m,i_m]||^2 - 2 z.C[m,i_m])
                      + 2 sum_{l<m} C[l,i_l].C[m,i_m]

so after one matmul ``z @ C^T`` (n, N*K) every candidate costs only table
look-ups, which makes a beam search and ICM refinement nearly free.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def cross_table(codebooks: Tensor) -> Tensor:
    """Inner products of all codewords, laid out for the search.

    Args:
        codebooks: (N, K, D)
    Returns:
        (N, N, K, K) with ``T[m, l, a, b] = C[l, a] . C[m, b]``, so that
        ``T[m].reshape(N*K, K)`` is a contiguous embedding table whose row ``l*K + a``
        holds the cross terms of codeword ``(l, a)`` with all of codebook m.
    """
    N, K, D = codebooks.shape
    flat = codebooks.reshape(N * K, D)
    return (flat @ flat.T).view(N, K, N, K).permute(2, 0, 1, 3).contiguous()


def _unary(z: Tensor, codebooks: Tensor) -> Tensor:
    """(n, N, K) cost of each codeword alone: ||c||^2 - 2 z.c."""
    N, K, D = codebooks.shape
    dots = (z @ codebooks.reshape(N * K, D).T).view(-1, N, K)
    return (codebooks * codebooks).sum(-1).unsqueeze(0) - 2.0 * dots


def _cross(table: Tensor, m: int, flat_codes: Tensor) -> Tensor:
    """Sum over the given codewords of their inner products with codebook m.

    Args:
        table: (N, N, K, K) from :func:`cross_table`.
        flat_codes: (B, L) codeword ids ``l*K + a`` (of codebooks other than m).
    Returns:
        (B, K)
    """
    N, _, K, _ = table.shape
    return F.embedding_bag(flat_codes, table[m].reshape(N * K, K), mode="sum")


def beam_search(unary: Tensor, table: Tensor, beam: int) -> Tensor:
    """Beam search over the codebooks in order.

    Args:
        unary: (n, N, K) from :func:`_unary`.
        table: (N, N, K, K) from :func:`cross_table`.
        beam: number of partial codes kept per frame (1 = greedy residual search).
    Returns:
        codes (n, N) int64, the best complete code in the beam.
    """
    n, N, K = unary.shape
    offsets = torch.arange(N, device=unary.device) * K
    codes = unary.new_zeros((n, 1, 0), dtype=torch.long)
    dist = unary.new_zeros((n, 1))
    for m in range(N):
        cand = dist.unsqueeze(-1) + unary[:, m].unsqueeze(1)  # (n, b, K)
        b = cand.shape[1]
        if m > 0:
            flat = (codes + offsets[:m]).reshape(n * b, m)
            cand = cand + 2.0 * _cross(table, m, flat).view(n, b, K)
        dist, idx = cand.reshape(n, b * K).topk(min(beam, b * K), dim=1, largest=False)
        parent = idx // K
        codes = torch.cat(
            [codes.gather(1, parent.unsqueeze(-1).expand(-1, -1, m)), (idx % K).unsqueeze(-1)],
            dim=2,
        )
    return codes[:, 0]


def icm_refine(unary: Tensor, table: Tensor, codes: Tensor, iters: int) -> Tensor:
    """Iterated conditional modes: re-pick each codebook's entry given the others.

    Each step is an exact minimisation over one codebook, so the error never increases.

    Args:
        unary: (n, N, K); table: (N, N, K, K); codes: (n, N) int64.
    Returns:
        refined codes (n, N).
    """
    n, N, K = unary.shape
    if N == 1:
        return codes
    offsets = torch.arange(N, device=unary.device) * K
    codes = codes.clone()
    for _ in range(iters):
        for m in range(N):
            others = torch.cat([codes[:, :m] + offsets[:m], codes[:, m + 1 :] + offsets[m + 1 :]], 1)
            codes[:, m] = (unary[:, m] + 2.0 * _cross(table, m, others)).argmin(dim=1)
    return codes


def encode_normalized(
    z: Tensor,
    codebooks: Tensor,
    beam: int = 4,
    icm_iters: int = 1,
    table: Tensor | None = None,
    chunk: int = 2048,
) -> Tensor:
    """Encode normalised frames.

    Args:
        z: (n, D) float, already normalised.
        codebooks: (N, K, D).
        beam: beam width of the search.
        icm_iters: ICM refinement passes after the beam search.
        table: optional precomputed :func:`cross_table` (saves N*K*N*K*D flops).
        chunk: frames per block (bounds memory to about chunk*N*K*beam floats).
    Returns:
        codes (n, N) int64.
    """
    if table is None:
        table = cross_table(codebooks)
    out = []
    for start in range(0, z.shape[0], chunk):
        u = _unary(z[start : start + chunk], codebooks)
        c = beam_search(u, table, beam)
        if icm_iters > 0:
            c = icm_refine(u, table, c, icm_iters)
        out.append(c)
    if not out:
        return z.new_zeros((0, codebooks.shape[0]), dtype=torch.long)
    return torch.cat(out)


def reconstruct(codes: Tensor, codebooks: Tensor) -> Tensor:
    """Sum of the selected codewords.

    Args:
        codes: (..., N) integer; codebooks: (N, K, D).
    Returns:
        (..., D)
    """
    N, K, D = codebooks.shape
    flat = codes.long() + torch.arange(N, device=codes.device) * K
    return codebooks.reshape(N * K, D)[flat].sum(-2)
