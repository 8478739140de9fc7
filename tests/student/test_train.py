"""The training loop on a tiny synthetic MVQ-KD set (CPU, a few seconds per run)."""

import logging
import os
import socket

import numpy as np
import pytest
import torch
from lhotse import CutSet
from lhotse.features.io import NumpyHdf5Writer
from lhotse.utils import fastcopy

from mvqkd.training.student import train
from mvqkd.data.synthetic import WORDS, make_synthetic_cuts, train_tiny_bpe


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("traindata")
    make_synthetic_cuts(d, num_cuts=8, min_duration=0.8, max_duration=1.4, num_codebooks=4,
                        codebook_size=16, embedding_dim=6)
    train_tiny_bpe([" ".join(WORDS)] * 3, d / "bpe", 30)
    return d


def _cfg(data, exp, **kw):
    cfg = dict(train_cuts=str(data / "cuts.jsonl.gz"), bpe_model=str(data / "bpe" / "bpe.model"),
               exp_dir=str(exp), kd="mvq", model_size="tiny", num_epochs=3, max_duration=4.0,
               num_workers=0, save_every_n=3, warmup_steps=3, lr=3e-3, tensorboard=False,
               device="cpu")
    cfg.update(kw)
    return cfg


def test_tiny_run_lowers_both_losses_and_writes_outputs(data, tmp_path):
    exp = tmp_path / "exp"
    res = train(_cfg(data, exp, valid_cuts=str(data / "cuts.jsonl.gz"), num_epochs=4,
                     tensorboard=True))
    valid = res["valid"]
    assert len(valid) == 4
    assert valid[-1]["rnnt"] < 0.8 * valid[0]["rnnt"]
    assert valid[-1]["codebook"] < valid[0]["codebook"]
    hist = res["history"]
    assert hist[-1]["step"] == res["final_step"] == len(hist)
    names = sorted(p.name for p in exp.glob("*.pt"))
    assert names == sorted([f"epoch-{e}.pt" for e in range(1, 5)]
                           + [f"checkpoint-{s}.pt" for s in range(3, len(hist) + 1, 3)])
    log = next((exp / "log").glob("log-train-*.txt")).read_text()
    assert "attention entropy layer 2" in log and "validation" in log
    assert list((exp / "tensorboard").glob("events.out.tfevents.*"))


def test_resumed_run_equals_uninterrupted(data, tmp_path):
    full = train(_cfg(data, tmp_path / "a"))["history"]
    assert len(full) >= 5
    # Interrupted after step 3 (mid-epoch 2: checkpoint-3.pt), resumed automatically.
    part1 = train(_cfg(data, tmp_path / "b", max_steps=3))["history"]
    assert [h["step"] for h in part1] == [1, 2, 3] and (tmp_path / "b/checkpoint-3.pt").exists()
    part2 = train(_cfg(data, tmp_path / "b"))["history"]
    resumed = part1 + part2
    assert [h["step"] for h in resumed] == [h["step"] for h in full]
    assert [h["cut_ids"] for h in resumed] == [h["cut_ids"] for h in full]
    for a, b in zip(full, resumed):
        for k in ("loss", "rnnt", "codebook"):
            assert a[k] == pytest.approx(b[k], rel=1e-6, abs=1e-6), (a["step"], k)


@pytest.mark.parametrize("kd", ["cosine", "none"])
def test_float_kd_and_baseline_modes(data, tmp_path, kd):
    # the full loss: the total is then exactly the RNN-T loss plus the KD terms
    res = train(_cfg(data, tmp_path / kd, kd=kd, num_epochs=1, max_steps=2, save_every_n=0, rnnt_loss="full"))
    hist = res["history"]
    assert len(hist) == 2 and all(h["codebook"] == 0 for h in hist)
    if kd == "cosine":
        assert all(h["kd"] > 0 for h in hist)
        assert res["model"].cfg.kd_mode == "cosine" and res["model"].cfg.kd_dim == 6
    else:
        assert all(h["kd"] == 0 for h in hist) and res["model"].cfg.num_codebooks == 0
        assert all(h["loss"] == h["rnnt"] for h in hist)
    # Stopped by max_steps inside epoch 1: a step checkpoint to resume from, no epoch file.
    assert sorted(p.name for p in (tmp_path / kd).glob("*.pt")) == ["checkpoint-2.pt"]


def test_validation_on_cuts_without_indexes_reports_rnnt_only(data, tmp_path, caplog):
    plain = tmp_path / "plain.jsonl.gz"
    CutSet.from_cuts(fastcopy(c, custom={}) for c in CutSet.from_file(data / "cuts.jsonl.gz")
                     ).to_file(plain)
    with caplog.at_level(logging.INFO, logger="mvqkd"):
        res = train(_cfg(data, tmp_path / "v", num_epochs=1, valid_cuts=str(plain), rnnt_loss="full"))
    assert "validation computes the RNN-T loss only" in caplog.text
    (valid,) = res["valid"]
    assert valid["rnnt"] > 0 and valid["codebook"] == 0 and valid["loss"] == valid["rnnt"]
    assert all(h["codebook"] > 0 for h in res["history"])  # training still distils


