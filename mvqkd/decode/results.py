"""Decoding result files, byte-compatible with icefall's ``store_transcripts`` /
``write_error_stats`` / ``save_results``, and the WER summary they feed.

For test set ``<set>``, setting key ``<key>`` (``greedy_search``, ``beam_size_4``, ...) and
file suffix ``<suffix>`` (``epoch-30-avg-5-modified_beam_search-beam-size-4``, see
:func:`mvqkd.decode.decode.suffix`):

- ``recogs-<set>-<suffix>.txt``: per utterance ``<cut_id>:\\tref=[...]`` then
  ``<cut_id>:\\thyp=[...]`` (Python lists of words); untranscribed cuts get the hyp line only
  and are left out of the error statistics below (counted in the log);
- ``errs-<set>-<suffix>.txt``: ``%WER = x.xx``, the error counts, per-utterance alignments
  with runs of errors merged into ``(ref words->hyp words)``, the substitutions, deletions
  and insertions by count, and per-word statistics (icefall's layout, including its
  treatment of a literal ``*`` word as the alignment's gap symbol);
- ``wer-summary-<set>-<suffix>.txt``: ``settings\\tWER`` then ``<key>\\t<wer>``.

With ``cer=True`` the same three for characters (spaces removed, as icefall's
``compute_CER``): ``errs-cer-...``, ``cer-summary-...``. Without a suffix the files are
``recogs-<set>.txt`` etc. The alignment is kaldialign's (Levenshtein, unit costs).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from mvqkd.data.wer import EPS, Result, align, compute_error_stats

logger = logging.getLogger(__name__)


def merged_alignment(ref: Sequence[str], hyp: Sequence[str]) -> str:
    """One line: correct words as they are, every run of successive errors as
    ``(ref words->hyp words)``, an empty side written ``*``. Gap symbols inside a run are
    dropped, and a word equal to the gap symbol vanishes (icefall's behaviour)."""
    runs: list[tuple[list[str], list[str], bool]] = []  # (ref words, hyp words, is_error)
    for r, h in align(ref, hyp):
        error = r != h
        if error and runs and runs[-1][2]:
            runs[-1][0].append(r)
            runs[-1][1].append(h)
        else:
            runs.append(([r], [h], error))
    parts = []
    for rs, hs, error in runs:
        rs, hs = [w for w in rs if w != EPS], [w for w in hs if w != EPS]
        if not rs and not hs:
            continue
        r, h = " ".join(rs) or EPS, " ".join(hs) or EPS
        parts.append(r if r == h else f"({r}->{h})")
    return " ".join(parts)


def _by_count(counter) -> list:
    """(count, key) pairs, most frequent first, ties in reverse key order (icefall's sort)."""
    return sorted(((c, k) for k, c in counter.items()), reverse=True)


def error_stats_text(results: Sequence[Result]) -> tuple[str, float]:
    """The ``errs`` file's text and the WER (percent, two decimals)."""
    st = compute_error_stats(results)
    rate = "%.2f" % st.wer
    lines = [
        f"%WER = {rate}",
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
    return "\n".join(lines) + "\n", float(rate)


def write_error_stats(path: str | Path, test_set_name: str, results: Sequence[Result]) -> float:
    """Write the ``errs`` report of ``results``; return the WER in percent (2 decimals)."""
    text, wer = error_stats_text(results)
    st = compute_error_stats(results)
    logger.info("[%s] %%WER %.2f%% [%d / %d, %d ins, %d del, %d sub ]", test_set_name, st.wer,
                st.num_errors, st.ref_words, st.num_ins, st.num_del, st.num_sub)
    Path(path).write_text(text, encoding="utf-8")
    return wer


def store_transcripts(path: str | Path, results: Sequence[Result]) -> None:
    """Write ``recogs``: ``<cut_id>:\\tref=[...]`` (when there is a reference) then
    ``<cut_id>:\\thyp=[...]``."""
    with open(path, "w", encoding="utf-8") as f:
        for cut_id, ref, hyp in results:
            if ref is not None:
                f.write(f"{cut_id}:\tref={list(ref)}\n")
            f.write(f"{cut_id}:\thyp={list(hyp)}\n")


def write_wer_summary(path: str | Path, wers: dict[str, float]) -> None:
    """Write a summary: ``settings\\tWER`` then one line per setting, best first."""
    with open(path, "w", encoding="utf-8") as f:
        f.write("settings\tWER\n")
        for key, val in sorted(wers.items(), key=lambda kv: kv[1]):
            f.write(f"{key}\t{val}\n")


def _chars(results: Sequence[Result]) -> list[Result]:
    return [(cid, list("".join(ref)), list("".join(hyp))) for cid, ref, hyp in results]


def write_results(out_dir: str | Path, test_set_name: str, setting: str, results: Sequence[Result],
                  suffix: str | None = None, cer: bool = False) -> float | None:
    """Write the files of one test set (see the module docstring); ``results`` are sorted as
    icefall sorts them. Returns the WER % over the transcribed cuts, or None when no cut is
    transcribed (recogs only)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = sorted(results, key=lambda r: (r[0], r[1] or [], r[2]))
    tail = f"{test_set_name}-{suffix}" if suffix else test_set_name
    store_transcripts(out_dir / f"recogs-{tail}.txt", results)
    untranscribed = sum(ref is None for _, ref, _ in results)
    if untranscribed:
        logger.info("%s: %d of %d cuts untranscribed: recognition only for them (%s)%s", test_set_name,
                    untranscribed, len(results), out_dir / f"recogs-{tail}.txt",
                    "" if untranscribed == len(results) else "; the WER counts the transcribed ones")
        results = [r for r in results if r[1] is not None]
        if not results:
            return None
    wer = write_error_stats(out_dir / f"errs-{tail}.txt", f"{test_set_name}-{setting}", results)
    write_wer_summary(out_dir / f"wer-summary-{tail}.txt", {setting: wer})
    if cer:
        c = write_error_stats(out_dir / f"errs-cer-{tail}.txt", f"{test_set_name}-{setting}-cer",
                              _chars(results))
        write_wer_summary(out_dir / f"cer-summary-{tail}.txt", {setting: c})
    return wer


def read_wer(path: str | Path) -> float | None:
    """Best (lowest) WER in a ``wer-summary`` file, or None when it does not exist."""
    path = Path(path)
    if not path.is_file():
        return None
    rows = [line.split("\t") for line in path.read_text().splitlines()[1:] if line.strip()]
    return min(float(r[1]) for r in rows) if rows else None
