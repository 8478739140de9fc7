"""Where ``mvqkd transcribe`` cuts a long file, and ``mvqkd decode`` a long cut (numpy only).

A recording longer than ``--max-segment-seconds`` is cut at every pause, shortly before its
end, as a VAD would (sherpa-onnx users cut long files with one before its offline
recogniser), so that each segment is utterance-like, as in training; a stretch between
pauses that is still longer than the limit is cut at its quietest moments. A recording up to
the limit is recognised whole.

Loudness is measured on 25 ms frames every 10 ms (the fbank's): a frame is *quiet* when its
mean square, in decibels, lies in the lower third of the range from the file's quiet level
(its 5th-percentile frame) to its loud level (95th percentile), the range at most
``LEVEL_RANGE_DB`` wide (a file with digital silence is measured against a floor 80 dB
below its loud level), and at least ``MIN_DEPTH_DB`` below the loud level. A *pause* is a
run of at least ``PAUSE_SECONDS`` of quiet frames with sound on both sides.
"""

from __future__ import annotations

import math

import numpy as np

from mvqkd.conventions import FBANK_FRAME_SHIFT, SAMPLE_RATE
from mvqkd.decode.config import MAX_SEGMENT_SECONDS

#: a pause: at least this long; and where in it the cut goes: this long before its end (the
#: next segment starts with this much of the pause, the previous one keeps the rest). Chosen on
#: dev-clean (docs/benchmarks.md, "Long files in mvqkd transcribe"): a cut in the middle of the
#: pause, or a pause of 0.3 s, cost the demo's student 2-3 points of WER against its utterances
#: recognised one by one; these settings cost nothing
PAUSE_SECONDS = 0.2
LEAD_SECONDS = 0.05
#: the widest range of frame levels the quiet threshold is placed in (a third of the way up)
LEVEL_RANGE_DB = 80.0
#: and never less than this far below the loud level (speech without pauses has no quiet frames)
MIN_DEPTH_DB = 20.0
#: frames of the loudness measure (seconds): the fbank's 25 ms window every 10 ms
FRAME_SECONDS = 0.025
#: a stretch with no pause is cut at the centre of its quietest window of this length
QUIET_WINDOW_SECONDS = 0.1


def check_max_segment_seconds(value: float) -> float:
    """``value`` if it is a usable ``--max-segment-seconds`` (0, or at least 3), else ValueError."""
    if value != 0 and not value >= 3:
        raise ValueError(f"--max-segment-seconds must be 0 (no cutting) or at least 3, got {value}")
    return value


def windowed_power(samples: np.ndarray, win: int, hop: int, chunk: int = 1 << 20) -> np.ndarray:
    """Mean square of ``samples[i * hop : i * hop + win]`` for every whole window i: (F,).
    Sums of squares in float64 over blocks of gcd(win, hop) samples, ``chunk`` samples at a
    time: a few MB of memory whatever the length (an hour is 57.6 M samples)."""
    if len(samples) < win:
        return np.zeros(0)
    b = math.gcd(win, hop)
    n, step = len(samples) // b * b, max(chunk // b, 1) * b
    blocks = np.concatenate([np.square(samples[i:min(i + step, n)], dtype=np.float64).reshape(-1, b).sum(1)
                             for i in range(0, n, step)])
    cum = np.concatenate([[0.0], np.cumsum(blocks)])
    starts = np.arange(1 + (len(samples) - win) // hop) * (hop // b)
    return (cum[starts + win // b] - cum[starts]) / win


def pause_cuts(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> list[int]:
    """Sample positions (ascending) ``LEAD_SECONDS`` before the end of each of ``samples``'
    pauses (module docstring)."""
    win, hop = int(FRAME_SECONDS * sample_rate), int(FBANK_FRAME_SHIFT * sample_rate)
    power = windowed_power(samples, win, hop)
    if len(power) == 0:
        return []
    db = 10 * np.log10(power + 1e-30)
    loud = np.percentile(db, 95)
    quiet_level = max(np.percentile(db, 5), loud - LEVEL_RANGE_DB)
    threshold = min(quiet_level + (loud - quiet_level) / 3, loud - MIN_DEPTH_DB)
    quiet = np.concatenate([[False], db < threshold, [False]])
    edges = np.flatnonzero(np.diff(quiet.astype(np.int8)))
    runs = edges.reshape(-1, 2)  # [first, last + 1) frame of every quiet run
    min_frames = round(PAUSE_SECONDS / FBANK_FRAME_SHIFT)
    lead = int(LEAD_SECONDS * sample_rate)
    return [int((last - 1) * hop + win - lead) for first, last in runs
            if last - first >= min_frames and first > 0 and last < len(power)]


def split_long(samples: np.ndarray, start: int, end: int, longest: int, sample_rate: int = SAMPLE_RATE):
    """``[(start, end), ...]`` covering ``samples[start:end]`` in pieces of at most ``longest``
    samples: each cut in the last third of the piece it ends, at the centre of its quietest
    ``QUIET_WINDOW_SECONDS`` window (the first of equals), at least ``min(1 s, longest / 6)``
    before ``end``."""
    win, hop = int(QUIET_WINDOW_SECONDS * sample_rate), int(FBANK_FRAME_SHIFT * sample_rate)
    tail = min(sample_rate, longest // 6)
    bounds = []
    while end - start > longest:
        lo, hi = start + longest - longest // 3, min(start + longest, end - tail)
        cut = lo + int(np.argmin(windowed_power(samples[lo:hi], win, hop))) * hop + win // 2
        bounds.append((start, cut))
        start = cut
    return bounds + [(start, end)]


def segment_bounds(samples: np.ndarray, max_seconds: float = MAX_SEGMENT_SECONDS,
                   sample_rate: int = SAMPLE_RATE) -> list[tuple[int, int]]:
    """``[(start, end), ...]``: sample ranges that cover ``samples`` (S,) in order. Up to
    ``max_seconds`` (or with ``max_seconds`` 0) one range, the whole file; a longer file is
    cut at every pause (:func:`pause_cuts`), and any stretch still longer than ``max_seconds`` by
    :func:`split_long`."""
    total = len(samples)
    if check_max_segment_seconds(max_seconds) == 0 or total <= max_seconds * sample_rate:
        return [(0, total)]
    cuts = pause_cuts(samples, sample_rate)
    longest = int(max_seconds * sample_rate)
    return [piece for start, end in zip([0, *cuts], [*cuts, total])
            for piece in split_long(samples, start, end, longest, sample_rate)]