def _validated_epochs(exp):
    log = next((exp / "log").glob("log-train-*.txt")).read_text()
    return [int(line.split(" epoch ")[1].split()[0]) for line in log.splitlines() if " validation: " in line]


def test_valid_every_picks_the_epochs_and_changes_no_model(data, tmp_path):
    runs = {}
    for every in (1, 2, 0):
        exp = tmp_path / f"every{every}"
        res = train(_cfg(data, exp, valid_cuts=str(data / "cuts.jsonl.gz"), num_epochs=3,
                         valid_every=every))
        runs[every] = (res, _validated_epochs(exp))
    assert runs[1][1] == [1, 2, 3] and runs[2][1] == [2, 3] and runs[0][1] == [3]
    assert [len(r["valid"]) for r, _ in runs.values()] == [3, 2, 1]
    assert runs[0][0]["valid"][-1] == runs[1][0]["valid"][-1]  # the last epoch's losses
    ref = runs[1][0]["model"].state_dict()
    for every in (2, 0):  # validation draws no random numbers: the same weights, bit for bit
        got = runs[every][0]["model"].state_dict()
        assert all(torch.equal(ref[k], got[k]) for k in ref)
    with pytest.raises(ValueError, match="--valid-every must be >= 0"):
        train(_cfg(data, tmp_path / "bad", valid_every=-1))


@pytest.mark.parametrize("sigma", [False, True])
def test_warmup_only_without_sigma_reparam(data, tmp_path, sigma):
    res = train(_cfg(data, tmp_path / str(sigma), kd="none", sigma_reparam=sigma, max_steps=2,
                     warmup_steps=4, lr_decay_steps=100.0, lr=1e-3))
    assert res["model"].cfg.sigma_reparam is sigma
    # LR after s optimiser steps (the one step s+1 uses): lr * warmup(s) * ((s^2 + D^2) / D^2) ** -0.25.
    decay = [((s * s + 100.0 ** 2) / 100.0 ** 2) ** -0.25 for s in (1, 2)]
    warm = [1.0, 1.0] if sigma else [0.1 + 0.9 * 1 / 4, 0.1 + 0.9 * 2 / 4]
    for h, w, d in zip(res["history"], warm, decay):
        assert h["lr"] == pytest.approx(1e-3 * w * d, rel=1e-9)


def test_quantizer_mismatch_refused_before_training(data, tmp_path):
    with pytest.raises(ValueError, match="quantizer_id='q-synthetic' does not match"):
        train(_cfg(data, tmp_path / "q", quantizer_id="some-other-quantizer"))
    with pytest.raises(ValueError, match="num_codebooks=4 does not match"):
        train(_cfg(data, tmp_path / "q", num_codebooks=8))
    assert not list((tmp_path / "q").glob("*.pt"))


def _nan_cuts(data, out, which):
    """Copy of the manifest whose cuts in ``which`` have NaN features."""
    cuts = []
    with NumpyHdf5Writer(out / f"nanfeats{len(which)}") as w:
        for i, cut in enumerate(CutSet.from_file(data / "cuts.jsonl.gz")):
            if i in which:
                feats = cut.load_features()
                feats[:] = np.nan
                key = w.write(cut.id, feats)
                cut = fastcopy(cut, features=fastcopy(
                    cut.features, storage_type=w.name, storage_path=str(w.storage_path),
                    storage_key=key))
            cuts.append(cut)
    path = out / f"nan_cuts{len(which)}.jsonl.gz"
    CutSet.from_cuts(cuts).to_file(path)
    return path


def test_nan_batches_skipped_then_training_stops(data, tmp_path, caplog):
    # Every cut NaN: every batch is skipped, and the run stops after > 1 in a row.
    all_nan = _nan_cuts(data, tmp_path, set(range(8)))
    with pytest.raises(RuntimeError, match=r"2 non-finite losses in a row \(> --max-nan-batches 1\)"):
        train(_cfg(data, tmp_path / "n1", train_cuts=str(all_nan), max_nan_batches=1))
    # One NaN cut: its batches are skipped with a warning, the others train normally.
    one_nan = _nan_cuts(data, tmp_path, {0})
    with caplog.at_level(logging.WARNING, logger="mvqkd"):
        res = train(_cfg(data, tmp_path / "n2", train_cuts=str(one_nan), num_epochs=2))
    skipped = caplog.text.count("non-finite loss or gradient")
    assert skipped >= 1
    assert all(np.isfinite(h["loss"]) for h in res["history"])
    assert all("utt0" not in h["cut_ids"] for h in res["history"])
    for p in res["model"].parameters():
        assert torch.isfinite(p).all()


def _ddp_worker(rank, world_size, port, cfg, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world_size),
                      RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    res = train(cfg)
    torch.save({"params": {k: v.clone() for k, v in res["model"].state_dict().items()},
                "history": res["history"]}, os.path.join(out_dir, f"rank{rank}.pt"))


