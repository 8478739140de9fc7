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
