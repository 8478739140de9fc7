"""``mvqkd transcribe`` cuts a long file into segments (:mod:`mvqkd.decode.segments`):
checked on signals whose pauses are placed by construction (noise bursts, and real speech
with silences inserted). Every pause gets one cut, LEAD_SECONDS before its end, and nothing else does
unless a stretch is longer than the limit; the segments follow each other without gap or
overlap, cover the file and respect the limit."""

from __future__ import annotations

import numpy as np
import pytest

from mvqkd.decode.segments import LEAD_SECONDS, PAUSE_SECONDS, QUIET_WINDOW_SECONDS, segment_bounds
from tests.speech import DATA, SPEECH, _resample

SR = 16000


def bursts_and_gaps(seconds, gaps, seed=0, quiet=1e-4):
    """Loud noise bursts (std 0.3) of the given lengths (s), separated by gaps of the given
    lengths (s) of faint noise (std ``quiet``): the samples (S,) and each gap's [start, end)."""
    rng = np.random.default_rng(seed)
    parts, where, pos = [], [], 0
    for i, sec in enumerate(seconds):
        parts.append(rng.normal(0, 0.3, int(sec * SR)))
        pos += len(parts[-1])
        if i < len(gaps):
            parts.append(rng.normal(0, quiet, int(gaps[i] * SR)))
            where.append((pos, pos + len(parts[-1])))
            pos += len(parts[-1])
    return np.concatenate(parts).astype(np.float32), where


def check_cover(bounds, total, longest):
    assert bounds[0][0] == 0 and bounds[-1][1] == total
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))  # no gap, no overlap
    assert all(0 < end - start <= longest for start, end in bounds)


def test_every_pause_is_cut_before_its_end_and_short_gaps_are_not():
    rng = np.random.default_rng(1)
    lengths = rng.uniform(1, 6, 40)
    gaps = [0.5 if i % 3 else 0.15 for i in range(39)]  # every third gap is too short to be a pause
    samples, where = bursts_and_gaps(lengths, gaps)
    bounds = segment_bounds(samples, 20)
    check_cover(bounds, len(samples), 20 * SR)
    cuts = [end for _, end in bounds[:-1]]
    pauses = [(a, b) for (a, b), g in zip(where, gaps) if g > PAUSE_SECONDS]
    assert len(cuts) == len(pauses)
    for cut, (a, b) in zip(cuts, pauses):  # to the 10 ms frame
        assert b - (LEAD_SECONDS + 0.01) * SR < cut <= b - LEAD_SECONDS * SR, (cut / SR, a / SR, b / SR)


def test_real_speech_is_cut_in_the_silences_between_recordings():
    import soundfile as sf

    utterances = []
    for name in SPEECH * 3:
        x, sr = sf.read(DATA / name, dtype="float32")
        utterances.append(_resample(x, sr))
    gap = np.zeros(SR, dtype=np.float32)  # 1 s of digital silence between recordings
    samples = np.concatenate([x for u in utterances for x in (u, gap)][:-1])
    bounds = segment_bounds(samples, 30)
    check_cover(bounds, len(samples), 30 * SR)
    cuts = np.array([end for _, end in bounds[:-1]])
    starts = np.cumsum([len(u) + SR for u in utterances])[:-1] - SR  # where each silence starts
    for start in starts:  # one cut after it, before the next recording's speech (its lead-in
        # of background noise is part of the pause)
        assert ((cuts > start) & (cuts < start + 1.5 * SR)).sum() == 1, start / SR
    # every cut, those of pauses inside the recordings too: the pause before it (at least
    # PAUSE_SECONDS) and the LEAD_SECONDS after it far quieter than the speech
    loud = np.sqrt(np.mean(np.square(samples[samples != 0])))
    for c in cuts:
        quiet = samples[c - int((PAUSE_SECONDS - LEAD_SECONDS) * SR) + 400:c + int(LEAD_SECONDS * SR) - 400]
        assert np.sqrt(np.mean(np.square(quiet))) < 0.1 * loud, c / SR


