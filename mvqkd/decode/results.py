"""Decoding result files, icefall-style, and the WER summary they feed.

Per test set ``<set>`` and decoding setting ``<key>`` (e.g. ``greedy_search``):

- ``recogs-<set>.txt``: for each utterance two lines, ``<cut_id>:\\tref=[...]`` and
  ``<cut_id>:\\thyp=[...]`` (Python list of words), as icefall's ``store_transcripts``.
- ``errs-<set>.txt``: as icefall's ``write_error_stats``: ``%WER = x.xx``, the
  ins / del / sub split, per-utterance alignments (``word`` or ``(ref->hyp)``, with
  successive errors merged), the most frequent substitutions, deletions and
  insertions, and per-word statistics.
- ``wer-summary-<set>.txt``: a ``settings\\tWER`` table; :func:`read_wer` reads it back.
"""

from __future__ import annotations

import logging
from pathlib import Path
from collections import Counter
from typing import Sequence

from mvqkd.data.wer import EPS, Result, align, compute_error_stats

logger = logging.getLogger(__name__)


def merged_alignment(ref: Sequence[str], hyp: Sequence[str]) -> str:
    """One line: correct words as is, each run of successive errors as ``(ref words->hyp words)``.

    An empty side of a run is written ``*``, e.g. ``(*->UH)`` for an insertion.
    """
    parts: list[str] = []
    run_r: list[str] = []
    run_h: list[str] = []

    def flush():
        if run_r or run_h:
            parts.append(f"({' '.join(run_r) or EPS}->{' '.join(run_h) or EPS})")
            run_r.clear()
            run_h.clear()

    for r, h in align(ref, hyp):
        if r == h:
            flush()
            parts.append(r)
        else:
            if r != EPS:
                run_r.append(r)
            if h != EPS:
                run_h.append(h)
    flush()
    return " ".join(parts)


def _by_count(counter: Counter) -> list:
    """(count, key) pairs, most frequent first (ties: reverse key order, as icefall)."""
    return sorted(((c, k) for k, c in counter.items()), reverse=True)


def write_error_stats(path: str | Path, test_set_name: str, results: Sequence[Result]) -> float:
    """Write the ``errs-<set>.txt`` report; return the WER in percent (2 decimals)."""
    st = compute_error_stats(results)
    wer = round(st.wer, 2)
    logger.info(
        "[%s] %%WER %.2f%% [%d / %d, %d ins, %d del, %d sub ]",
        test_set_name, st.wer, st.num_errors, st.ref_words, st.num_ins, st.num_del, st.num_sub,
    )
    lines = [
        f"%WER = {st.wer:.2f}",
        f"Errors: {st.num_ins} insertions, {st.num_del} deletions, {st.num_sub} substitutions, "
        f"over {st.ref_words} reference words ({st.corr} correct)",
        "Search below for sections starting with PER-UTT DETAILS:, SUBSTITUTIONS:, DELETIONS:, "
        "INSERTIONS:, PER-WORD STATS:",
        "",
        "PER-UTT DETAILS: corr or (ref->hyp)  ",
    ]
    lines += [f"{cut_id}:\t{merged_alignment(ref, hyp)}" for cut_id, ref, hyp in results]
    lines += ["", "SUBSTITUTIONS: count ref -> hyp"]
    lines += [f"{c}   {r} -> {h}" for c, (r, h) in _by_count(st.subs)]
    lines += ["", "DELETIONS: count ref"]
    lines += [f"{c}   {w}" for c, w in _by_count(st.dels)]
    lines += ["", "INSERTIONS: count hyp"]
    lines += [f"{c}   {w}" for c, w in _by_count(st.ins)]
    lines += ["", "PER-WORD STATS: word  corr tot_errs count_in_ref count_in_hyp"]
    ranked = sorted(((sum(v[1:]), w, v) for w, v in st.per_word.items()), reverse=True)
    for errs, w, (corr, sub_ref, sub_hyp, n_ins, n_del) in ranked:
        lines.append(f"{w}   {corr} {errs} {corr + sub_ref + n_del} {corr + sub_hyp + n_ins}")
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return wer


def store_transcripts(path: str | Path, results: Sequence[Result]) -> None:
    """Write ``recogs-<set>.txt``: ``<cut_id>:\\tref=[...]`` then ``<cut_id>:\\thyp=[...]``."""
    with open(path, "w", encoding="utf-8") as f:
        for cut_id, ref, hyp in results:
            f.write(f"{cut_id}:\tref={list(ref)}\n")
            f.write(f"{cut_id}:\thyp={list(hyp)}\n")


def write_wer_summary(path: str | Path, wers: dict[str, float]) -> None:
    """Write ``wer-summary-<set>.txt``: ``settings\\tWER`` then one line per setting, best first."""
    with open(path, "w", encoding="utf-8") as f:
        f.write("settings\tWER\n")
        for key, val in sorted(wers.items(), key=lambda kv: kv[1]):
            f.write(f"{key}\t{val}\n")


def write_results(out_dir: str | Path, test_set_name: str, setting: str, results: Sequence[Result]) -> float:
    """Write the three files for one test set; results are sorted by cut id first. Returns WER %."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = sorted(results, key=lambda r: r[0])
    store_transcripts(out_dir / f"recogs-{test_set_name}.txt", results)
    wer = write_error_stats(out_dir / f"errs-{test_set_name}.txt", test_set_name, results)
    write_wer_summary(out_dir / f"wer-summary-{test_set_name}.txt", {setting: wer})
    return wer


def read_wer(path: str | Path) -> float | None:
    """Best (lowest) WER in a ``wer-summary-<set>.txt`` file, or None when it does not exist."""
    path = Path(path)
    if not path.is_file():
        return None
    rows = [line.split("\t") for line in path.read_text().splitlines()[1:] if line.strip()]
    return min(float(r[1]) for r in rows) if rows else None
