"""SpecAugment for (B, T, F) feature batches.

Frequency masking and time masking are always available. Time warping moves
frames in time, so it would misalign the teacher's codebook indexes (50 Hz,
stored per frame): it is therefore refused while distilling
(``SpecAugment(time_warp_factor>0, distilling=True)`` raises). The indexes are
*not* masked when the features are: the student is asked to predict the
teacher's indexes for time-masked frames too, from context, as in the
reference recipe.

Randomness comes from the global torch RNG (or an explicit ``generator``) so
that a resumed run, whose RNG state is restored from the checkpoint, draws the
same masks as an uninterrupted one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)


@dataclass
class SpecAugment:
    """Random masks on a padded feature batch.

    Args:
        num_freq_masks: frequency bands masked per utterance.
        freq_mask_max: maximum width of a frequency band (bins).
        num_time_masks: time spans masked per utterance (upper bound; see below).
        time_mask_max: maximum width of a time span (frames).
        max_time_mask_fraction: the masked spans of one utterance cover at most this
            fraction of its frames (each span is shortened accordingly).
        time_warp_factor: maximum warp shift in frames; 0 disables time warping.
            Must be 0 while distilling.
        distilling: True when the batch carries codebook indexes / teacher embeddings.
        p: probability of augmenting each utterance.
    """

    num_freq_masks: int = 2
    freq_mask_max: int = 27
    num_time_masks: int = 10
    time_mask_max: int = 100
    max_time_mask_fraction: float = 0.15
    time_warp_factor: int = 0
    distilling: bool = False
    p: float = 0.9

    def __post_init__(self):
        if self.distilling and self.time_warp_factor > 0:
            raise ValueError(
                "SpecAugment: time warping is disabled while distilling (it would misalign the "
                f"teacher's codebook indexes); got time_warp_factor={self.time_warp_factor}"
            )

    def __call__(
        self,
        features: torch.Tensor,
        feature_lens: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Augment ``features`` (B, T, F) with valid lengths ``feature_lens`` (B,).

        Returns a new tensor (B, T, F); masked values are set to the utterance mean.
        """
        out = features.clone()
        B, T, F = out.shape
        dev = out.device

        def rand(*shape):
            return torch.rand(*shape, generator=generator, device="cpu")

        for b in range(B):
            if rand(1).item() >= self.p:
                continue
            n = int(feature_lens[b])
            if n <= 0:
                continue
            x = out[b, :n]
            if self.time_warp_factor > 0:
                x = _time_warp(x, self.time_warp_factor, rand)
            fill = x.mean()
            for _ in range(self.num_freq_masks):
                w = int(rand(1).item() * (self.freq_mask_max + 1))
                f0 = int(rand(1).item() * max(1, F - w))
                x[:, f0 : f0 + w] = fill
            # Bound the total masked time so short utterances keep most frames.
            budget = int(self.max_time_mask_fraction * n)
            span_max = min(self.time_mask_max, budget // max(1, self.num_time_masks) or budget)
            for _ in range(self.num_time_masks):
                w = int(rand(1).item() * (span_max + 1))
                t0 = int(rand(1).item() * max(1, n - w))
                x[t0 : t0 + w, :] = fill
            out[b, :n] = x.to(dev)
        return out


def _time_warp(x: torch.Tensor, factor: int, rand) -> torch.Tensor:
    """Warp (T, F) in time around a random centre by up to ``factor`` frames (baseline only)."""
    T = x.shape[0]
    if T <= 2 * factor + 2:
        return x
    centre = factor + 1 + int(rand(1).item() * (T - 2 * factor - 2))
    new_centre = centre + int((rand(1).item() * 2 - 1) * factor)
    new_centre = max(1, min(T - 1, new_centre))
    left = torch.nn.functional.interpolate(
        x[:centre].T.unsqueeze(0), size=new_centre, mode="linear", align_corners=True
    )
    right = torch.nn.functional.interpolate(
        x[centre:].T.unsqueeze(0), size=T - new_centre, mode="linear", align_corners=True
    )
    return torch.cat([left, right], dim=2).squeeze(0).T.contiguous()
