"""icefall's averaged model (mvqkd train --average-period, decode --use-averaged-model),
checked against the brute-force mean of the weights saved after every step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mvqkd.data.synthetic import WORDS, make_synthetic_cuts, train_tiny_bpe
from mvqkd.student.checkpoint import (CheckpointError, averaged_model_between, load_checkpoint_file,
                                      load_model_for_decoding, step_checkpoints)
from mvqkd.training.student import train


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("avgdata")
    make_synthetic_cuts(d, num_cuts=10, min_duration=0.6, max_duration=1.8, num_codebooks=4,
                        codebook_size=16)
    train_tiny_bpe([" ".join(WORDS)] * 3, d / "bpe", 30)
    return d


def _cfg(d, exp, **kw):
    cfg = dict(train_cuts=str(d / "cuts.jsonl.gz"), bpe_model=str(d / "bpe" / "bpe.model"),
               exp_dir=str(exp), kd="mvq", model_size="tiny", num_epochs=2, max_duration=3.0,
               num_workers=0, save_every_n=1, keep_last_k=1000, warmup_steps=2, lr=3e-3,
               tensorboard=False, device="cpu")
    return {**cfg, **kw}


def brute_mean(exp, first: int, last: int, period: int) -> dict:
    """Mean of the models saved after steps first < s <= last with s a multiple of period."""
    models = [load_checkpoint_file(p)["model"] for s, p in step_checkpoints(exp)
              if first < s <= last and s % period == 0]
    assert models
    return {k: sum(m[k].double() for m in models) / len(models) for k in models[0]
            if models[0][k].is_floating_point()}


@pytest.fixture(scope="module")
def averaged_run(data, tmp_path_factory):
    exp = tmp_path_factory.mktemp("avg") / "exp"
    train(_cfg(data, exp, average_period=2))
    return exp


def _assert_close(got: dict, want: dict) -> None:
    for k, v in want.items():
        torch.testing.assert_close(got[k].double(), v, rtol=1e-5, atol=1e-6, msg=k)


@pytest.mark.parametrize("span", ["epoch 2 alone", "from the first step"])
def test_interval_mean_equals_the_brute_force_mean(averaged_run, span):
    e1, e2 = (load_checkpoint_file(averaged_run / f"epoch-{e}.pt") for e in (1, 2))
    assert e2["model_avg_count"] == e2["step"] // 2 and e2["average_period"] == 2
    start = averaged_run / "epoch-1.pt" if span == "epoch 2 alone" else None
    got = averaged_model_between(start, averaged_run / "epoch-2.pt")
    want = brute_mean(averaged_run, e1["step"] if start else 0, e2["step"], 2)
    _assert_close(got, want)
    assert all(got[k].dtype == e2["model"][k].dtype for k in got)


def test_averaging_leaves_the_trained_weights_unchanged(data, averaged_run, tmp_path):
    train(_cfg(data, tmp_path / "plain", save_every_n=0, average_period=0))
    plain = load_checkpoint_file(tmp_path / "plain" / "epoch-2.pt")
    averaged = load_checkpoint_file(averaged_run / "epoch-2.pt")
    assert "model_avg" not in plain
    assert plain["model"].keys() == averaged["model"].keys()
    assert all(torch.equal(plain["model"][k], averaged["model"][k]) for k in plain["model"])


def test_resumed_average_equals_uninterrupted(data, averaged_run, tmp_path):
    exp = tmp_path / "part"
    train(_cfg(data, exp, average_period=2, max_steps=3))  # killed after step 3
    train(_cfg(data, exp, average_period=2))
    a = load_checkpoint_file(exp / "epoch-2.pt")
    b = load_checkpoint_file(averaged_run / "epoch-2.pt")
    assert a["model_avg_count"] == b["model_avg_count"]
    _assert_close(a["model_avg"], {k: v for k, v in b["model_avg"].items() if v.is_floating_point()})
    with pytest.raises(ValueError, match="--average-period 2"):
        train(_cfg(data, exp, average_period=3, num_epochs=3))


def test_decoding_loads_the_averaged_model_and_explains_what_is_missing(data, averaged_run, tmp_path):
    model, _ = load_model_for_decoding(averaged_run, epoch=2, avg=1, use_averaged_model=True)
    want = averaged_model_between(averaged_run / "epoch-1.pt", averaged_run / "epoch-2.pt")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in want.items())
    plain, _ = load_model_for_decoding(averaged_run, epoch=2, avg=1)
    assert not torch.equal(plain.state_dict()["joiner.output_linear.weight"],
                           model.state_dict()["joiner.output_linear.weight"])
    train(_cfg(data, tmp_path / "plain", save_every_n=0, average_period=0, num_epochs=1))
    with pytest.raises(CheckpointError, match=r"epoch-1\.pt holds no averaged model: train with --average-period"):
        load_model_for_decoding(tmp_path / "plain", epoch=1, avg=1, use_averaged_model=True)
    with pytest.raises(ValueError, match="avg must be <= epoch"):
        load_model_for_decoding(averaged_run, epoch=2, avg=3, use_averaged_model=True)
    with pytest.raises(ValueError, match="cannot be used with --checkpoint"):
        load_model_for_decoding(None, checkpoint=averaged_run / "epoch-2.pt", use_averaged_model=True)


def test_decode_writes_icefall_suffixed_files_for_the_averaged_model(data, averaged_run):
    from mvqkd.decode.config import DecodeConfig
    from mvqkd.decode.decode import run_decode

    cuts = [("syn", str(data / "cuts.jsonl.gz"))]
    run_decode(DecodeConfig(cuts=cuts, exp_dir=str(averaged_run), epoch=2, avg=1, use_averaged_model=True))
    run_decode(DecodeConfig(cuts=cuts, exp_dir=str(averaged_run), epoch=2, avg=1))
    names = sorted(p.name for p in (averaged_run / "greedy_search").glob("wer-summary-*"))
    assert names == ["wer-summary-syn-epoch-2-avg-1-context-2-max-sym-per-frame-1-use-averaged-model.txt",
                     "wer-summary-syn-epoch-2-avg-1-context-2-max-sym-per-frame-1.txt"]
    with pytest.raises(ValueError, match="cannot be used with --checkpoint"):
        DecodeConfig(cuts=cuts, checkpoint=str(averaged_run / "epoch-2.pt"), use_averaged_model=True).check()


def test_sigma_reparam_running_mean_gets_exact_spectral_vectors(data, tmp_path):
    """The running mean of a sigma-Reparam student: weights as the brute-force mean, and
    u, v the top singular vectors of the mean weight (the mean of the tracked vectors is not
    a unit vector; mvqkd.student.sigma_reparam.exact_spectral_vectors)."""
    from mvqkd.student.sigma_reparam import SigmaReparamLinear

    exp = tmp_path / "sr"
    train(_cfg(data, exp, average_period=2, sigma_reparam=True))
    e2 = load_checkpoint_file(exp / "epoch-2.pt")
    got = averaged_model_between(None, exp / "epoch-2.pt")
    want = brute_mean(exp, 0, e2["step"], 2)
    vectors = {k for k in want if k.endswith((".u", ".v"))}
    assert vectors
    _assert_close(got, {k: v for k, v in want.items() if k not in vectors})
    model, _ = load_model_for_decoding(exp, epoch=2, avg=2, use_averaged_model=True)
    layers = [m for m in model.modules() if isinstance(m, SigmaReparamLinear)]
    assert len(layers) == len(vectors) // 2
    for m in layers:
        true = torch.linalg.matrix_norm(m.weight.detach(), 2).item()
        assert m.spectral_norm().item() == pytest.approx(true, rel=1e-5)


def test_average_checkpoints_writes_the_averaged_model_that_decode_uses(data, averaged_run, tmp_path):
    """``mvqkd average-checkpoints --use-averaged-model``: one file with the weights of
    ``decode --use-averaged-model`` (brute-force mean of the per-step weights), which
    ``load_model_for_decoding(checkpoint=...)`` reads back."""
    from mvqkd.cli import main as cli

    out = tmp_path / "avg.pt"
    assert cli(["average-checkpoints", "--exp-dir", str(averaged_run), "--epoch", "2", "--avg", "1",
                "--use-averaged-model", "--out", str(out)]) == 0
    saved = load_checkpoint_file(out)
    assert saved["use_averaged_model"] and saved["averaged"] == [str(averaged_run / "epoch-1.pt"),
                                                                 str(averaged_run / "epoch-2.pt")]
    e1, e2 = (load_checkpoint_file(averaged_run / f"epoch-{e}.pt") for e in (1, 2))
    _assert_close(saved["model"], brute_mean(averaged_run, e1["step"], e2["step"], 2))
    model, _ = load_model_for_decoding(None, checkpoint=out)
    want, _ = load_model_for_decoding(averaged_run, epoch=2, avg=1, use_averaged_model=True)
    assert all(torch.equal(v, want.state_dict()[k]) for k, v in model.state_dict().items())
    train(_cfg(data, tmp_path / "plain", save_every_n=0, average_period=0, num_epochs=1))
    assert cli(["average-checkpoints", "--exp-dir", str(tmp_path / "plain"), "--use-averaged-model",
                "--out", str(tmp_path / "x.pt")]) == 1
    assert not (tmp_path / "x.pt").exists()


def test_export_onnx_exports_the_averaged_model(averaged_run, tmp_path):
    """``mvqkd export-onnx --use-averaged-model``: the exported encoder and joiner compute the
    averaged model's outputs (onnxruntime against torch), not the last epoch's."""
    ort = pytest.importorskip("onnxruntime")
    from mvqkd.cli import main as cli

    onnx_dir = tmp_path / "onnx"
    assert cli(["export-onnx", "--exp-dir", str(averaged_run), "--epoch", "2", "--avg", "1",
                "--use-averaged-model", "--out-dir", str(onnx_dir)]) == 0
    averaged, _ = load_model_for_decoding(averaged_run, epoch=2, avg=1, use_averaged_model=True)
    plain, _ = load_model_for_decoding(averaged_run, epoch=2, avg=1)
    g = torch.Generator().manual_seed(0)
    x, x_lens = torch.randn(2, 120, 80, generator=g), torch.tensor([120, 90])
    enc = ort.InferenceSession(str(onnx_dir / "encoder.onnx")).run(
        None, {"x": x.numpy(), "x_lens": x_lens.numpy()})[0]
    with torch.no_grad():
        want = [m.joiner.encoder_proj(m.encode(x, x_lens)[0]).numpy() for m in (averaged, plain)]
    np.testing.assert_allclose(enc, want[0], rtol=1e-4, atol=1e-4)
    assert np.abs(enc - want[1]).max() > 1e-2  # the last epoch's weights would be caught
    assert cli(["export-onnx", "--checkpoint", str(averaged_run / "epoch-2.pt"), "--use-averaged-model",
                "--out-dir", str(tmp_path / "bad")]) == 2


def test_transcribe_selects_checkpoints_like_decode(data, averaged_run, tmp_path, capsys, caplog):
    """``mvqkd transcribe --model EXP --epoch E --avg A --use-averaged-model``: the weights of
    ``decode`` with the same options; a checkpoint file or an ONNX folder refuses them."""
    from lhotse import CutSet

    from mvqkd.cli import main as cli
    from mvqkd.decode.transcribe import load_recogniser

    model, _ = load_recogniser(averaged_run, epoch=2, avg=1, use_averaged_model=True)
    want = averaged_model_between(averaged_run / "epoch-1.pt", averaged_run / "epoch-2.pt")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in want.items())
    audio = next(iter(CutSet.from_file(data / "cuts.jsonl.gz"))).recording.sources[0].source
    assert cli(["transcribe", "--model", str(averaged_run), "--epoch", "2", "--use-averaged-model", audio]) == 0
    assert capsys.readouterr().out.startswith(f"{audio}\t")
    assert cli(["transcribe", "--model", str(averaged_run / "epoch-2.pt"), "--avg", "2", audio]) == 2
    assert "a checkpoint file is used as it is" in caplog.text
    assert cli(["export-onnx", "--exp-dir", str(averaged_run), "--out-dir", str(tmp_path / "onnx")]) == 0
    assert cli(["transcribe", "--model", str(tmp_path / "onnx"), "--epoch", "2", audio]) == 2
    assert "is an ONNX export: checkpoint options do not apply" in caplog.text
    # a folder that does not exist is named as missing, with the folder it was looked for in
    assert cli(["transcribe", "--model", str(tmp_path / "nope"), "--use-averaged-model", audio]) == 2
    assert f"{tmp_path / 'nope'}: no such experiment folder (relative to" in caplog.text