def test_two_process_ddp_on_gloo(data, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = _cfg(data, tmp_path / "ddp", num_epochs=1, max_duration=4.0, save_every_n=1)
    torch.multiprocessing.spawn(_ddp_worker, args=(2, port, cfg, str(tmp_path)), nprocs=2,
                                join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    assert len(r0["history"]) == len(r1["history"]) >= 1
    # Each rank trained on its own batches...
    ids0 = {c for h in r0["history"] for c in h["cut_ids"]}
    ids1 = {c for h in r1["history"] for c in h["cut_ids"]}
    assert ids0 and ids1 and not ids0 & ids1
    # ...and after the optimiser steps both hold the same parameters.
    for k, v in r0["params"].items():
        assert torch.equal(v, r1["params"][k]), k
    # The rank-0 checkpoint holds the same parameters, and one RNG state per rank.
    ck = torch.load(tmp_path / "ddp" / "epoch-1.pt", weights_only=True)
    assert len(ck["rng"]) == 2
    for k, v in r0["params"].items():
        assert torch.equal(v, ck["model"][k]), k


def test_cli_options_map_onto_train_config():
    import dataclasses

    from mvqkd.cli import build_parser
    from mvqkd.training.config import TrainConfig

    args = build_parser().parse_args([
        "train", "--train-cuts", "c.jsonl.gz", "--bpe-model", "b.model", "--exp-dir", "e",
        "--kd", "none", "--model-override", "num_layers=3", "--no-spec-augment",
        "--distill-layer", "2", "--skip-missing-indexes", "--kd-normalize"])
    want = dataclasses.replace(TrainConfig(), train_cuts="c.jsonl.gz", bpe_model="b.model",
                               exp_dir="e", kd="none", model_override=["num_layers=3"],
                               spec_augment=False, distill_layer=2, skip_missing_indexes=True,
                               kd_normalize=True)
    assert TrainConfig.from_any(args) == want


def test_sampler_choice_and_sharding(data):
    from lhotse.dataset import DynamicBucketingSampler, SimpleCutSampler

    from mvqkd.data.sampling import build_sampler

    cuts = CutSet.from_file(data / "cuts.jsonl.gz").to_eager()
    # Buckets need >= 4 full batches each: 8 short cuts are too few, 4 copies of them are not.
    assert isinstance(build_sampler(cuts, 4.0, True, 0, 1, 0), SimpleCutSampler)
    big = build_sampler(cuts.repeat(times=4, preserve_id=False).to_eager(), 4.0, True, 0, 1, 0)
    assert isinstance(big, DynamicBucketingSampler)
    small = build_sampler(cuts.subset(first=3), 4.0, False, 0, 1, 0, drop_last=False)
    assert isinstance(small, SimpleCutSampler)
    assert sorted(c.id for b in small for c in b) == sorted(c.id for c in cuts.subset(first=3))
    for b in big:
        assert sum(c.duration for c in b) <= 4.0
    # Two ranks: disjoint batches, same number of batches.
    r = [list(build_sampler(cuts, 3.0, True, 0, 2, k)) for k in (0, 1)]
    assert len(r[0]) == len(r[1]) >= 1
    assert not {c.id for b in r[0] for c in b} & {c.id for b in r[1] for c in b}


def test_l2_kd_normalize_standardises_targets_and_resumes(data, tmp_path):
    from mvqkd.student.checkpoint import load_checkpoint_file

    cuts = CutSet.from_file(data / "cuts.jsonl.gz")
    frames = np.concatenate([c.load_custom("teacher_embeddings") for c in cuts]).astype(np.float64)
    exp = tmp_path / "norm"
    cfg = _cfg(data, exp, kd="l2", kd_normalize=True, num_epochs=1, save_every_n=2)
    res = train({**cfg, "max_steps": 2})
    head = res["model"].kd_head
    assert res["model"].cfg.kd_normalize and head.normalize
    # the buffers hold the statistics of every training frame (numpy over all cuts)
    np.testing.assert_allclose(head.target_mean.numpy(), frames.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(head.target_std.numpy(), frames.std(0), rtol=1e-5)
    ckpt = load_checkpoint_file(exp / "checkpoint-2.pt")
    assert torch.equal(ckpt["model"]["kd_head.target_mean"], head.target_mean)
    # resuming keeps the saved statistics (restored from the checkpoint, not recomputed)
    resumed = train(cfg)
    assert resumed["history"][0]["step"] == 3
    assert torch.equal(resumed["model"].kd_head.target_std, head.target_std)
    # with the option off (--no-kd-normalize) there are no statistics and the raw targets
    # are regressed
    plain = train(_cfg(data, tmp_path / "plain", kd="l2", kd_normalize=False, num_epochs=1,
                       max_steps=1, save_every_n=0))
    assert not plain["model"].cfg.kd_normalize and not hasattr(plain["model"].kd_head, "target_mean")
