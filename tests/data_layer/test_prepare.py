"""prepare.sh stages on the tiny synthetic corpus, and every bad corpus input."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from lhotse import CutSet, load_manifest
from lhotse.utils import compute_num_frames

from mvqkd.data.librispeech import CorpusError, prepare_librispeech_manifests
from mvqkd.data.tokenizer import load_bpe
from tests.conftest import REPO, run_cli

PARTS = ["train-clean-360", "train-clean-100", "dev-clean", "test-clean", "test-other"]


def test_manifests_equal_lhotse_recipe(tiny_corpus, prepared_data):
    """On a clean corpus our audited manifests are exactly what lhotse's prepare_librispeech makes."""
    from lhotse.recipes import prepare_librispeech

    ref = prepare_librispeech(tiny_corpus / "LibriSpeech", dataset_parts=["dev-clean", "test-other"])
    for part in ("dev-clean", "test-other"):
        ours_rec = load_manifest(prepared_data / f"manifests/librispeech_recordings_{part}.jsonl.gz")
        ours_sup = load_manifest(prepared_data / f"manifests/librispeech_supervisions_{part}.jsonl.gz")
        assert sorted(r.to_dict().items().__repr__() for r in ours_rec) == sorted(
            r.to_dict().items().__repr__() for r in ref[part]["recordings"])
        assert sorted(s.to_dict().items().__repr__() for s in ours_sup) == sorted(
            s.to_dict().items().__repr__() for s in ref[part]["supervisions"])


def test_feature_frames_match_durations(prepared_data):
    from mvqkd.data.features import fbank_extractor

    extractor = fbank_extractor()
    for part in PARTS:
        cuts = CutSet.from_file(prepared_data / f"fbank/librispeech_cuts_{part}.jsonl.gz")
        n_audio = len(load_manifest(prepared_data / f"manifests/librispeech_recordings_{part}.jsonl.gz"))
        assert len(cuts) == n_audio > 0
        for cut in cuts:
            feats = cut.load_features()
            assert feats.shape == (cut.num_frames, 80)
            assert cut.num_frames == compute_num_frames(cut.duration, 0.01, 16000)
            assert abs(cut.num_frames - cut.duration / 0.01) <= 1
    # Stored (lilcom-compressed) features equal a fresh extraction from the audio.
    cut = cuts[0]
    fresh = extractor.extract(cut.load_audio(), 16000)
    np.testing.assert_allclose(cut.load_features(), fresh, atol=0.1)


def test_bpe_round_trip_and_conventions(prepared_data):
    sp = load_bpe(prepared_data / "lang_bpe_100/bpe.model")
    assert [sp.piece_to_id(p) for p in ("<blk>", "<sos/eos>", "<unk>")] == [0, 1, 2]
    tokens = (prepared_data / "lang_bpe_100/tokens.txt").read_text().splitlines()
    assert len(tokens) == sp.get_piece_size() and tokens[0] == "<blk> 0"
    cuts = CutSet.from_file(prepared_data / "fbank/librispeech_cuts_test-clean.jsonl.gz")
    for cut in cuts:
        text = cut.supervisions[0].text
        ids = sp.encode(text, out_type=int)
        assert 0 not in ids and sp.decode(ids) == text


