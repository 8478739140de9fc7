"""Fixtures for the indexes tests: a tiny teacher, a folder of short audio, a quantizer."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.indexes.indexes_helpers import LAYER, write_tone


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
