"""Shared fixtures. No test touches the network or a model hub."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
TEST_AUDIO = REPO / "tests" / "data"
TINY_HOURS = 0.05  # ~3 minutes of audio over the five parts


def run_cli(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run ``mvqkd ARGS`` in a subprocess with this interpreter; returns the completed process."""
    proc = subprocess.run([sys.executable, "-m", "mvqkd.cli", *map(str, args)],
                          capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"mvqkd {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """A tiny synthetic corpus; returns the folder holding ``LibriSpeech/``."""
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        pytest.fail("espeak-ng and sox are required (apt-get install -y espeak-ng sox)")
    from mvqkd.data.synth import synth_corpus

    out = tmp_path_factory.mktemp("corpus")
    synth_corpus(out, hours=TINY_HOURS, seed=0, num_jobs=2)
    return out


@pytest.fixture(scope="session")
def prepared_data(tiny_corpus, tmp_path_factory) -> Path:
    """``prepare.sh`` run on ``tiny_corpus`` (all five parts, BPE with 100 pieces); returns DATA dir.

    Layout: DATA/manifests, DATA/fbank/librispeech_cuts_<part>.jsonl.gz, DATA/lang_bpe_100/bpe.model.
    """
    data = tmp_path_factory.mktemp("data")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    subprocess.run(
        ["bash", str(REPO / "recipes/librispeech/prepare.sh"), "--corpus-dir", str(tiny_corpus),
         "--data-dir", str(data), "--vocab-size", "100",
         "--parts", "train-clean-360 train-clean-100 dev-clean test-clean test-other"],
        check=True, env=env, capture_output=True,
    )
    return data