def _run_prepare(corpus: Path, data: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    return subprocess.run(
        ["bash", str(REPO / "recipes/librispeech/prepare.sh"), "--corpus-dir", str(corpus),
         "--data-dir", str(data), "--vocab-size", "100", *extra],
        env=env, capture_output=True, text=True,
    )


def test_rerun_is_a_noop(tiny_corpus, prepared_data):
    outputs = sorted(p for p in prepared_data.rglob("*") if p.is_file())
    before = {p: p.stat().st_mtime_ns for p in outputs}
    proc = _run_prepare(tiny_corpus, prepared_data,
                        "--parts", "train-clean-360 train-clean-100 dev-clean test-clean test-other")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("already done") == 3
    after = {p: p.stat().st_mtime_ns for p in sorted(p for p in prepared_data.rglob("*") if p.is_file())}
    assert after == before


def test_library_level_rerun_is_a_noop(tiny_corpus, prepared_data):
    assert prepare_librispeech_manifests(tiny_corpus, ["dev-clean"], prepared_data / "manifests") == {}


@pytest.fixture()
def damaged_corpus(tiny_corpus, tmp_path) -> tuple[Path, dict[str, str]]:
    """A copy of test-clean + train-clean-360 with one utterance of each kind of damage."""
    root = tmp_path / "LibriSpeech"
    for part in ("train-clean-360", "test-clean"):
        shutil.copytree(tiny_corpus / "LibriSpeech" / part, root / part)
    part = root / "train-clean-360"
    flacs = sorted(part.rglob("*.flac"))
    damage = {}
    # 1. corrupt FLAC: garbage bytes with the right name
    flacs[0].write_bytes(b"this is not a flac file" * 100)
    damage[flacs[0].stem] = "unreadable audio"
    # 2. transcript id without audio
    flacs[1].unlink()
    damage[flacs[1].stem] = "transcript line without audio file"
    # 3. empty transcript line (audio present)
    trans = flacs[2].parent / f"{'-'.join(flacs[2].stem.split('-')[:2])}.trans.txt"
    lines = [f"{flacs[2].stem}" if line.startswith(flacs[2].stem) else line
             for line in trans.read_text().splitlines()]
    trans.write_text("\n".join(lines) + "\n")
    damage[flacs[2].stem] = "empty transcript"
    # 4. audio without transcript line
    stray = flacs[2].parent / f"{'-'.join(flacs[2].stem.split('-')[:2])}-9999.flac"
    shutil.copy(sorted(root.joinpath("test-clean").rglob("*.flac"))[0], stray)
    damage[stray.stem] = "audio file without transcript line"
    return tmp_path, damage


def test_bad_utterances_are_skipped_counted_and_listed(damaged_corpus, tmp_path):
    corpus, damage = damaged_corpus
    out = tmp_path / "manifests"
    n_total = len({p.stem for p in (corpus / "LibriSpeech/train-clean-360").rglob("*.flac")} | set(damage))
    skipped = prepare_librispeech_manifests(corpus, ["train-clean-360", "test-clean"], out)
    assert skipped == {"train-clean-360": 4, "test-clean": 0}
    report = (out / "bad_utterances_train-clean-360.txt").read_text()
    for uid, why in damage.items():
        line = next(line for line in report.splitlines() if uid in line)
        assert why in line, (uid, line)
    sups = load_manifest(out / "librispeech_supervisions_train-clean-360.jsonl.gz")
    assert {s.id for s in sups}.isdisjoint(damage)
    assert len(sups) == n_total - len(damage)  # every good utterance kept
    assert not (out / "bad_utterances_test-clean.txt").exists()


def test_strict_mode_and_cli_report(damaged_corpus, tmp_path):
    corpus, damage = damaged_corpus
    with pytest.raises(CorpusError, match="train-clean-360: 4 bad utterances"):
        prepare_librispeech_manifests(corpus, ["train-clean-360"], tmp_path / "strict", strict=True)
    proc = run_cli("prepare-manifests", "--corpus-dir", corpus, "--parts", "train-clean-360",
                   "--out-dir", tmp_path / "m")
    assert "4 bad utterance(s) skipped" in proc.stdout
    assert "skipping" in proc.stderr and "unreadable audio" in proc.stderr


def test_missing_or_half_written_corpus(tmp_path, tiny_corpus):
    with pytest.raises(CorpusError, match="does not exist"):
        prepare_librispeech_manifests(tmp_path / "nowhere", ["train-clean-360"], tmp_path / "m")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="neither a LibriSpeech/ folder"):
        prepare_librispeech_manifests(tmp_path / "empty", ["train-clean-360"], tmp_path / "m")
    half = tmp_path / "half" / "LibriSpeech"
    shutil.copytree(tiny_corpus / "LibriSpeech/test-clean", half / "test-clean")
    with pytest.raises(CorpusError, match="train-clean-360 does not exist"):
        prepare_librispeech_manifests(tmp_path / "half", ["test-clean", "train-clean-360"], tmp_path / "m")
    (half / "train-clean-360").mkdir()
    with pytest.raises(CorpusError, match="no transcripts and no .flac"):
        prepare_librispeech_manifests(tmp_path / "half", ["train-clean-360"], tmp_path / "m")
    proc = _run_prepare(tmp_path / "nowhere", tmp_path / "d", "--stage", "1")
    assert proc.returncode != 0 and "nowhere does not exist" in proc.stderr


