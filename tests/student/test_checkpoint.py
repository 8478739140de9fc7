"""Checkpoint files, averaging, selection and loading for decoding."""

import pytest
import torch

from mvqkd.cli import main as cli_main
from mvqkd.student import build_model, preset_config
from mvqkd.student.checkpoint import average_checkpoints, load_model_for_decoding, select_checkpoints
from mvqkd.training.checkpoint import latest_checkpoint, remove_old_step_checkpoints, save_checkpoint

CFG = preset_config("tiny", vocab_size=20, num_codebooks=2, codebook_size=8).to_dict()


@pytest.fixture()
def exp(tmp_path):
    """Three epoch files and four step files, each from a differently seeded model."""
    for e in (1, 2, 3):
        torch.manual_seed(e)
        save_checkpoint(tmp_path / f"epoch-{e}.pt", model=build_model(CFG), config=CFG,
                        epoch=e, step=10 * e, epoch_done=True)
    for s in (5, 10, 15, 20):
        torch.manual_seed(100 + s)
        save_checkpoint(tmp_path / f"checkpoint-{s}.pt", model=build_model(CFG), config=CFG,
                        epoch=1 + s // 10, step=s, epoch_done=False)
    return tmp_path


def _state(path):
    return torch.load(path, weights_only=True)["model"]


def test_average_is_elementwise_mean(exp):
    paths = [exp / "epoch-2.pt", exp / "epoch-3.pt"]
    avg = average_checkpoints(paths)
    a, b = _state(paths[0]), _state(paths[1])
    for k, v in avg.items():
        if v.is_floating_point():
            assert torch.allclose(v, (a[k] + b[k]) / 2, atol=1e-7), k
        else:
            assert torch.equal(v, b[k]), k


def test_selection_rules(exp):
    names = lambda ps: [p.name for p in ps]  # noqa: E731
    assert names(select_checkpoints(exp, epoch=3, avg=2)) == ["epoch-2.pt", "epoch-3.pt"]
    assert names(select_checkpoints(exp, avg=1)) == ["epoch-3.pt"]
    assert names(select_checkpoints(exp, iteration=15, avg=2)) == ["checkpoint-10.pt",
                                                                   "checkpoint-15.pt"]
    with pytest.raises(FileNotFoundError, match="epoch files 0..3"):
        select_checkpoints(exp, epoch=3, avg=4)
    with pytest.raises(FileNotFoundError, match="missing"):
        select_checkpoints(exp, epoch=5, avg=1)
    with pytest.raises(FileNotFoundError, match="no checkpoint-STEP.pt with STEP <= 4: is it"):
        select_checkpoints(exp, iteration=4)
    (exp / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty: no epoch-E.pt or checkpoint-STEP.pt: is it the"):
        select_checkpoints(exp / "empty")
    assert latest_checkpoint(exp).name == "epoch-3.pt"  # highest step (30)
    (exp / "epoch-3.pt").unlink()
    # epoch-2.pt and checkpoint-20.pt are both at step 20: the epoch file (written after
    # the step file, and marking the epoch as finished) wins.
    assert latest_checkpoint(exp).name == "epoch-2.pt"


def test_keep_last_k(exp):
    removed = remove_old_step_checkpoints(exp, keep_last=2)
    assert sorted(p.name for p in removed) == ["checkpoint-10.pt", "checkpoint-5.pt"]
    assert sorted(p.name for p in exp.glob("checkpoint-*.pt")) == ["checkpoint-15.pt",
                                                                   "checkpoint-20.pt"]
    assert len(list(exp.glob("epoch-*.pt"))) == 3


def test_load_model_for_decoding_and_cli(exp, tmp_path):
    model, cfg = load_model_for_decoding(exp, epoch=3, avg=2)
    assert cfg.to_dict() == CFG and not model.training
    want = average_checkpoints([exp / "epoch-2.pt", exp / "epoch-3.pt"])
    for k, v in model.state_dict().items():
        assert torch.equal(v, want[k]), k
    out = tmp_path / "avg.pt"
    rc = cli_main(["average-checkpoints", "--exp-dir", str(exp), "--epoch", "3", "--avg", "2",
                   "--out", str(out)])
    assert rc == 0
    saved = torch.load(out, weights_only=True)
    assert saved["config"] == CFG
    for k, v in want.items():
        assert torch.equal(saved["model"][k], v), k