def test_a_stretch_without_pauses_is_cut_at_its_quietest_moments():
    # 69 s of loud noise with 0.12 s dips (too short to be pauses) every 5 s
    samples, dips = bursts_and_gaps([4.8] * 14, [0.12] * 13, quiet=0.01)
    bounds = segment_bounds(samples, 30)
    check_cover(bounds, len(samples), 30 * SR)
    assert len(bounds) == 3
    half = int(QUIET_WINDOW_SECONDS * SR) // 2
    for _, cut in bounds[:-1]:  # the whole quietest window lies in a dip
        assert any(a <= cut - half and cut + half <= b for a, b in dips), cut / SR


def test_no_sliver_is_left_at_the_end():
    # 30.32 s whose quietest moment (a 0.12 s dip) is 0.72 s before the end: a cut there would
    # leave a sliver, so the cut stays in the noise at least 1 s before the end
    samples, dips = bursts_and_gaps([29.6, 0.6], [0.12], quiet=0.01)
    assert len(samples) - SR < dips[0][0] < dips[0][1] < 30 * SR
    bounds = segment_bounds(samples, 30)
    check_cover(bounds, len(samples), 30 * SR)
    assert len(bounds) == 2 and bounds[1][1] - bounds[1][0] >= SR


def test_silence_at_the_ends_and_short_files_are_not_cut():
    samples, gaps = bursts_and_gaps([5] * 6, [0.5] * 5)
    padded = np.concatenate([np.zeros(2 * SR, np.float32), samples, np.zeros(2 * SR, np.float32)])
    cuts = [end for _, end in segment_bounds(padded, 30)[:-1]]  # 36.5 s
    assert [round((c - 2 * SR) / SR, 2) for c in cuts] == [round(b / SR - LEAD_SECONDS, 2) for _, b in gaps]
    assert segment_bounds(samples[: 30 * SR], 30) == [(0, 30 * SR)]  # exactly the limit
    assert segment_bounds(samples, 0) == [(0, len(samples))]
    assert segment_bounds(samples, 50) == [(0, len(samples))]


@pytest.mark.parametrize("value", [2, -1, float("nan")])
def test_unusable_limits_are_refused_by_name(value, tmp_path):
    from mvqkd.decode.config import DecodeConfig

    with pytest.raises(ValueError, match="--max-segment-seconds"):
        segment_bounds(np.zeros(SR * 100, dtype=np.float32), value)
    with pytest.raises(ValueError, match="--max-segment-seconds"):  # decode: before any model loads
        DecodeConfig(cuts=[("a", "a.jsonl.gz")], exp_dir=str(tmp_path), max_segment_seconds=value).check()


@pytest.mark.parametrize("win,hop,chunk", [(400, 160, 1 << 20), (400, 160, 1000), (1600, 160, 777), (400, 160, 1)])
def test_windowed_power_is_the_mean_square_of_every_window(win, hop, chunk):
    from mvqkd.decode.segments import windowed_power

    x = np.random.default_rng(0).normal(0, 0.3, 20_123).astype(np.float32)
    want = [np.mean(np.square(x[i:i + win], dtype=np.float64)) for i in range(0, len(x) - win + 1, hop)]
    np.testing.assert_allclose(windowed_power(x, win, hop, chunk), want, rtol=1e-9)
    assert len(windowed_power(x[:win - 1], win, hop)) == 0 and len(windowed_power(x[:win], win, hop)) == 1


def test_decode_refuses_segment_names_the_set_already_has():
    from lhotse import CutSet
    from lhotse.testing.dummies import dummy_cut
    from lhotse.utils import fastcopy

    from mvqkd.decode.decode import split_long_cuts

    long = fastcopy(dummy_cut(0, duration=70.0, with_data=True), id="talk")
    short = dummy_cut(1, duration=5.0, with_data=True)
    pieces, parts = split_long_cuts(CutSet.from_cuts([long, short]), 30)
    assert list(parts) == ["talk"] and len(parts["talk"]) >= 3
    assert [c.id for c in pieces] == [*parts["talk"], short.id]
    assert sum(c.duration for c in pieces if c.id != short.id) == pytest.approx(70.0, abs=1e-3)
    clash = fastcopy(short, id="talk_seg1")
    with pytest.raises(ValueError, match="talk_seg1: rename them"):
        split_long_cuts(CutSet.from_cuts([long, clash]), 30)
