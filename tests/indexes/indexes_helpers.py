"""Helpers shared by the indexes tests (``tests.indexes.indexes_helpers``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[2]
LAYER = 2


def write_tone(path: Path, seconds: float, sr: int = 16000, channels: int = 1, seed: int = 0) -> Path:
    """A noisy two-tone signal; float WAV when ``path`` ends in .wav."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sr))) / sr
    x = 0.3 * np.sin(2 * np.pi * (180 + 40 * seed) * t) + 0.05 * rng.standard_normal(t.size)
    if channels > 1:
        x = np.stack([x * (c + 1) / channels for c in range(channels)], axis=1)
    sf.write(path, x.astype(np.float32), sr)
    return path
