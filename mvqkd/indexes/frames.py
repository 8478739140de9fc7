"""The frame-count rule shared by extraction, joining and validation.

A cut of ``duration`` seconds carries ``T = num_frames(duration)`` teacher frames:
``round(duration / 0.02)`` computed on samples with halves rounded up (lhotse's
``compute_num_frames`` at 16 kHz). The wav2vec2-style front-end yields
``floor((S - 400) / 320) + 1`` frames for ``S`` samples, usually one fewer than T.

Pad/trim rule (:func:`fit_frames`): a teacher output shorter than T is padded at the
end by repeating its last frame; a longer one is trimmed at the end. A difference of
more than :data:`MAX_FRAME_MISMATCH` frames means the audio does not match the cut's
duration and is an error, never silently fixed.
"""

from __future__ import annotations

import numpy as np

from mvqkd.teacher.model import FRAME_SHIFT, SAMPLING_RATE

MAX_FRAME_MISMATCH = 2


def num_frames(duration: float) -> int:
    """Frames at 50 Hz for a cut of ``duration`` seconds."""
    from lhotse.utils import compute_num_frames

    return compute_num_frames(duration, FRAME_SHIFT, SAMPLING_RATE)


def fit_frames(x: np.ndarray, target: int) -> np.ndarray:
    """Pad (repeat the last frame) or trim ``x (T', ...)`` at the end to ``target`` frames.

    Raises:
        ValueError: when ``|T' - target| > MAX_FRAME_MISMATCH`` or ``x`` is empty.
    """
    have = x.shape[0]
    if have == 0 or abs(have - target) > MAX_FRAME_MISMATCH:
        raise ValueError(
            f"teacher gave {have} frames but the cut's duration needs {target} "
            f"(more than {MAX_FRAME_MISMATCH} apart)"
        )
    if have >= target:
        return x[:target]
    pad = np.repeat(x[-1:], target - have, axis=0)
    return np.concatenate([x, pad], axis=0)
