"""k2's pruned RNN-T loss (``rnnt_backend="k2"``), used only when ``k2`` is importable.

As in icefall's pruned_transducer_stateless recipes: a "simple" (trivial joiner) loss on
linear projections of the encoder and predictor outputs gives the pruning ranges
(``prune_range`` symbols per frame); the full joiner runs only inside them.
``rnnt = simple_loss_scale * simple + pruned``, both divided by the batch size (the same
per-utterance normalisation as :func:`mvqkd.losses.rnnt_loss` with reduction "mean").

Not exercised by the test-suite where k2 is not installed (no k2 wheel fits current torch).
"""

from __future__ import annotations

import torch
from torch import nn

try:  # guarded: k2 is optional
    import k2
except ImportError:  # pragma: no cover - depends on the environment
    k2 = None


class PrunedRnntLoss(nn.Module):
    """Owns the two "simple" projections (E -> V, Dd -> V) of the pruned loss."""

    def __init__(self, encoder_dim: int, decoder_dim: int, vocab_size: int,
                 prune_range: int = 5, lm_scale: float = 0.25, am_scale: float = 0.0,
                 simple_loss_scale: float = 0.5):
        super().__init__()
        if k2 is None:
            raise ImportError("rnnt_backend='k2' needs the k2 package, which is not "
                              "importable here; use rnnt_backend='torch'")
        self.simple_am_proj = nn.Linear(encoder_dim, vocab_size)
        self.simple_lm_proj = nn.Linear(decoder_dim, vocab_size)
        self.prune_range, self.lm_scale, self.am_scale = prune_range, lm_scale, am_scale
        self.simple_loss_scale = simple_loss_scale

    def forward(self, joiner, decoder, encoder_out, encoder_lens, targets, target_lens,
                blank_id: int) -> torch.Tensor:
        """encoder_out (B, T, E), targets (B, U) long -> scalar loss."""
        b = encoder_out.size(0)
        boundary = torch.zeros((b, 4), dtype=torch.int64, device=encoder_out.device)
        boundary[:, 2] = target_lens
        boundary[:, 3] = encoder_lens
        sos_y = nn.functional.pad(targets, (1, 0), value=blank_id)
        dec = decoder(sos_y, need_pad=True)  # (B, U + 1, Dd)
        simple, (px_grad, py_grad) = k2.rnnt_loss_smoothed(
            lm=self.simple_lm_proj(dec).float(), am=self.simple_am_proj(encoder_out).float(),
            symbols=targets, termination_symbol=blank_id, lm_only_scale=self.lm_scale,
            am_only_scale=self.am_scale, boundary=boundary, reduction="sum", return_grad=True)
        ranges = k2.get_rnnt_prune_ranges(px_grad=px_grad, py_grad=py_grad, boundary=boundary,
                                          s_range=self.prune_range)
        am_pruned, lm_pruned = k2.do_rnnt_pruning(
            am=joiner.encoder_proj(encoder_out), lm=joiner.decoder_proj(dec), ranges=ranges)
        logits = joiner(am_pruned, lm_pruned, project_input=False)  # (B, T, prune_range, V)
        pruned = k2.rnnt_loss_pruned(logits=logits.float(), symbols=targets, ranges=ranges,
                                     termination_symbol=blank_id, boundary=boundary,
                                     reduction="sum")
        return (self.simple_loss_scale * simple + pruned) / b
