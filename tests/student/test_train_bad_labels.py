"""Training never learns from bad labels: a label file missing at the start is found before
step 1, and a shard zeroed, rewritten or deleted while training runs stops it with the file
and the cut named (or, with --skip-bad-indexes, the cuts are skipped and counted)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from lhotse import CutSet

import mvqkd.training.student as student
from mvqkd.data.labels import BadLabelsError
from mvqkd.data.synthetic import WORDS, make_synthetic_cuts, train_tiny_bpe


@pytest.fixture
def data(tmp_path):
    """Two synthetic sets of 6 cuts, each with its own label file, in one manifest."""
    a = make_synthetic_cuts(tmp_path / "a", num_cuts=6, min_duration=0.8, max_duration=1.4,
                            num_codebooks=4, codebook_size=16, seed=1)
    b = make_synthetic_cuts(tmp_path / "b", num_cuts=6, min_duration=0.8, max_duration=1.4,
                            num_codebooks=4, codebook_size=16, seed=2).modify_ids(lambda i: "b-" + i)
    (a + b).to_file(tmp_path / "cuts.jsonl.gz")
    train_tiny_bpe([" ".join(WORDS)] * 3, tmp_path / "bpe", 30)
    return tmp_path


def _cfg(d, **kw):
    cfg = dict(train_cuts=str(d / "cuts.jsonl.gz"), bpe_model=str(d / "bpe" / "bpe.model"),
               exp_dir=str(d / "exp"), kd="mvq", model_size="tiny", num_epochs=1, max_duration=4.0,
               num_workers=0, save_every_n=0, warmup_steps=2, lr=3e-3, tensorboard=False,
               device="cpu")
    return {**cfg, **kw}


def _labels(d, part):
    return d / part / "teacher_arrays.h5"


def test_missing_file_found_before_step_one(data, monkeypatch):
    _labels(data, "b").unlink()
    steps = []
    monkeypatch.setattr(student, "train_epochs", lambda *a, **k: steps.append(1))
    with pytest.raises(BadLabelsError, match=r"teacher_arrays.h5 \(6 cuts, e.g. b-utt0\)"):
        student.train(_cfg(data))
    assert steps == []  # refused while preparing the data, before any step
    monkeypatch.undo()
    res = student.train(_cfg(data, skip_bad_indexes=True))
    assert res["filter"] == {"codebook_indexes file missing": 6}
    assert {c for h in res["history"] for c in h["cut_ids"]} <= {f"utt{i}" for i in range(6)}


def _corrupt_after_setup(monkeypatch, how):
    real = student.build_or_resume

    def build_then_corrupt(cfg, data, dinfo):
        run = real(cfg, data, dinfo)  # the start-up checks have passed: now the file changes
        how()
        return run

    monkeypatch.setattr(student, "build_or_resume", build_then_corrupt)


@pytest.mark.parametrize("damage", ["zeroed", "deleted"])
def test_shard_damaged_during_training_stops_it(data, monkeypatch, damage):
    path = _labels(data, "a")

    def zero():
        with h5py.File(path, "r+") as f:
            for key in f:
                f[key][...] = np.zeros_like(f[key][...])

    _corrupt_after_setup(monkeypatch, zero if damage == "zeroed" else path.unlink)
    want = "does not match the checksum" if damage == "zeroed" else "cannot read 'codebook_indexes'"
    with pytest.raises(BadLabelsError, match=want) as err:
        student.train(_cfg(data))
    assert str(path) in str(err.value) and "cut utt" in str(err.value)
    log = next((data / "exp" / "log").glob("log-train-*.txt")).read_text()
    assert "training stopped by BadLabelsError" in log and str(path) in log  # in the log file too


def test_skip_bad_indexes_trains_on_the_good_cuts(data, monkeypatch, caplog):
    path = _labels(data, "a")

    def zero():
        with h5py.File(path, "r+") as f:
            for key in f:
                f[key][...] = np.zeros_like(f[key][...])

    _corrupt_after_setup(monkeypatch, zero)
    res = student.train(_cfg(data, skip_bad_indexes=True, num_epochs=2))
    seen = {c for h in res["history"] for c in h["cut_ids"]}
    assert seen and all(c.startswith("b-") for c in seen)  # never a cut of the damaged file
    assert caplog.text.count("(--skip-bad-indexes)") >= 6


def test_values_out_of_range_are_refused(data, monkeypatch):
    """Labels whose checksum was rewritten too (no checksum to compare) still must be in range."""
    cuts = CutSet.from_file(data / "cuts.jsonl.gz")
    stripped = CutSet.from_cuts(c.with_custom("codebook_indexes_crc32", None) for c in cuts)
    stripped.to_file(data / "cuts.jsonl.gz")
    path = _labels(data, "a")

    def out_of_range():
        with h5py.File(path, "r+") as f:
            for key in f:
                f[key][...] = np.full_like(f[key][...], 200)  # >= codebook_size 16

    _corrupt_after_setup(monkeypatch, out_of_range)
    with pytest.raises(BadLabelsError, match=r"holds codes outside \[0, 16\)"):
        student.train(_cfg(data))


def test_cli_reports_a_stopping_error_once_and_the_traceback_to_the_log(data):
    """`mvqkd train` without its BPE model: one line on the console naming the file and the
    fix, no traceback there; the log file keeps the traceback."""
    from tests.conftest import run_cli

    missing = data / "nowhere" / "bpe.model"
    proc = run_cli("train", "--train-cuts", data / "cuts.jsonl.gz", "--bpe-model", missing,
                   "--exp-dir", data / "exp", "--model-size", "tiny", "--device", "cpu",
                   "--no-tensorboard", check=False, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count(f"BPE model {missing} not found") == 1, proc.stderr
    assert "run the BPE stage of prepare.sh" in proc.stderr
    assert "Traceback" not in proc.stderr
    log = next((data / "exp" / "log").glob("log-train-*.txt")).read_text()
    assert "training stopped by FileNotFoundError" in log and "Traceback" in log
