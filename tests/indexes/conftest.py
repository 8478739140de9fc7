"""Fixtures for the indexes tests: a tiny teacher, a folder of short audio, a quantizer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

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


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory) -> Path:
    from mvqkd.teacher.make import make_teacher

    return make_teacher(tmp_path_factory.mktemp("teacher") / "tiny", "tiny", seed=0)


@pytest.fixture(scope="session")
def audio_dir(tmp_path_factory) -> Path:
    """Eight mono 16 kHz files of 0.3 .. 1.6 s."""
    d = tmp_path_factory.mktemp("audio")
    for i, sec in enumerate([0.61, 1.23, 0.87, 1.6, 0.3, 1.01, 0.45, 1.37]):
        write_tone(d / f"utt{i}.wav", sec, seed=i)
    return d


@pytest.fixture(scope="session")
def cuts_path(audio_dir, tmp_path_factory) -> Path:
    from mvqkd.indexes.make_cuts import make_cuts

    out = tmp_path_factory.mktemp("cuts") / "cuts.jsonl.gz"
    make_cuts(audio_dir, out)
    return out


@pytest.fixture(scope="session")
def quantizer_path(tiny_teacher, cuts_path, tmp_path_factory) -> Path:
    """A 4 x 16 quantizer trained (briefly) on the teacher's layer-2 embeddings."""
    import torch
    from lhotse import CutSet

    from mvqkd.indexes.audio import load_cut_audio
    from mvqkd.quantizer import train_quantizer
    from mvqkd.teacher.model import load_teacher

    teacher = load_teacher(tiny_teacher, device="cpu")
    wavs = [load_cut_audio(c) for c in CutSet.from_file(cuts_path)]
    x = torch.cat(teacher.extract(wavs, LAYER))
    q = train_quantizer(x, 4, 16, iters=1, seed=0, progress=False)
    path = tmp_path_factory.mktemp("quantizer") / "q.pt"
    q.save(path)
    return path
