"""The steps of quantizer training: residual k-means initialisation, the least-squares
codebook update, and re-seeding of rarely used codewords (robust-VQ remedies).

Shapes: n = frames, D = dim, N = codebooks, K = codebook size.
"""

from __future__ import annotations

import time

import torch
from torch import Tensor

from mvqkd.quantizer.kmeans import assign, kmeans, sample_proportional, segment_sum
from mvqkd.quantizer.metrics import usage_counts
from mvqkd.quantizer.search import reconstruct

MAX_JOINT_LSQ = 4096  # N*K up to which the joint normal equations are solved directly


def residual_kmeans_init(
    z: Tensor, num_codebooks: int, codebook_size: int, iters: int, gen: torch.Generator,
    deadline: float | None = None,
) -> Tensor:
    """Residual k-means (k-means++ seeded) initialisation.

    Args:
        z: (n, D) normalised frames, n >= codebook_size.
        deadline: ``time.time()`` after which the remaining codebooks get k-means++
            seeds and one Lloyd iteration, so a time budget is respected.
    Returns:
        (N, K, D) codebooks.
    """
    residual = z.clone()
    books = []
    for _ in range(num_codebooks):
        late = deadline is not None and time.time() > deadline
        c = kmeans(residual, codebook_size, min(1, iters) if late else iters, gen)
        idx, _ = assign(residual, c)
        residual = residual - c[idx]
        books.append(c)
    return torch.stack(books)


def lsq_update(z: Tensor, codes: Tensor, codebooks: Tensor, ridge: float = 1e-2) -> Tensor:
    """Least-squares codebooks for fixed codes.

    Minimises ``||Z - B C||^2 + ridge ||C - C_old||^2`` over all codewords, B the
    (n, N*K) one-hot code matrix. Solved jointly (Cholesky of the N*K x N*K normal
    matrix, built from code co-occurrence counts) when N*K <= MAX_JOINT_LSQ, else by
    one block Gauss-Seidel sweep (each codebook exact given the others).

    Args:
        z: (n, D); codes: (n, N) int64; codebooks: (N, K, D) current values.
    Returns:
        (N, K, D) updated codebooks. Unused codewords keep their old value.
    """
    n, D = z.shape
    N, K, _ = codebooks.shape
    NK = N * K
    flat = codes + torch.arange(N, device=codes.device) * K  # (n, N)
    if NK <= MAX_JOINT_LSQ:
        pairs = (flat.unsqueeze(2) * NK + flat.unsqueeze(1)).flatten()
        gram = torch.bincount(pairs, minlength=NK * NK).view(NK, NK).double()
        gram.diagonal().add_(ridge)
        rhs = ridge * codebooks.reshape(NK, D).double()
        zd = z.double()
        for m in range(N):
            rhs += segment_sum(flat[:, m], zd, NK)
        chol = torch.linalg.cholesky(gram)
        return torch.cholesky_solve(rhs, chol).float().view(N, K, D)
    books = codebooks.clone()
    residual = z - reconstruct(codes, books)
    for m in range(N):
        residual += books[m][codes[:, m]]
        counts = torch.bincount(codes[:, m], minlength=K).to(z.dtype)
        sums = segment_sum(codes[:, m], residual, K)
        books[m] = (sums + ridge * books[m]) / (counts + ridge).unsqueeze(1)
        residual -= books[m][codes[:, m]]
    return books


def reseed_dead(
    z: Tensor, codes: Tensor, codebooks: Tensor, min_count: int, gen: torch.Generator,
    alpha: float = 0.3,
) -> tuple[Tensor, int]:
    """Re-seed rarely used codewords from the buffer ``z`` of recent frames.

    A codeword of codebook m used fewer than ``min_count`` times is moved next to a
    busy one: a frame is drawn with probability proportional to its squared error
    (k-means++ style) and the codeword becomes ``C[m, i_m] + alpha * (z - z_hat)``,
    i.e. it splits the cluster of that frame towards it. (Copying the frame's full
    residual, ``alpha = 1``, tends to make singletons in high dimensions.)

    Args:
        z: (n, D) buffer; codes: (n, N) its codes under ``codebooks`` (N, K, D).
    Returns:
        (new codebooks, number of codewords re-seeded).
    """
    N, K, _ = codebooks.shape
    counts = usage_counts(codes, K)
    books = codebooks.clone()
    z_hat = reconstruct(codes, books)
    err = ((z - z_hat) ** 2).sum(1)
    total = 0
    for m in range(N):
        dead = (counts[m] < min_count).nonzero().flatten()
        if len(dead) == 0:
            continue
        num = min(len(dead), z.shape[0])
        rows = sample_proportional(err, num, gen)
        donor = books[m][codes[rows, m]]
        books[m, dead[:num]] = donor + alpha * (z[rows] - z_hat[rows])
        err[rows] = 0.0  # do not hand the same frame to two codebooks
        total += num
    return books, total
