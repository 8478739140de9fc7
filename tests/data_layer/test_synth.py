"""The embedded corpus: layout, determinism, speaker / sentence disjointness, size."""

from __future__ import annotations

import re
from collections import defaultdict

import soundfile as sf

from mvqkd.data.synth import PART_SHARES, load_sentences, plan_corpus, sentence_pool, synth_corpus

PARTS = list(PART_SHARES)


def _walk(root):
    """part -> {utt_id: (flac path, transcript text or None)}, read straight from disk."""
    out = {}
    for part_dir in sorted((root / "LibriSpeech").iterdir()):
        utts = {}
        for flac in part_dir.rglob("*.flac"):
            utts[flac.stem] = [flac, None]
        for trans in part_dir.rglob("*.trans.txt"):
            for line in trans.read_text().splitlines():
                uid, text = line.split(" ", 1)
                utts.setdefault(uid, [None, None])[1] = text
        out[part_dir.name] = utts
    return out


def test_layout_matches_librispeech(tiny_corpus):
    tree = _walk(tiny_corpus)
    assert sorted(tree) == sorted(PARTS)
    for part, utts in tree.items():
        assert len(utts) >= 2, part
        for uid, (flac, text) in utts.items():
            assert flac is not None and text is not None, f"{part}/{uid}: audio and transcript must pair"
            spk, chap, idx = uid.split("-")
            assert re.fullmatch(r"\d{4}", idx)
            assert flac.parent.name == chap and flac.parent.parent.name == spk
            assert (flac.parent / f"{spk}-{chap}.trans.txt").is_file()
            assert text == text.upper() and text.strip() == text and text
            info = sf.info(str(flac))
            assert (info.samplerate, info.channels, info.format) == (16000, 1, "FLAC")
            assert info.duration > 0.5


def test_speakers_and_sentences_are_disjoint(tiny_corpus):
    tree = _walk(tiny_corpus)
    speakers = {p: {uid.split("-")[0] for uid in utts} for p, utts in tree.items()}
    for i, a in enumerate(PARTS):
        for b in PARTS[i + 1:]:
            assert not speakers[a] & speakers[b], (a, b)
    # No evaluation sentence ever appears in training text (pools are fixed by hash).
    train_text = {t for p in ("train-clean-100", "train-clean-360") for _, t in tree[p].values()}
    for p in ("dev-clean", "test-clean", "test-other"):
        assert not train_text & {t for _, t in tree[p].values()}
    sentences = load_sentences()
    pools = {p: set(sentence_pool(sentences, p)) for p in ("train-clean-100", "dev-clean", "test-clean", "test-other")}
    assert sum(map(len, pools.values())) == len(set(sentences))
    assert len(sentences) > 4000


def test_size_follows_hours(tiny_corpus):
    from tests.conftest import TINY_HOURS

    tree = _walk(tiny_corpus)
    seconds = defaultdict(float)
    for part, utts in tree.items():
        for flac, _ in utts.values():
            seconds[part] += sf.info(str(flac)).duration
    total = sum(seconds.values())
    assert 0.7 * TINY_HOURS * 3600 < total < 1.5 * TINY_HOURS * 3600
    assert seconds["train-clean-360"] > seconds["train-clean-100"] > seconds["test-clean"]


def test_deterministic_for_a_seed(tmp_path):
    assert plan_corpus(0.02, seed=3) == plan_corpus(0.02, seed=3)
    assert plan_corpus(0.02, seed=3) != plan_corpus(0.02, seed=4)
    a = synth_corpus(tmp_path / "a", hours=0.01, seed=5, num_jobs=2)
    b = synth_corpus(tmp_path / "b", hours=0.01, seed=5, num_jobs=1)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) > 10
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_rerun_fills_in_only_what_is_missing(tmp_path):
    root = synth_corpus(tmp_path, hours=0.01, seed=1, num_jobs=1)
    flacs = sorted(root.rglob("*.flac"))
    victim, other = flacs[0], flacs[1]
    original = victim.read_bytes()
    victim.unlink()
    other_mtime = other.stat().st_mtime_ns
    synth_corpus(tmp_path, hours=0.01, seed=1, num_jobs=1)
    assert victim.read_bytes() == original
    assert other.stat().st_mtime_ns == other_mtime
    assert not list(root.rglob("*.tmp"))


def test_synth_cli_help_and_bad_hours(tmp_path):
    from tests.conftest import run_cli

    assert "--hours" in run_cli("synth-corpus", "--help").stdout
    proc = run_cli("synth-corpus", "--out-dir", tmp_path, "--hours", "0", check=False)
    assert proc.returncode != 0 and "--hours must be > 0" in proc.stderr
