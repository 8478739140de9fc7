"""The pruned transducer loss of the student (``rnnt_loss="pruned"``), as icefall's
pruned_transducer_stateless recipes compute it.

A "simple" loss of a trivial joiner on linear projections of the encoder and predictor
outputs (``rnnt_loss_smoothed`` with ``lm_scale`` / ``am_scale`` smoothing) gives the
pruning ranges (``prune_range`` symbols per frame); the full joiner then runs only inside
them (``rnnt_loss_pruned``). Both losses are returned, each the mean over utterances of
``-log P`` (the normalisation of :func:`mvqkd.losses.rnnt_loss` with reduction "mean");
the model weights them with :func:`warmup_scales`.

``backend="torch"`` uses :mod:`mvqkd.losses.pruned`; ``backend="k2"`` the same functions
from k2 (same names and signatures), when it is importable.
"""

from __future__ import annotations

import importlib

import torch
from torch import nn


def loss_module(backend: str):
    """The module providing k2's pruned-loss functions: mvqkd.losses or k2."""
    if backend == "torch":
        return importlib.import_module("mvqkd.losses.pruned")
    try:
        return importlib.import_module("k2")
    except Exception as e:  # ImportError, or a broken binary build
        raise ImportError("rnnt_backend='k2' needs the k2 package, which is not importable here "
                          f"({type(e).__name__}); use rnnt_backend='torch' (mvqkd's own pruned loss)") from e


def warmup_scales(step: int | None, warmup_steps: int, simple_loss_scale: float) -> tuple[float, float]:
    """(simple, pruned) loss weights at optimiser step ``step`` (icefall's Zipformer recipe):
    the simple loss starts at 1 and the pruned one at 0.1, reaching ``simple_loss_scale`` and
    1 linearly over ``warmup_steps``. ``step=None`` (evaluation) gives the final weights."""
    if step is None or warmup_steps <= 0 or step >= warmup_steps:
        return simple_loss_scale, 1.0
    frac = step / warmup_steps
    return 1.0 - frac * (1.0 - simple_loss_scale), 0.1 + 0.9 * frac


class PrunedRnntLoss(nn.Module):
    """Owns the two "simple" projections (E -> V, Dd -> V) of the pruned loss."""

    def __init__(self, encoder_dim: int, decoder_dim: int, vocab_size: int, prune_range: int = 5,
                 lm_scale: float = 0.25, am_scale: float = 0.0, backend: str = "torch"):
        super().__init__()
        self.fn = loss_module(backend)
        self.simple_am_proj = nn.Linear(encoder_dim, vocab_size)
        self.simple_lm_proj = nn.Linear(decoder_dim, vocab_size)
        self.prune_range, self.lm_scale, self.am_scale = prune_range, lm_scale, am_scale

    def forward(self, joiner, decoder, encoder_out, encoder_lens, targets, target_lens,
                blank_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        """encoder_out (B, T, E), targets (B, U) long -> (simple, pruned), scalars."""
        b = encoder_out.size(0)
        boundary = torch.zeros((b, 4), dtype=torch.int64, device=encoder_out.device)
        boundary[:, 2] = target_lens
        boundary[:, 3] = encoder_lens
        sos_y = nn.functional.pad(targets, (1, 0), value=blank_id)
        dec = decoder(sos_y, need_pad=True)  # (B, U + 1, Dd)
        simple, (px_grad, py_grad) = self.fn.rnnt_loss_smoothed(
            lm=self.simple_lm_proj(dec).float(), am=self.simple_am_proj(encoder_out).float(),
            symbols=targets, termination_symbol=blank_id, lm_only_scale=self.lm_scale,
            am_only_scale=self.am_scale, boundary=boundary, reduction="sum", return_grad=True)
        ranges = self.fn.get_rnnt_prune_ranges(px_grad=px_grad, py_grad=py_grad, boundary=boundary,
                                               s_range=self.prune_range)
        am_pruned, lm_pruned = self.fn.do_rnnt_pruning(
            am=joiner.encoder_proj(encoder_out), lm=joiner.decoder_proj(dec), ranges=ranges)
        logits = joiner(am_pruned, lm_pruned, project_input=False)  # (B, T, prune_range, V)
        pruned = self.fn.rnnt_loss_pruned(logits=logits.float(), symbols=targets, ranges=ranges,
                                          termination_symbol=blank_id, boundary=boundary,
                                          reduction="sum")
        return simple / b, pruned / b
