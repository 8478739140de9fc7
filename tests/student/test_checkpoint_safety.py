"""Checkpoints run no code: a pickle payload is refused everywhere a checkpoint is read
(decode, average-checkpoints, resuming training, resuming the teacher's fine-tuning), the
payload never runs, and genuine checkpoints of mvqkd < 0.2 convert through
``mvqkd upgrade-checkpoint`` only."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from mvqkd.cli import main as cli
from mvqkd.student import build_model, preset_config
from mvqkd.student.checkpoint import CheckpointError, load_checkpoint_file
from mvqkd.training.checkpoint import rng_state, save_checkpoint, set_rng_state, upgrade_checkpoint

CFG = preset_config("tiny", vocab_size=20).to_dict()


class Payload:
    """Unpickling this runs ``touch MARKER``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def payload_checkpoint(path, marker, **fields):
    """A checkpoint-looking dict with a code-running object inside, written by plain torch.save."""
    model = build_model(CFG)
    torch.save({"model": model.state_dict(), "config": CFG, "epoch": 1, "step": 5,
                "epoch_done": True, "rng": [Payload(marker)], **fields}, path)
    return path


def old_format_checkpoint(path):
    """What mvqkd < 0.2 wrote: numpy / python RNG states as pickled objects."""
    model = build_model(CFG)
    rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    torch.save({"model": model.state_dict(), "config": CFG, "epoch": 1, "step": 5, "epoch_done": True,
                "rng": [rng], "optimizer": {}, "scheduler": {}}, path)
    return model, rng


def test_payload_refused_by_the_loader_and_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = payload_checkpoint(tmp_path / "epoch-1.pt", marker)
    with pytest.raises(CheckpointError, match="refusing to load .*posix.system|refusing to load .*os.system"):
        load_checkpoint_file(path)
    assert not marker.exists()
    # sanity: the payload is real (plain unpickling would run it)
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_payload_refused_by_decode_average_and_resume(tmp_path, caplog):
    marker = tmp_path / "pwned"
    exp = tmp_path / "exp"
    exp.mkdir()
    payload_checkpoint(exp / "epoch-1.pt", marker)
    cuts = tmp_path / "c.jsonl.gz"
    from lhotse import CutSet

    CutSet.from_cuts([]).to_file(cuts)
    bpe = tmp_path / "bpe.model"
    bpe.write_bytes(b"x")
    assert cli(["decode", "--exp-dir", str(exp), "--cuts", f"t={cuts}", "--bpe-model", str(bpe)]) == 2
    assert cli(["average-checkpoints", "--exp-dir", str(exp), "--out", str(tmp_path / "a.pt")]) == 1
    # training resumes from the newest checkpoint of --exp-dir: it must refuse, not run it
    from mvqkd.training.setup import find_resume
    from mvqkd.training.config import TrainConfig

    with pytest.raises(CheckpointError, match="refusing"):
        find_resume(TrainConfig(exp_dir=str(exp)))
    assert caplog.text.count("refusing to load") == 2
    assert not marker.exists()


def test_payload_teacher_state_refused(prepared_data, tmp_path):
    from lhotse import CutSet

    from mvqkd.training.finetune import STATE_FILE, finetune_teacher

    marker = tmp_path / "pwned"
    out = tmp_path / "teacher"
    out.mkdir()
    torch.save({"model": {}, "rng": Payload(marker), "epoch": 1, "step": 1}, out / STATE_FILE)
    cuts = CutSet.from_file(prepared_data / "fbank/librispeech_cuts_dev-clean.jsonl.gz").subset(first=2)
    with pytest.raises(CheckpointError, match="refusing"):
        finetune_teacher(cuts, cuts, out, size="tiny", max_steps=1)
    assert not marker.exists()
    assert "refusing" in next((out / "log").glob("log-train-*.txt")).read_text()  # logged to the file


def test_old_format_refused_then_upgraded(tmp_path, capsys):
    path = tmp_path / "epoch-1.pt"
    model, old_rng = old_format_checkpoint(path)
    with pytest.raises(CheckpointError, match="mvqkd upgrade-checkpoint"):
        load_checkpoint_file(path)
    assert cli(["upgrade-checkpoint", str(path)]) == 0
    ckpt = load_checkpoint_file(path)  # weights-only now
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in ckpt["model"].items())
    # the converted RNG states restore exactly what the old file held
    set_rng_state(ckpt["rng"][0])
    assert np.random.get_state()[1].tolist() == old_rng["numpy"][1].tolist()
    assert random.getstate() == old_rng["python"]
    # a payload is not "old format": upgrade refuses it too
    marker = tmp_path / "pwned"
    bad = payload_checkpoint(tmp_path / "bad.pt", marker)
    with pytest.raises(CheckpointError, match="not written by mvqkd"):
        upgrade_checkpoint(bad)
    assert not marker.exists()


def test_rng_state_round_trip_is_weights_only(tmp_path):
    np.random.seed(3)
    random.seed(4)
    torch.manual_seed(5)
    state = rng_state()
    a = (np.random.rand(), random.random(), torch.rand(1).item())
    save_checkpoint(tmp_path / "c.pt", model={}, rng=state, step=0)
    loaded = torch.load(tmp_path / "c.pt", weights_only=True)
    set_rng_state(loaded["rng"])
    assert (np.random.rand(), random.random(), torch.rand(1).item()) == a
