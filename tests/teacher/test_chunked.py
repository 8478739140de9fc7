"""Bounded-memory extraction of long recordings: windows aligned on the teacher's frames,
centres kept, seams discarded."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mvqkd.teacher.make import make_teacher
from mvqkd.teacher.model import load_teacher


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return load_teacher(make_teacher(tmp_path_factory.mktemp("t") / "tiny", "tiny", seed=0), device="cpu")


def long_audio(seconds: float, seed: int = 0) -> np.ndarray:
    """Speech-like noise: bursts of harmonic tones at changing pitch."""
    rng = np.random.default_rng(seed)
    out = []
    while sum(map(len, out)) < seconds * 16000:
        n = int(rng.uniform(0.2, 1.0) * 16000)
        t = np.arange(n) / 16000
        f0 = rng.uniform(90, 260)
        x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6)) * rng.uniform(0.05, 0.3)
        out.append((x + 0.01 * rng.standard_normal(n)).astype(np.float32))
    return np.concatenate(out)[: int(seconds * 16000)]


def test_short_utterances_run_whole(teacher):
    wav = long_audio(3.0)
    torch.testing.assert_close(teacher.extract_chunked(wav, 3, 500, 50), teacher.extract([wav], 3)[0])


def test_window_alignment_is_exact_where_context_is_local(teacher):
    """Layer 0 (CNN front-end + positional convolution, a local receptive field): the stitched
    windows equal the whole-file frames, so every window starts on the right sample."""
    wav = long_audio(45.0, seed=1)
    whole = teacher.extract([wav], 0)[0]
    chunked = teacher.extract_chunked(wav, 0, 500, 100)  # 10 s windows, 2 s of context each side
    assert chunked.shape == whole.shape
    torch.testing.assert_close(chunked, whole, rtol=1e-4, atol=1e-4)


def test_transformer_layers_stay_close_on_a_three_minute_recording(teacher):
    """Through global self-attention a window cannot see the rest of the file, so the frames
    differ a little from a whole-file pass (by a relative squared error far below the
    quantizers' ~0.15); docs/benchmarks.md measures what that does to the codes."""
    wav = long_audio(180.0, seed=2)
    whole = teacher.extract([wav], 3)[0]
    chunked = teacher.extract_chunked(wav, 3, 1500, 250)  # 30 s windows, 5 s context
    assert chunked.shape == whole.shape
    rel = float(((chunked - whole) ** 2).sum() / ((whole - whole.mean(0)) ** 2).sum())
    assert rel < 2e-3, rel


def test_extract_many_chunks_only_the_long_ones(teacher):
    wavs = [long_audio(2.0, 3), long_audio(13.0, 4), long_audio(1.0, 5)]
    teacher.set_chunking(10.0, 2.0)
    try:
        got = dict(teacher.extract_many(wavs, 2, max_samples=40 * 16000))
    finally:
        teacher.set_chunking(None)
    torch.testing.assert_close(got[1], teacher.extract_chunked(wavs[1], 2, 500, 100))
    for i in (0, 2):
        torch.testing.assert_close(got[i], teacher.extract([wavs[i]], 2)[0], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="must exceed twice"):
        teacher.set_chunking(4.0, 2.0)


def test_ten_minute_recording_codes_chunked_vs_whole(teacher):
    """Issue 16's agreement check at its size: a 10-minute recording, the default 60 s windows
    with 5 s of context, quantizers trained on the whole-file embeddings of its first minute.
    Product codes agree on >= 99% of entries (not of frames, which issue 16 counts: 93%, and
    1e-3-std noise alone changes 1.5% of frames; docs/benchmarks.md). Additive codes are a jagged function of the
    embedding (beam search over jointly trained codebooks): noise of 1e-3 of a standard
    deviation alone flips ~1% of their entries, so for them the check is that the chunked
    codes rebuild the whole-file embedding as well as the whole-file codes do (within 1%).
    tools/bench_long_audio.py measures the same on the same recording, with peak memory."""
    from mvqkd.quantizer.train import train_quantizer
    from tests.speech import speech

    wav = speech(10.0)
    whole = teacher.extract([wav], 2)[0]
    chunked = teacher.extract_chunked(wav, 2, 3000, 250)
    assert chunked.shape == whole.shape == (29999, 64)
    den = float(((whole - whole.mean(0)) ** 2).sum())
    assert float(((chunked - whole) ** 2).sum()) / den < 1e-4
    first = whole[:3000].numpy()
    product = train_quantizer(first, num_codebooks=8, iters=3, method="product", seed=0)
    assert float((product.encode(chunked) == product.encode(whole)).float().mean()) >= 0.99
    additive = train_quantizer(first, num_codebooks=8, iters=3, method="lsq", seed=0)
    err = {name: float(((additive.decode(additive.encode(x)) - whole) ** 2).sum()) / den
           for name, x in (("whole", whole), ("chunked", chunked))}
    assert err["chunked"] <= 1.01 * err["whole"], err
    noisy = whole + 1e-3 * whole.std(0) * torch.randn(whole.shape, generator=torch.Generator().manual_seed(0))
    flipped = float((additive.encode(noisy) != additive.encode(whole)).float().mean())
    assert flipped > 0.002, flipped  # the reason additive codes are not compared entry by entry
