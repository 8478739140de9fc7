"""Quality metrics of a quantizer: relative error, codeword usage, entropy.

Shapes: n = frames, D = dim, N = codebooks, K = codebook size.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def relative_error(x: Tensor, x_hat: Tensor) -> float:
    """``sum ||x - x_hat||^2 / sum ||x - mean(x)||^2`` over frames (n, D)."""
    x = x.double()
    num = ((x - x_hat.double()) ** 2).sum()
    den = ((x - x.mean(0, keepdim=True)) ** 2).sum()
    return float(num / den.clamp_min(1e-300))


def usage_counts(codes: Tensor, codebook_size: int) -> Tensor:
    """(n, N) codes -> (N, K) int64 counts of each codeword."""
    codes = codes.long().reshape(-1, codes.shape[-1])
    N = codes.shape[1]
    flat = codes + torch.arange(N, device=codes.device) * codebook_size
    return torch.bincount(flat.flatten(), minlength=N * codebook_size).view(N, codebook_size)


def usage_stats(counts: Tensor) -> dict:
    """Per-codebook entropy (bits), perplexity and dead (never used) codewords.

    Args:
        counts: (N, K) usage counts.
    Returns:
        dict with lists ``entropy_bits``, ``perplexity``, ``dead`` (per codebook) and
        totals ``dead_total``, ``mean_entropy_bits``.
    """
    p = counts.double() / counts.sum(1, keepdim=True).clamp_min(1)
    ent = -(p * torch.where(p > 0, p.log2(), torch.zeros_like(p))).sum(1)
    dead = (counts == 0).sum(1)
    return {
        "entropy_bits": [round(float(e), 4) for e in ent],
        "perplexity": [round(float(2.0**e), 2) for e in ent],
        "dead": [int(d) for d in dead],
        "dead_total": int(dead.sum()),
        "mean_entropy_bits": float(ent.mean()),
    }


def report(quantizer, x: Tensor) -> dict:
    """Full report of ``quantizer`` on frames ``x`` (n, D)."""
    x = torch.as_tensor(x, dtype=torch.float32)
    codes = quantizer.encode(x)
    x_hat = quantizer.decode(codes)
    stats = usage_stats(usage_counts(codes, quantizer.codebook_size))
    return {
        "quantizer_id": quantizer.id,
        "frames": int(x.shape[0]),
        "dim": quantizer.dim,
        "num_codebooks": quantizer.num_codebooks,
        "codebook_size": quantizer.codebook_size,
        "bits_per_frame": quantizer.num_codebooks * math.log2(quantizer.codebook_size),
        "relative_error": relative_error(x, x_hat),
        **stats,
    }


def plot_training(quantizer, out_png, counts: Tensor | None = None) -> None:
    """PNG with the held-out training curve and the sorted codeword usage per codebook.

    Args:
        quantizer: a quantizer whose ``history`` holds ``curve`` (and ``usage``).
        out_png: output path.
        counts: (N, K) usage to draw instead of the stored training usage.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = quantizer.history.get("curve", [])
    if counts is None and "usage" in quantizer.history:
        counts = torch.tensor(quantizer.history["usage"])
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    if curve:
        a.plot([c["iter"] for c in curve], [c["heldout_rel_err"] for c in curve], marker="o")
    else:
        a.text(0.5, 0.5, "no training curve stored", ha="center", transform=a.transAxes)
    a.set_xlabel("iteration")
    a.set_ylabel("held-out relative error")
    a.set_title(f"training curve ({quantizer.id})")
    if counts is not None:
        for m, row in enumerate(counts):
            b.plot(torch.sort(row.double(), descending=True).values.numpy(), label=f"cb {m}", lw=1)
        b.set_yscale("symlog")
        if counts.shape[0] <= 8:
            b.legend(fontsize=7)
    b.set_xlabel("codeword rank")
    b.set_ylabel("uses")
    b.set_title("codeword usage (sorted, per codebook)")
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


def codeword_neighbours(codebooks: Tensor, temperature: float) -> Tensor:
    """Soft "runner-up" distributions over each codebook's other codewords.

    Swapping codeword ``i`` of codebook m for ``k`` moves a reconstruction by
    ``d = C[m, k] - C[m, i]``, whatever the other codebooks chose. Row ``(m, i)`` weighs the
    other codewords by how little that swap costs::

        q[m, i, k] = exp(-||d||^2 / (T s_m)) / sum_{k' != i} exp(-||C[m, k'] - C[m, i]||^2 / (T s_m))
        q[m, i, i] = 0

    with ``s_m`` the mean squared distance between two distinct codewords of codebook m, so
    the temperature ``T`` is dimensionless: ``T -> inf`` spreads the mass evenly over the
    other K - 1 codewords, ``T -> 0`` puts it all on the nearest one (the runner-up when the
    residual is small).

    Args:
        codebooks: (N, K, D) codewords (in the quantizer's normalised space).
        temperature: T > 0.
    Returns:
        (N, K, K) float32, rows sum to 1, zero diagonal.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    c = codebooks.double()
    N, K, _ = c.shape
    if K < 2:
        raise ValueError("codeword neighbours need at least 2 codewords per codebook")
    sq = (c * c).sum(-1)
    dist = (sq[:, :, None] + sq[:, None, :] - 2.0 * c @ c.transpose(1, 2)).clamp_min(0.0)  # (N, K, K)
    scale = (dist.sum((1, 2)) / (K * (K - 1))).clamp_min(1e-30)  # (N,) mean over distinct pairs
    logits = -dist / (temperature * scale[:, None, None])
    eye = torch.eye(K, dtype=torch.bool, device=c.device)
    logits = logits.masked_fill(eye, float("-inf"))
    return logits.softmax(-1).float()
