"""Long real-speech recordings for tests and benchmarks: the LibriSpeech and LJSpeech files
of tests/data, resampled to 16 kHz, concatenated and repeated to the length with a small
gain change per repeat (seeded, so every caller gets the same samples)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mvqkd.conventions import SAMPLE_RATE

DATA = Path(__file__).resolve().parent / "data"
SPEECH = ["2412-153948-0000.flac", "LJ002-0020.wav", "LJ002-0035.wav"]


def speech(minutes: float) -> np.ndarray:
    """(minutes * 60 * 16000,) float32 waveform of real speech."""
    import soundfile as sf

    parts = []
    for name in SPEECH:
        x, sr = sf.read(DATA / name, dtype="float32")
        parts.append(_resample(x, sr))
    unit = np.concatenate(parts)
    n = int(minutes * 60 * SAMPLE_RATE)
    reps = -(-n // len(unit))
    gains = 0.8 + 0.4 * np.random.default_rng(0).random(reps)
    return np.concatenate([unit * g for g in gains])[:n].astype(np.float32)


def _resample(x: np.ndarray, sr: int) -> np.ndarray:
    if sr == SAMPLE_RATE:
        return x
    from scipy.signal import resample_poly

    g = np.gcd(SAMPLE_RATE, sr)
    return resample_poly(x, SAMPLE_RATE // g, sr // g).astype(np.float32)
