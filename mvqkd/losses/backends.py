"""One-switch transducer loss: our pure-PyTorch loss or an optional compiled one.

``transducer_loss(..., backend=...)``:

- ``"torch"``: :func:`mvqkd.losses.rnnt_loss` (always available).
- ``"fast_rnnt"``: ``fast_rnnt.rnnt_loss`` (https://github.com/danpovey/fast_rnnt).
- ``"k2"``: ``k2.rnnt_loss``.
- ``"auto"`` (default): fast_rnnt if importable, else k2 if importable, else torch.

The optional packages are imported only when asked for (never at module import),
and all backends compute the same full ("regular") RNN-T loss; each is called
with ``reduction="none"`` and reduced here, so ``"mean"`` is always the mean over
the batch as in torchaudio.
"""

from __future__ import annotations

import importlib
import logging

import torch

from mvqkd.losses.rnnt import check_inputs, reduce_losses, rnnt_loss

logger = logging.getLogger(__name__)

BACKENDS = ("torch", "fast_rnnt", "k2", "auto")


def _import_optional(name: str):
    try:
        return importlib.import_module(name)
    except Exception:  # ImportError, or a broken binary build raising OSError
        return None


def available_backends() -> list[str]:
    """Names of the backends usable in this environment, "torch" first."""
    return ["torch"] + [n for n in ("fast_rnnt", "k2") if _import_optional(n) is not None]


def resolve_backend(backend: str = "auto") -> str:
    """Map "auto" to the preferred importable backend; raise if ``backend`` is unusable."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        for name in ("fast_rnnt", "k2"):
            if _import_optional(name) is not None:
                return name
        return "torch"
    if backend != "torch" and _import_optional(backend) is None:
        raise ImportError(f"backend={backend!r} requested but `import {backend}` fails")
    return backend


def transducer_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank: int = 0,
    reduction: str = "mean",
    backend: str = "auto",
) -> torch.Tensor:
    """RNN-T loss via the chosen backend; arguments as :func:`mvqkd.losses.rnnt_loss`.

    logits: (B, T, U+1, V); targets: (B, U); logit_lengths, target_lengths: (B,).
    """
    name = resolve_backend(backend)
    if name == "torch":
        return rnnt_loss(logits, targets, logit_lengths, target_lengths, blank, reduction)
    check_inputs(logits, targets, logit_lengths, target_lengths, blank)
    mod = _import_optional(name)
    B = logits.shape[0]
    boundary = torch.zeros(B, 4, dtype=torch.int64, device=logits.device)
    boundary[:, 2] = target_lengths
    boundary[:, 3] = logit_lengths
    # k2 / fast_rnnt index padded targets: keep them inside the vocabulary.
    symbols = targets.long().clamp(0, logits.shape[-1] - 1)
    losses = mod.rnnt_loss(
        logits=logits, symbols=symbols, termination_symbol=blank, boundary=boundary, reduction="none"
    )
    return reduce_losses(losses, reduction)
