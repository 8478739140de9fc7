"""Extraction never mixes, never forgets, never crashes on bad input or a full disk:
resumes with another quantizer or teacher are refused, --retry-failed recovers cuts whose
audio became readable, bad cut ids are all listed up front, a second writer is refused
without HDF5 file locking, and a file-size limit ends in a clear error after which the
resume completes identically."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from lhotse import CutSet

from mvqkd.indexes.run import check_cut_ids, run_extraction
from mvqkd.indexes.store import OutDirLock
from mvqkd.indexes.targets import INDEXES, TargetSpec
from tests.indexes.indexes_helpers import LAYER, REPO


def _spec(teacher, quantizer):
    return TargetSpec(INDEXES, str(teacher), LAYER, str(quantizer))


def _arrays(out: Path) -> dict:
    arrays = {}
    for f in sorted((out / "shards").glob("*.h5")):
        with h5py.File(f) as h:
            arrays.update({k: h[k][:] for k in h})
    return arrays


@pytest.fixture
def copies(tmp_path, tiny_teacher, quantizer_path, cuts_path):
    """Private copies of the teacher and quantizer (the tests change them in place)."""
    teacher, quantizer = tmp_path / "teacher", tmp_path / "q.pt"
    shutil.copytree(tiny_teacher, teacher)
    shutil.copy(quantizer_path, quantizer)
    return teacher, quantizer


def _reopen_one_shard(out: Path):
    (out / "shards" / "00001.done").unlink()


def test_resume_with_another_quantizer_is_refused(copies, cuts_path, tmp_path):
    import torch

    from mvqkd.quantizer import load_quantizer, train_quantizer

    teacher, quantizer = copies
    out = tmp_path / "out"
    run_extraction(cuts_path, _spec(teacher, quantizer), out, shard_size=3, device="cpu")
    old = load_quantizer(quantizer).id
    train_quantizer(torch.randn(400, 64), 4, 16, iters=1, seed=1, progress=False).save(quantizer)
    new = load_quantizer(quantizer).id
    _reopen_one_shard(out)
    with pytest.raises(ValueError, match=f"quantizer_id: was '{old}', now '{new}'"):
        run_extraction(cuts_path, _spec(teacher, quantizer), out, shard_size=3, device="cpu")
    manifest = CutSet.from_file(out / "cuts.jsonl.gz")
    assert {c.codebook_indexes_info["quantizer_id"] for c in manifest} == {old}  # nothing mixed


def test_resume_with_another_teacher_is_refused(copies, cuts_path, tmp_path):
    from mvqkd.teacher.make import make_teacher

    teacher, quantizer = copies
    out = tmp_path / "out"
    run_extraction(cuts_path, _spec(teacher, quantizer), out, shard_size=3, device="cpu")
    make_teacher(teacher, "tiny", seed=7)  # same folder and name, other weights
    _reopen_one_shard(out)
    with pytest.raises(ValueError, match="teacher_hash: was '[0-9a-f]{16}', now '[0-9a-f]{16}'"):
        run_extraction(cuts_path, _spec(teacher, quantizer), out, shard_size=3, device="cpu")


def test_retry_failed_recovers_cuts_whose_audio_became_readable(copies, audio_dir, tmp_path):
    from mvqkd.indexes.make_cuts import make_cuts

    teacher, quantizer = copies
    audio = tmp_path / "audio"
    shutil.copytree(audio_dir, audio)
    cuts = tmp_path / "cuts.jsonl.gz"
    make_cuts(audio, cuts)
    clean = run_extraction(cuts, _spec(teacher, quantizer), tmp_path / "clean", shard_size=3, device="cpu")
    hidden = tmp_path / "utt3.wav"
    shutil.move(audio / "utt3.wav", hidden)  # unreadable for now
    out = tmp_path / "out"
    first = run_extraction(cuts, _spec(teacher, quantizer), out, shard_size=3, device="cpu")
    assert first.num_failed == 1
    shutil.move(hidden, audio / "utt3.wav")
    again = run_extraction(cuts, _spec(teacher, quantizer), out, shard_size=3, device="cpu")
    assert again.num_failed == 1  # a plain rerun keeps the finished shards as they are
    retried = run_extraction(cuts, _spec(teacher, quantizer), out, shard_size=3, device="cpu",
                             retry_failed=True)
    assert retried.num_failed == 0 and retried.num_written == clean.num_written
    a, b = _arrays(tmp_path / "clean"), _arrays(out)
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)


def test_bad_cut_ids_are_all_listed_before_any_work(copies, cuts_path, tmp_path):
    bad_ids = ["a", "a/b", "..", ".", "x/", " padded", "dup", "dup"]
    with pytest.raises(ValueError) as err:
        check_cut_ids(bad_ids, "--cuts x")
    msg = str(err.value)
    assert "6 cut id(s)" in msg
    for cid in ["'a/b'", "'..'", "'.'", "'x/'", "' padded'", "'dup': duplicate"]:
        assert cid in msg, cid
    cuts = CutSet.from_file(cuts_path)
    renamed = CutSet.from_cuts(c.with_id(i) for c, i in zip(cuts, ["ok", "sub/dir", "..", "ok2"]))
    path = tmp_path / "bad.jsonl.gz"
    renamed.to_file(path)
    teacher, quantizer = copies
    with pytest.raises(ValueError, match=r"2 cut id\(s\) cannot be stored"):
        run_extraction(path, _spec(teacher, quantizer), tmp_path / "out", device="cpu")
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_second_writer_refused_without_hdf5_locking(copies, cuts_path, tmp_path):
    teacher, quantizer = copies
    out = tmp_path / "out"
    env = dict(os.environ, HDF5_USE_FILE_LOCKING="FALSE")
    args = [sys.executable, "-m", "mvqkd.cli", "extract", "--cuts", str(cuts_path), "--teacher",
            str(teacher), "--layer", str(LAYER), "--quantizer", str(quantizer), "--out-dir", str(out),
            "--device", "cpu"]
    with OutDirLock(out):  # another extraction is running (this process holds the lock)
        proc = subprocess.run(args, env=env, capture_output=True, text=True)
    assert proc.returncode == 2
    assert f"is being written by another extraction (process {os.getpid()}" in proc.stderr
    assert not (out / "shards").exists()
    # a lock left behind by a process that died is taken over
    (out / ".lock").write_text(json.dumps({"pid": 2 ** 22 + 12345, "host": os.uname().nodename}))
    proc = subprocess.run(args, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "taking over the lock" in proc.stderr and not (out / ".lock").exists()


def test_file_size_limit_ends_with_a_clear_error_and_resume_is_identical(copies, cuts_path, tmp_path):
    teacher, quantizer = copies
    ref, out = tmp_path / "ref", tmp_path / "out"
    extract = (f"{sys.executable} -m mvqkd.cli extract --cuts '{cuts_path}' --teacher '{teacher}' "
               f"--layer {LAYER} --quantizer '{quantizer}' --shard-size 2 --device cpu --out-dir")
    assert subprocess.run(f"{extract} '{ref}'", shell=True, capture_output=True).returncode == 0
    # 2 KiB per file: plan.json fits, the shards' HDF5 images (~2.4 KB) do not
    proc = subprocess.run(["bash", "-c", f"ulimit -f 2; {extract} '{out}'"], capture_output=True, text=True,
                          cwd=REPO)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])  # not a crash (139/153)
    assert "cannot write" in proc.stderr and "File too large" in proc.stderr
    assert not list((out / "shards").glob(".tmp-*"))  # no half file left behind
    proc = subprocess.run(f"{extract} '{out}'", shell=True, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    a, b = _arrays(ref), _arrays(out)
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)
    ref_text = gzip.open(ref / "cuts.jsonl.gz", "rt").read().replace(str(ref), "OUT")
    assert gzip.open(out / "cuts.jsonl.gz", "rt").read().replace(str(out), "OUT") == ref_text
