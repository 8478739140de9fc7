"""Loading a cut's audio for the teacher, with the bad-input policy.

- unreadable / corrupt audio: :class:`CutError` (the cut goes to the failure report);
- a sampling rate other than 16 kHz: resampled with lhotse (``cut.resample``) and logged;
- several channels (a ``MultiCut`` or a cut selecting several channels): the channels
  are averaged into one (downmix) and logged; a ``MonoCut`` of a multi-channel
  recording uses its own channel only;
- fewer than 400 samples (the teacher's receptive field), including empty audio:
  :class:`CutError`;
- NaN / Inf samples: :class:`CutError`.
"""

from __future__ import annotations

import logging

import numpy as np

from mvqkd.conventions import SAMPLE_RATE, TEACHER_MIN_SAMPLES

logger = logging.getLogger(__name__)


class CutError(Exception):
    """A per-cut failure; the message goes to the failure report."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def load_cut_audio(cut) -> np.ndarray:
    """Mono 16 kHz float32 samples ``(S,)`` of a lhotse cut (see the module policy)."""
    if cut.sampling_rate != SAMPLE_RATE:
        logger.info("cut %s: resampling %d Hz -> %d Hz", cut.id, cut.sampling_rate, SAMPLE_RATE)
        cut = cut.resample(SAMPLE_RATE)
    try:
        audio = cut.load_audio()
    except Exception as e:  # any decoder error: corrupt file, missing file, bad header
        raise CutError("unreadable_audio", f"{type(e).__name__}: {str(e).splitlines()[0][:300]}")
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2 and audio.shape[0] > 1:
        logger.info("cut %s: downmixing %d channels to mono (mean)", cut.id, audio.shape[0])
        audio = audio.mean(axis=0)
    audio = audio.reshape(-1)
    if audio.size < TEACHER_MIN_SAMPLES:
        raise CutError(
            "too_short",
            f"{audio.size} samples at {SAMPLE_RATE} Hz, fewer than the teacher's receptive field ({TEACHER_MIN_SAMPLES})",
        )
    if not np.isfinite(audio).all():
        raise CutError("nonfinite_audio", "audio contains NaN or Inf samples")
    return audio
