"""WER and icefall-style result files against a hand-computed example."""

import pytest

from mvqkd.data.wer import compute_error_stats
from mvqkd.decode.results import merged_alignment, write_results

# Hand-computed example (unit-cost Levenshtein, every optimum below is unique):
#   u1: ref A B C D      hyp A X C D E         -> B->X sub, E inserted         (1 sub, 1 ins)
#   u2: ref HELLO WORLD  hyp HELLO             -> WORLD deleted                (1 del)
#   u3: ref GOOD MORNING SIR  hyp GOOD EVENING MADAM -> 2 subs (one merged run)(2 sub)
#   u4: ref B            hyp X                 -> B->X sub                     (1 sub)
# reference words 4 + 2 + 3 + 1 = 10; errors 4 sub + 1 del + 1 ins = 6 -> WER 60.00 %
# correct words: A C D HELLO GOOD = 5
RESULTS = [
    ("u2", ["HELLO", "WORLD"], ["HELLO"]),
    ("u1", ["A", "B", "C", "D"], ["A", "X", "C", "D", "E"]),
    ("u3", ["GOOD", "MORNING", "SIR"], ["GOOD", "EVENING", "MADAM"]),
    ("u4", ["B"], ["X"]),
]


def test_counts_hand_computed():
    st = compute_error_stats(RESULTS)
    assert (st.ref_words, st.num_sub, st.num_del, st.num_ins, st.corr) == (10, 4, 1, 1, 5)
    assert st.wer == 60.0
    assert st.subs[("B", "X")] == 2


def test_merged_alignment():
    assert merged_alignment(*RESULTS[1][1:]) == "A (B->X) C D (*->E)"
    assert merged_alignment(*RESULTS[0][1:]) == "HELLO (WORLD->*)"
    assert merged_alignment(*RESULTS[2][1:]) == "GOOD (MORNING SIR->EVENING MADAM)"


def test_files(tmp_path):
    wer = write_results(tmp_path, "test-clean", "greedy_search", RESULTS)
    assert wer == 60.0
    recogs = (tmp_path / "recogs-test-clean.txt").read_text().splitlines()
    assert recogs[:4] == [
        "u1:\tref=['A', 'B', 'C', 'D']",
        "u1:\thyp=['A', 'X', 'C', 'D', 'E']",
        "u2:\tref=['HELLO', 'WORLD']",
        "u2:\thyp=['HELLO']",
    ]
    assert len(recogs) == 8
    errs = (tmp_path / "errs-test-clean.txt").read_text()
    head, rest = errs.split("PER-UTT DETAILS: corr or (ref->hyp)  \n")
    assert head.splitlines()[:2] == [
        "%WER = 60.00",
        "Errors: 1 insertions, 1 deletions, 4 substitutions, over 10 reference words (5 correct)",
    ]
    sections = rest.split("\n\n")
    assert sections[0].splitlines() == [
        "u1:\tA (B->X) C D (*->E)",
        "u2:\tHELLO (WORLD->*)",
        "u3:\tGOOD (MORNING SIR->EVENING MADAM)",
        "u4:\t(B->X)",
    ]
    assert sections[1].splitlines() == [
        "SUBSTITUTIONS: count ref -> hyp",
        "2   B -> X",
        "1   SIR -> MADAM",
        "1   MORNING -> EVENING",
    ]
    assert sections[2].splitlines() == ["DELETIONS: count ref", "1   WORLD"]
    assert sections[3].splitlines() == ["INSERTIONS: count hyp", "1   E"]
    per_word = sections[4].splitlines()
    assert per_word[0] == "PER-WORD STATS: word  corr tot_errs count_in_ref count_in_hyp"
    # word corr tot_errs count_in_ref count_in_hyp, most errors first
    assert per_word[1:4] == ["X   0 2 0 2", "B   0 2 2 0", "WORLD   0 1 1 0"]
    assert "A   1 0 1 1" in per_word and "E   0 1 0 1" in per_word
    assert len(per_word) == 1 + 13
    summary = (tmp_path / "wer-summary-test-clean.txt").read_text()
    assert summary == "settings\tWER\ngreedy_search\t60.0\n"


