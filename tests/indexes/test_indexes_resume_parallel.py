"""extract survives SIGKILL and gives the same result with local workers / torchrun ranks."""

from __future__ import annotations

import gzip
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from mvqkd.cli import main as cli
from tests.indexes.indexes_helpers import LAYER


def _args(cuts, teacher, quantizer, out, *extra):
    return ["extract", "--cuts", str(cuts), "--teacher", str(teacher), "--layer", str(LAYER),
            "--quantizer", str(quantizer), "--out-dir", str(out), "--shard-size", "1",
            "--device", "cpu", *map(str, extra)]


def _snapshot(out: Path) -> tuple[str, dict, str]:
    """(manifest text with the out dir masked, arrays by cut id, failure report)."""
    text = gzip.open(out / "cuts.jsonl.gz", "rt").read().replace(str(out), "OUT")
    arrays = {}
    for f in sorted((out / "shards").glob("*.h5")):
        with h5py.File(f) as h:
            arrays.update({k: h[k][:] for k in h})
    return text, arrays, (out / "failed_cuts.jsonl").read_text()


def _same(a, b):
    assert a[0] == b[0] and a[2] == b[2]
    assert sorted(a[1]) == sorted(b[1])
    for k in a[1]:
        np.testing.assert_array_equal(a[1][k], b[1][k])


@pytest.fixture(scope="module")
def reference(cuts_path, tiny_teacher, quantizer_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "out"
    assert cli(_args(cuts_path, tiny_teacher, quantizer_path, out)) == 0
    return _snapshot(out)


def test_sigkill_then_rerun_gives_identical_result(reference, cuts_path, tiny_teacher, quantizer_path, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "mvqkd.cli", *_args(cuts_path, tiny_teacher, quantizer_path, out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "shards" / "00000.done").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = sorted((out / "shards").glob("*.done"))
    assert 1 <= len(done) < 8, "the run must be killed part-way"
    assert not (out / "cuts.jsonl.gz").exists()
    assert cli(_args(cuts_path, tiny_teacher, quantizer_path, out)) == 0
    assert not list((out / "shards").glob("*.tmp*"))
    _same(_snapshot(out), reference)


def test_rerun_with_other_settings_is_refused(reference, cuts_path, tiny_teacher, quantizer_path, tmp_path):
    out = tmp_path / "out"
    assert cli(_args(cuts_path, tiny_teacher, quantizer_path, out)) == 0
    args = _args(cuts_path, tiny_teacher, quantizer_path, out)
    args[args.index("--shard-size") + 1] = "2"
    assert cli(args) == 2


@pytest.mark.slow
def test_local_workers_and_torchrun_ranks_merge_to_the_same_manifest(
        reference, cuts_path, tiny_teacher, quantizer_path, tmp_path):
    out = tmp_path / "workers"
    assert cli(_args(cuts_path, tiny_teacher, quantizer_path, out, "--num-workers", "2")) == 0
    _same(_snapshot(out), reference)
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    out = tmp_path / "ranks"
    subprocess.run([torchrun, "--nproc_per_node", "2", "--master_port", "29517", "-m", "mvqkd.cli",
                    *_args(cuts_path, tiny_teacher, quantizer_path, out)],
                   check=True, capture_output=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    _same(_snapshot(out), reference)
