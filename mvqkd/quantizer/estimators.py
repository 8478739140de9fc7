"""Gradient estimators for training codebooks with gradients.

``nsvq``: noise substitution (Vali & Baeckstroem 2022): the quantized vector is
simulated as ``z + ||z - z_q|| * v / ||v||`` with ``v ~ N(0, I)``, so the
gradient reaches both the input and the codebooks through the norm of the
quantization error, without a commitment-loss weight.

``ste``: straight-through estimator (``z + sg(z_q - z)``); the codebooks then
learn only from the auxiliary codebook loss ``||sg(z) - z_q||^2``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mvqkd.quantizer.search import reconstruct

ESTIMATORS = ("nsvq", "ste")


def quantize_with_estimator(
    z: Tensor, codes: Tensor, codebooks: Tensor, estimator: str = "nsvq", gen=None
) -> tuple[Tensor, Tensor]:
    """Differentiable stand-in for the quantized frames.

    Args:
        z: (B, D) frames (may require grad).
        codes: (B, N) chosen codes (from a non-differentiable search).
        codebooks: (N, K, D) (requires grad to be trained).
        estimator: "nsvq" or "ste".
        gen: optional CPU ``torch.Generator`` for the NSVQ noise.
    Returns:
        (z_tilde (B, D), aux_loss scalar): use ``z_tilde`` in the downstream loss
        and add ``aux_loss`` (zero for NSVQ; the codebook loss for STE).
    """
    z_q = reconstruct(codes, codebooks)
    if estimator == "nsvq":
        v = torch.randn(z.shape, generator=gen, dtype=z.dtype).to(z.device)
        err = (z - z_q).norm(dim=-1, keepdim=True)
        return z + err * v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12), z.new_zeros(())
    if estimator == "ste":
        aux = ((z.detach() - z_q) ** 2).sum(-1).mean()
        return z + (z_q - z).detach(), aux
    raise ValueError(f"unknown estimator {estimator!r}; choose one of {ESTIMATORS}")
