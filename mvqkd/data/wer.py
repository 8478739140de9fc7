"""Word error rate: alignment and error counts (shared by teacher evaluation and decoding).

The alignment comes from kaldialign (Levenshtein with unit costs). The result files that
decoding writes from these counts are in :mod:`mvqkd.decode.results`.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import kaldialign

logger = logging.getLogger(__name__)

EPS = "*"

Result = tuple[str, Sequence[str], Sequence[str]]  # (cut_id, ref_words, hyp_words)


@dataclass
class ErrorStats:
    """Counts accumulated over a test set."""

    ref_words: int = 0
    corr: int = 0
    subs: Counter = field(default_factory=Counter)  # (ref, hyp) -> count
    dels: Counter = field(default_factory=Counter)  # ref word -> count
    ins: Counter = field(default_factory=Counter)  # hyp word -> count
    # word -> [corr, sub as ref, sub as hyp, ins, del]
    per_word: dict = field(default_factory=dict)

    @property
    def num_sub(self) -> int:
        return sum(self.subs.values())

    @property
    def num_del(self) -> int:
        return sum(self.dels.values())

    @property
    def num_ins(self) -> int:
        return sum(self.ins.values())

    @property
    def num_errors(self) -> int:
        return self.num_sub + self.num_del + self.num_ins

    @property
    def wer(self) -> float:
        """Percent WER. With no reference words it is 0 if there are no errors, else inf."""
        if self.ref_words == 0:
            return 0.0 if self.num_errors == 0 else float("inf")
        return 100.0 * self.num_errors / self.ref_words

    def _word(self, w: str) -> list:
        return self.per_word.setdefault(w, [0, 0, 0, 0, 0])


def align(ref: Sequence[str], hyp: Sequence[str]) -> list[tuple[str, str]]:
    """Minimum-edit-distance alignment; ``EPS`` marks insertions (ref side) / deletions (hyp side)."""
    return kaldialign.align(list(ref), list(hyp), EPS)


def compute_error_stats(results: Iterable[Result]) -> ErrorStats:
    """Accumulate substitutions, deletions, insertions and per-word counts."""
    st = ErrorStats()
    for _, ref, hyp in results:
        st.ref_words += len(ref)
        for r, h in align(ref, hyp):
            if r == EPS:
                st.ins[h] += 1
                st._word(h)[3] += 1
            elif h == EPS:
                st.dels[r] += 1
                st._word(r)[4] += 1
            elif r != h:
                st.subs[(r, h)] += 1
                st._word(r)[1] += 1
                st._word(h)[2] += 1
            else:
                st.corr += 1
                st._word(r)[0] += 1
    return st
