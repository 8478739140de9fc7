"""The new-corpus path end to end with `mvqkd` commands only (recipes/mycorpus/run.sh), run
from a working directory that is neither the data's nor the repository's: a folder of the
real recordings in tests/data (FLAC, WAV at 16 and 22.05 kHz, MP3 at 48 kHz, stereo 8 kHz
WAV, Opus) and a Kaldi data dir with a 22.05 kHz file and a sox pipe entry, through
indexes, a tiny student and decoding."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from lhotse import CutSet

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
TEXTS = {
    "2412-153948-0000": "IF THE READER WILL EXCUSE ME I WILL SAY NOTHING OF MY ANTECEDENTS NOR OF THE "
                        "CIRCUMSTANCES WHICH LED ME TO LEAVE MY NATIVE COUNTRY THE NARRATIVE WOULD BE "
                        "TEDIOUS TO HIM AND PAINFUL TO MYSELF",
    "LJ002-0020": "IN EIGHTEEN THIRTEEN",
    "LJ002-0035": "EIGHT THE PRESS YARD",
}


def _audio_folder(root: Path) -> Path:
    d = root / "recordings"
    (d / "more").mkdir(parents=True)
    for name in ("2412-153948-0000.flac", "LJ002-0020.wav", "common_voice_en_651325.mp3"):
        shutil.copy(DATA / name, d / name)
    for name in ("LJ002-0035.wav", "stereo.wav"):
        shutil.copy(DATA / name, d / "more" / name)
    (d / "text").write_text(
        f"2412-153948-0000 {TEXTS['2412-153948-0000']}\nLJ002-0020 {TEXTS['LJ002-0020']}\n"
        f"more_LJ002-0035 {TEXTS['LJ002-0035']}\n")
    return d


def _kaldi_dir(root: Path) -> Path:
    d = root / "kaldi_dev"
    d.mkdir()
    (d / "wav.scp").write_text(
        f"lj20 {DATA / 'LJ002-0020.wav'}\n"
        f"libri sox {DATA / '2412-153948-0000.flac'} -t wav - |\n")
    (d / "segments").write_text("libri-a libri 0.0 5.5\nlibri-b libri 5.5 11.6\nlj20-1 lj20 0 -1\n")
    (d / "text").write_text(f"libri-a IF THE READER WILL EXCUSE ME\nlibri-b I WILL SAY NOTHING\n"
                            f"lj20-1 {TEXTS['LJ002-0020']}\n")
    (d / "utt2spk").write_text("libri-a s1\nlibri-b s1\nlj20-1 s2\n")
    return d


def _run(args, cwd, timeout=1200):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", OMP_NUM_THREADS="1")
    return subprocess.run(["bash", str(REPO / "recipes/mycorpus/run.sh"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


TINY = ["--vocab-size", "40", "--random-teacher", "true", "--layer", "2", "--num-codebooks", "4",
        "--codebook-size", "16", "--quantizer-iters", "1", "--quantizer-utts", "10", "--num-epochs", "1",
        "--max-duration", "30", "--model-size", "tiny", "--num-jobs", "1",
        "--student-args", "--num-workers 0 --warmup-steps 2 --no-tensorboard --average-period 1"]


FOLDER_IDS = ["2412-153948-0000", "LJ002-0020", "common_voice_en_651325", "more_LJ002-0035", "more_stereo"]
KALDI_IDS = ["libri-a", "libri-b", "lj20-1"]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("sox") is None, reason="the Kaldi pipe entry runs sox")
@pytest.mark.parametrize("train_from", ["folder", "kaldi"])
def test_new_corpus_recipe_from_audio_folder_and_kaldi_dir(tmp_path, train_from):
    data_root = tmp_path / "corpus"
    data_root.mkdir()
    folder, kaldi = _audio_folder(data_root), _kaldi_dir(data_root)
    train, dev = (folder, kaldi) if train_from == "folder" else (kaldi, folder)
    train_ids, dev_ids = (FOLDER_IDS, KALDI_IDS) if train_from == "folder" else (KALDI_IDS, FOLDER_IDS)
    work = tmp_path / "work"
    work.mkdir()
    proc = _run(["--corpus", "myset", "--train", str(train), "--dev", str(dev), *TINY,
                 "--decode-epoch", "1", "--decode-avg", "1", "--use-averaged-model", "true"], cwd=work)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    for part, ids in (("train", train_ids), ("dev", dev_ids)):
        fbank = {c.id: c for c in CutSet.from_file(work / f"data/fbank/myset_cuts_{part}.jsonl.gz")}
        assert sorted(fbank) == ids
        for c in fbank.values():  # 16 kHz mono features of every file, absolute paths
            assert c.features.sampling_rate == 16000 and Path(c.features.storage_path).is_absolute()
            assert abs(c.num_frames - round(c.duration * 100)) <= 2
    vq = CutSet.from_file(work / "data/vq/myset_cuts_train.jsonl.gz")
    assert sorted(c.id for c in vq) == train_ids  # indexes for every train cut
    for c in vq:
        codes = c.load_codebook_indexes()
        assert codes.shape[1] == 4 and codes.dtype == np.uint8
    # the Kaldi dir: the 22.05 kHz file and the pipe entry, cut by segments
    kpart = "train" if train_from == "kaldi" else "dev"
    raw = {c.id: c for c in CutSet.from_file(work / f"data/manifests/myset_cuts_{kpart}.jsonl.gz")}
    assert raw["lj20-1"].sampling_rate == 22050 and raw["libri-a"].sampling_rate == 16000
    assert raw["libri-b"].recording.sources[0].type == "command"
    fb = {c.id: c for c in CutSet.from_file(work / f"data/fbank/myset_cuts_{kpart}.jsonl.gz")}
    assert fb["lj20-1"].recording.transforms[0].source_sampling_rate == 22050  # resampled for fbank
    out = work / "exp/mvq/greedy_search"
    assert len(list(out.glob("wer-summary-dev-epoch-1-avg-1-*-use-averaged-model.txt"))) == 1, os.listdir(out)
    recogs = next(out.glob("recogs-dev-*.txt")).read_text()
    for cut_id in dev_ids:
        assert f"{cut_id}:\t" in recogs
    # re-running is a no-op for the data stages
    again = _run(["--corpus", "myset", "--train", str(train), "--dev", str(dev), *TINY, "--stop-stage", "1"],
                 cwd=work)
    assert again.returncode == 0 and again.stdout.count("already done") == 5, again.stdout


def test_test_parts_may_have_spaces_in_their_paths(tmp_path):
    """--test "NAME=SOURCE NAME2=SOURCE2": a new entry starts at a space followed by NAME=, so
    "eval=/data/my eval" is one part; an entry without NAME= is refused, naming it."""
    folder = _audio_folder(tmp_path / "corpus")
    spaced = tmp_path / "corpus" / "my eval set"
    spaced.mkdir()
    shutil.copy(DATA / "LJ002-0035.wav", spaced / "a b.wav")
    work = tmp_path / "work"
    work.mkdir()
    parts = f"  eval={spaced}   other={folder / 'more'} "
    proc = _run(["--train", str(folder), "--dev", str(folder), "--test", parts, "--stop-stage", "0"], cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifests = work / "data/manifests"
    assert [c.id for c in CutSet.from_file(manifests / "mycorpus_cuts_eval.jsonl.gz")] == ["a_b"]
    assert sorted(c.id for c in CutSet.from_file(manifests / "mycorpus_cuts_other.jsonl.gz")) == [
        "LJ002-0035", "stereo"]
    proc = _run(["--train", str(folder), "--dev", str(folder), "--test", str(spaced), "--stop-stage", "0"],
                cwd=work)
    assert proc.returncode == 1 and "--test entries are NAME=SOURCE" in proc.stderr
    proc = _run(["--train", str(folder), "--dev", str(folder), "--test", f"x={tmp_path}/no such", "--stop-stage",
                 "0"], cwd=work)
    assert proc.returncode == 1 and f"--test x=...: not found: {tmp_path}/no such" in proc.stderr