def test_empty_reference():
    st = compute_error_stats([("e", [], [])])
    assert st.wer == 0.0
    st = compute_error_stats([("e", [], ["UH"])])
    assert st.wer == float("inf")


ICEFALL_ERRS = """%WER = 40.00
Errors: 1 insertions, 0 deletions, 1 substitutions, over 5 reference words (3 correct)
Search below for sections starting with PER-UTT DETAILS:, SUBSTITUTIONS:, DELETIONS:, INSERTIONS:, PER-WORD STATS:

PER-UTT DETAILS: corr or (ref->hyp)  
d:\tA
d:\t(A->B)
s:\tX Y

SUBSTITUTIONS: count ref -> hyp
1   A -> B

DELETIONS: count ref

INSERTIONS: count hyp
1   *

PER-WORD STATS: word  corr tot_errs count_in_ref count_in_hyp
B   0 1 0 1
A   1 1 2 1
*   0 1 0 1
Y   1 0 1 1
X   1 0 1 1
"""


def test_errs_file_is_byte_identical_to_icefalls_layout(tmp_path):
    """Written by hand from icefall's write_error_stats: duplicate cut ids sorted by reference
    then hypothesis (icefall sorts the result tuples), and a reference word "*" (the alignment's
    gap symbol) counted as an insertion of "*" and dropped from the alignment line."""
    results = [("s", ["X", "*", "Y"], ["X", "Y"]), ("d", ["A"], ["B"]), ("d", ["A"], ["A"])]
    wer = write_results(tmp_path, "t", "greedy_search", results, suffix="epoch-1-avg-1")
    assert wer == 40.0
    assert (tmp_path / "errs-t-epoch-1-avg-1.txt").read_text() == ICEFALL_ERRS
    assert (tmp_path / "recogs-t-epoch-1-avg-1.txt").read_text().splitlines()[:4] == [
        "d:\tref=['A']", "d:\thyp=['A']", "d:\tref=['A']", "d:\thyp=['B']"]
    assert (tmp_path / "wer-summary-t-epoch-1-avg-1.txt").read_text() == "settings\tWER\ngreedy_search\t40.0\n"


def test_cer_counts_characters_without_spaces(tmp_path):
    # GOODDAY vs GOODDY: one deleted character of 7 -> 14.29 %; words: 1 sub of 2 -> 50 %
    wer = write_results(tmp_path, "t", "beam_size_4", [("u", ["GOOD", "DAY"], ["GOOD", "DY"])], cer=True)
    assert wer == 50.0
    assert (tmp_path / "cer-summary-t.txt").read_text() == "settings\tWER\nbeam_size_4\t14.29\n"
    assert (tmp_path / "errs-cer-t.txt").read_text().startswith(
        "%WER = 14.29\nErrors: 0 insertions, 1 deletions, 0 substitutions, over 7 reference words (6 correct)\n")


def test_untranscribed_set_gets_recognitions_only(tmp_path):
    assert write_results(tmp_path, "t", "greedy_search", [("b", None, ["HI"]), ("a", None, [])]) is None
    assert (tmp_path / "recogs-t.txt").read_text() == "a:\thyp=[]\nb:\thyp=['HI']\n"
    assert not (tmp_path / "errs-t.txt").exists()


def test_partly_transcribed_set_scores_the_transcribed_cuts(tmp_path):
    res = [("b", None, ["HI"]), ("a", ["A", "B"], ["A"]), ("c", ["C"], ["C"])]
    # 1 deletion over 3 reference words; the untranscribed cut is recognised, not scored
    assert write_results(tmp_path, "t", "greedy_search", res) == pytest.approx(33.33, abs=0.01)
    assert "b:\thyp=['HI']" in (tmp_path / "recogs-t.txt").read_text()
    assert (tmp_path / "wer-summary-t.txt").read_text() == "settings\tWER\ngreedy_search\t33.33\n"
    assert "b:" not in (tmp_path / "errs-t.txt").read_text()