def _test_clean_with_a_truncated_flac(tiny_corpus, tmp_path):
    """test-clean copied under ``tmp_path`` with manifests in ``tmp_path/m``, then its first
    recording's FLAC cut to a third (header fine, body cut): (its cuts, that file, its bytes)."""
    shutil.copytree(tiny_corpus / "LibriSpeech/test-clean", tmp_path / "LibriSpeech/test-clean")
    prepare_librispeech_manifests(tmp_path, ["test-clean"], tmp_path / "m")
    recs = load_manifest(tmp_path / "m/librispeech_recordings_test-clean.jsonl.gz")
    sups = load_manifest(tmp_path / "m/librispeech_supervisions_test-clean.jsonl.gz")
    victim = Path(recs[0].sources[0].source)
    good = victim.read_bytes()
    victim.write_bytes(good[: len(good) // 3])
    return CutSet.from_manifests(recordings=recs, supervisions=sups), victim, good


def test_truncated_flac_fails_in_fbank_with_a_report(tiny_corpus, tmp_path):
    """A FLAC whose header is fine but whose body is cut is caught when decoded for features."""
    from mvqkd.data.features import compute_fbank

    cuts, victim, _ = _test_clean_with_a_truncated_flac(tiny_corpus, tmp_path)
    done, failed = compute_fbank(cuts, tmp_path / "fbank", "test-clean", num_jobs=1)
    assert [cid for cid, _ in failed] == [next(c.id for c in cuts if c.recording.sources[0].source == str(victim))]
    assert len(done) == len(cuts) - 1


def test_compute_fbank_strict_fails_after_writing_the_others(tiny_corpus, tmp_path, caplog):
    """--strict: a part with an undecodable cut is written (the others' features, the list) and
    then an error, also on a re-run; repaired audio and a redo clear it (no stale list left)."""
    from mvqkd.cli import main

    cuts, victim, good = _test_clean_with_a_truncated_flac(tiny_corpus, tmp_path)
    fbank = tmp_path / "fbank"
    out, listed = fbank / "librispeech_cuts_test-clean.jsonl.gz", fbank / "failed_cuts_test-clean.txt"
    cmd = ["compute-fbank", "--manifest-dir", str(tmp_path / "m"), "--out-dir", str(fbank),
           "--parts", "test-clean", "--num-jobs", "1"]
    assert main([*cmd, "--strict"]) == 2
    victim_cut = next(c.id for c in cuts if c.recording.sources[0].source == str(victim))
    assert [line.split("\t")[0] for line in listed.read_text().splitlines()] == [victim_cut]
    assert len(CutSet.from_file(out)) == len(cuts) - 1
    assert f"test-clean: 1 cut(s) failed feature extraction (--strict): listed with the reason in {listed}" \
        in caplog.text
    caplog.clear()
    assert main([*cmd, "--strict"]) == 2 and "1 cut(s) failed" in caplog.text  # the finished part re-checked
    assert main(cmd) == 0  # without --strict the skipped cut is only logged
    victim.write_bytes(good)
    out.unlink()
    assert main([*cmd, "--strict"]) == 0
    assert len(CutSet.from_file(out)) == len(cuts) and not listed.exists()
