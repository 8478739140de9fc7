"""The recipe scripts quote every path: prepare.sh and distill.sh run with spaces in the
corpus, data and output folders; a changed input re-runs the stage that reads it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from lhotse import CutSet

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "librispeech"


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    return subprocess.run(["bash", str(RECIPE / script), *args], env=env, capture_output=True, text=True)


@pytest.mark.slow
def test_prepare_and_distill_with_spaces_in_every_path(tiny_corpus, tmp_path):
    corpus = tmp_path / "my corpus"
    shutil.copytree(tiny_corpus, corpus)
    data, vq = tmp_path / "data dir", tmp_path / "vq dir"
    parts = "train-clean-100 dev-clean"
    proc = _run("prepare.sh", "--corpus-dir", str(corpus), "--data-dir", str(data), "--parts", parts,
                "--vocab-size", "60", "--bpe-parts", "train-clean-100")
    assert proc.returncode == 0, proc.stderr[-3000:]
    cuts = CutSet.from_file(data / "fbank" / "librispeech_cuts_train-clean-100.jsonl.gz")
    assert len(cuts) > 0 and (data / "lang_bpe_60" / "bpe.model").is_file()
    proc = _run("distill.sh", "--data-dir", str(data), "--vq-dir", str(vq), "--random-teacher", "true",
                "--layer", "2", "--num-codebooks", "2", "--codebook-size", "16", "--quantizer-iters", "1",
                "--quantizer-utts", "5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = CutSet.from_file(vq / "librispeech_cuts_train-clean-100.jsonl.gz")
    assert [c.id for c in out] == [c.id for c in cuts] and "OK: " in proc.stdout
    assert "RANDOM-INIT" in proc.stdout  # the random teacher is never silent

    # more audio in a part: its manifests and fbank are redone, the other part is left alone
    src = next((corpus / "LibriSpeech" / "dev-clean").rglob("*.flac"))
    extra = src.with_name(src.stem[:-4] + "9999.flac")
    shutil.copy(src, extra)
    trans = next(src.parent.glob("*.trans.txt"))
    trans.write_text(trans.read_text() + f"{extra.stem} EXTRA WORDS\n")
    proc = _run("prepare.sh", "--corpus-dir", str(corpus), "--data-dir", str(data), "--parts", parts,
                "--vocab-size", "60", "--bpe-parts", "train-clean-100", "--stage", "1", "--stop-stage", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "dev-clean changed since its manifests were written" in proc.stdout
    assert "train-clean-100 changed" not in proc.stdout
    dev = CutSet.from_file(data / "fbank" / "librispeech_cuts_dev-clean.jsonl.gz")
    assert any(c.id.startswith(extra.stem) for c in dev)


def test_recipes_refuse_what_they_cannot_do(tmp_path):
    other = tmp_path / "my recordings"
    other.mkdir()
    (other / "notes.txt").write_text("not LibriSpeech")
    proc = _run("prepare.sh", "--corpus-dir", str(other), "--data-dir", str(tmp_path / "d"))
    assert proc.returncode == 1 and "pass --download true" in proc.stderr
    proc = _run("prepare.sh", "--corpus-dir", str(other), "--data-dir", str(tmp_path / "d"),
                "--download", "true")
    assert proc.returncode == 1 and "holds other data" in proc.stderr
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]  # nothing downloaded into it
    proc = _run("distill.sh", "--data-dir", str(tmp_path / "d"), "--layer", "2")
    assert proc.returncode == 1 and "--teacher-dir is required" in proc.stderr
