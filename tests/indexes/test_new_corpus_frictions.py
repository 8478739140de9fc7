"""The natural mistakes of a new user (issue 17's list), each reproduced: a clear error that
names the file, the argument and the fix, before any teacher work, and nothing left
half-written."""

from __future__ import annotations

import pytest
from lhotse import CutSet

from mvqkd.cli import main


@pytest.fixture()
def manifests(cuts_path, tmp_path):
    """The recordings and supervisions manifests of the test cuts (the usual mix-ups)."""
    cuts = CutSet.from_file(cuts_path)
    recs, sups = tmp_path / "recordings.jsonl.gz", tmp_path / "supervisions.jsonl.gz"
    cuts.decompose()[0].to_file(recs)
    from lhotse import SupervisionSegment, SupervisionSet

    SupervisionSet.from_segments([SupervisionSegment(id=c.id, recording_id=c.recording_id, start=0,
                                                     duration=c.duration, text="HI") for c in cuts]).to_file(sups)
    return recs, sups


@pytest.mark.parametrize("which, kind", [(0, "a recordings manifest"), (1, "a supervisions manifest")])
def test_extract_refuses_other_manifests_before_teacher_work(manifests, tiny_teacher, quantizer_path, tmp_path,
                                                             caplog, which, kind):
    out = tmp_path / "out"
    rc = main(["extract", "--cuts", str(manifests[which]), "--teacher", str(tiny_teacher), "--layer", "2",
               "--quantizer", str(quantizer_path), "--out-dir", str(out)])
    assert rc == 2
    assert f"{manifests[which]} is {kind}, not a cuts manifest" in caplog.text
    assert "mvqkd make-cuts" in caplog.text
    assert not (out / "shards").exists() and not (out / "plan.json").exists()  # nothing to refuse later


def test_extract_then_accepts_the_right_manifest(manifests, cuts_path, tiny_teacher, quantizer_path, tmp_path):
    out = tmp_path / "out"
    args = ["--teacher", str(tiny_teacher), "--layer", "2", "--quantizer", str(quantizer_path),
            "--out-dir", str(out)]
    assert main(["extract", "--cuts", str(manifests[0]), *args]) == 2
    assert main(["extract", "--cuts", str(cuts_path), *args]) == 0


def test_validate_names_a_missing_manifest(tmp_path, caplog):
    assert main(["validate", "--cuts", str(tmp_path / "nope.jsonl.gz")]) == 2
    assert "--cuts: cut manifest not found" in caplog.text and "nope.jsonl.gz" in caplog.text


def test_compute_fbank_on_a_part_that_is_not_librispeech(tmp_path, caplog):
    assert main(["compute-fbank", "--manifest-dir", str(tmp_path), "--out-dir", str(tmp_path / "fbank"),
                 "--parts", "kaldi"]) == 2
    assert "librispeech_recordings_kaldi.jsonl.gz not found" in caplog.text
    assert "mvqkd compute-fbank --cuts CUTS --out-cuts OUT" in caplog.text


def test_compute_fbank_refuses_a_recordings_manifest(manifests, tmp_path, caplog):
    assert main(["compute-fbank", "--cuts", str(manifests[0]), "--out-cuts", str(tmp_path / "f.jsonl.gz")]) == 2
    assert "is a recordings manifest, not a cuts manifest" in caplog.text
    assert not (tmp_path / "f.jsonl.gz").exists()


def test_decode_avg_beyond_the_saved_epochs(cuts_path, tmp_path, caplog):
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "epoch-1.pt").write_bytes(b"")
    rc = main(["decode", "--exp-dir", str(exp), "--epoch", "1", "--avg", "2", "--cuts", f"t={cuts_path}"])
    assert rc == 2
    assert "--epoch 1 --avg 2 needs epoch files 0..1" in caplog.text and "has epochs [1]" in caplog.text


def test_train_without_indexes_suggests_kd_none(cuts_path, tmp_path, caplog):
    from mvqkd.data.synthetic import WORDS, train_tiny_bpe

    bpe = train_tiny_bpe([" ".join(WORDS)] * 3, tmp_path / "bpe", 30)
    from lhotse import SupervisionSegment

    plain = list(CutSet.from_file(cuts_path))
    for c in plain:
        c.supervisions = [SupervisionSegment(id=c.id, recording_id=c.recording_id, start=0,
                                             duration=c.duration, text="THE CAT")]
    plain = CutSet.from_cuts(plain)
    plain.to_file(tmp_path / "plain.jsonl.gz")
    rc = main(["train", "--train-cuts", str(tmp_path / "plain.jsonl.gz"), "--bpe-model", str(bpe),
               "--exp-dir", str(tmp_path / "exp"), "--kd", "mvq", "--model-size", "tiny"])
    assert rc == 1
    assert "has no 'codebook_indexes' (needed by --kd mvq)" in caplog.text
    assert "--kd none" in caplog.text
