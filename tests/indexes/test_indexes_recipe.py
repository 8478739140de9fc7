"""recipes/librispeech/distill.sh end to end on the tiny synthetic corpus."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from lhotse import CutSet

from mvqkd.conventions import num_frames
from tests.indexes.indexes_helpers import REPO


@pytest.mark.slow
def test_distill_recipe_on_tiny_synthetic_corpus(prepared_data, tmp_path):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    vq = tmp_path / "vq"
    cmd = ["bash", str(REPO / "recipes/librispeech/distill.sh"), "--data-dir", str(prepared_data),
           "--vq-dir", str(vq), "--random-teacher", "true", "--layer", "2", "--num-codebooks", "4", "--codebook-size", "16", "--quantizer-iters", "1",
           "--quantizer-utts", "10"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for stage in range(5):
        assert f"Stage {stage}:" in proc.stdout
    fbank = CutSet.from_file(prepared_data / "fbank" / "librispeech_cuts_train-clean-100.jsonl.gz")
    out = CutSet.from_file(vq / "librispeech_cuts_train-clean-100.jsonl.gz")
    assert [c.id for c in out] == [c.id for c in fbank]  # every cut, same order
    for cut in list(out)[:3]:
        feats, codes = cut.load_features(), cut.load_codebook_indexes()
        assert codes.dtype == np.uint8 and codes.shape == (num_frames(cut.duration), 4)
        assert abs(feats.shape[0] - 2 * codes.shape[0]) <= 2  # 100 Hz fbank next to 50 Hz indexes
    assert (vq / "failed_cuts_train-clean-100.jsonl").read_text() == ""
    assert "OK: " in proc.stdout
    # a finished stage is a no-op on re-run
    rerun = subprocess.run(cmd + ["--stage", "1", "--stop-stage", "3"], env=env, capture_output=True, text=True)
    assert rerun.returncode == 0 and rerun.stdout.count("already done") == 3
