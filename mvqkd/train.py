"""The training loop of the transducer student (single process or DDP under torchrun).

``train(config)`` takes a :class:`TrainConfig`, an ``argparse.Namespace`` or a dict of the
same fields, and returns a summary dict (``history``: one dict per optimiser step with the
losses; ``valid``: per-epoch validation losses; ``final_step``).

What it does, in order:

- tokenizer, cuts, and :func:`mvqkd.data.dataset.prepare_training_cuts` (filters with
  logged counts, refuses missing indexes / bad frame counts / quantizer mismatches);
- model from a preset (``--model-size``) plus overrides; ``num_codebooks`` /
  ``codebook_size`` come from the manifest's ``codebook_indexes_info`` (``--kd mvq``),
  ``kd_dim`` from the embeddings (``--kd l1|l2|cosine``);
- resume from ``--start-epoch`` (file ``epoch-(E-1).pt``) or, by default, from the newest
  checkpoint in ``--exp-dir``: model, optimiser, scheduler, sampler position, RNGs;
- lhotse ``DynamicBucketingSampler``, SpecAugment (no time warp while distilling), AdamW
  with warmup (none with sigma-Reparam) and Eden-like decay, gradient clipping;
- NaN/Inf losses: the batch is skipped with a warning; more than ``--max-nan-batches`` in
  a row stops training;
- checkpoints every ``--save-every-n`` steps and at each epoch end, keeping the last
  ``--keep-last-k`` step checkpoints; tensorboard, ``EXP/log/log-train-*.txt``, tqdm.

Quantizer check: with ``--quantizer-id`` / ``--num-codebooks`` the manifest must match them;
without, the values of the first cut are the expectation and every cut must agree. When
resuming, the manifest must also match the ``codebook_indexes_info`` stored in the checkpoint.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch

from mvqkd.student.model import LOSS_KEYS
from mvqkd.training.config import TrainConfig
from mvqkd.training.monitor import TrainMonitor

logger = logging.getLogger(__name__)


def parse_overrides(items) -> dict:
    """``["num_layers=4", "dropout=0.2"]`` -> typed dict for TransducerConfig fields."""
    from mvqkd.student.config import TransducerConfig

    fields = {f.name: f for f in dataclasses.fields(TransducerConfig)}
    out = {}
    for item in items or []:
        key, sep, value = str(item).partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in fields:
            raise ValueError(
                f"--model-override {item!r}: expected KEY=VALUE with KEY one of {sorted(fields)}"
            )
        typ = str(fields[key].type)
        if value.lower() in ("none", "null") and "Optional" in typ:
            out[key] = None
        elif "bool" in typ:
            out[key] = value.lower() in ("1", "true", "yes")
        elif "int" in typ:
            out[key] = int(value)
        elif "float" in typ:
            out[key] = float(value)
        else:
            out[key] = value
    return out


def build_model_config(cfg: TrainConfig, vocab_size: int, stats):
    """TransducerConfig from the preset, the KD mode, the manifest info and overrides."""
    from mvqkd.student.config import preset_config

    kw = dict(
        sigma_reparam=cfg.sigma_reparam,
        distill_layer=cfg.distill_layer,
        ctc_loss_scale=cfg.ctc_loss_scale,
        codebook_loss_scale=cfg.codebook_loss_scale,
        codebook_loss=cfg.codebook_loss,
        kd_loss_scale=cfg.kd_loss_scale,
    )
    if cfg.kd == "mvq":
        info = stats.index_info
        kw.update(num_codebooks=int(info["num_codebooks"]),
                  codebook_size=int(info.get("codebook_size", 256)))
    elif cfg.kd in ("l1", "l2", "cosine"):
        kw.update(kd_mode=cfg.kd, kd_dim=int(stats.kd_dim), kd_normalize=cfg.kd_normalize)
    kw.update(parse_overrides(cfg.model_override))
    return preset_config(cfg.model_size, vocab_size, **kw)


def _valid_kd(path, kd) -> str:
    """The KD mode of the validation set: ``kd`` when its first cut carries the KD field,
    else ``none`` (validation then reports the RNN-T loss only, e.g. on plain dev fbank cuts)."""
    from lhotse import CutSet

    from mvqkd.data.dataset import kd_field

    fld = kd_field(kd)
    if fld is None or not Path(path).is_file():
        return kd
    first = next(iter(CutSet.from_file(path)), None)
    if first is not None and first.custom and first.custom.get(fld) is not None:
        return kd
    logger.info("--valid-cuts %s: no '%s' on its cuts; validation computes the RNN-T loss only",
                path, fld)
    return "none"


def _load_cuts(path, sp, cfg, name, expected=None, kd=None):
    from lhotse import CutSet

    from mvqkd.data.dataset import prepare_training_cuts

    if not Path(path).is_file():
        raise FileNotFoundError(f"--{name}-cuts: no manifest at {path}")
    expected = expected or {}
    kd = cfg.kd if kd is None else kd
    cuts, stats = prepare_training_cuts(
        CutSet.from_file(path), sp, kd=kd, skip_missing_indexes=cfg.skip_missing_indexes,
        quantizer_id=expected.get("quantizer_id", cfg.quantizer_id),
        num_codebooks=expected.get("num_codebooks", cfg.num_codebooks), name=name,
    )
    if kd in ("l1", "l2", "cosine"):
        stats.kd_dim = int(next(iter(cuts)).teacher_embeddings.shape[1])
    return cuts, stats


def _find_resume(cfg: TrainConfig):
    from mvqkd.student.checkpoint import latest_checkpoint

    exp = Path(cfg.exp_dir)
    if cfg.start_epoch is not None and cfg.start_epoch > 1:
        path = exp / f"epoch-{cfg.start_epoch - 1}.pt"
        if not path.is_file():
            raise FileNotFoundError(f"--start-epoch {cfg.start_epoch}: {path} does not exist")
        return path
    if cfg.start_epoch == 1:
        return None  # explicit fresh start
    return latest_checkpoint(exp)


def _check_resume_info(ckpt, stats, path):
    old = (ckpt.get("train_info") or {}).get("codebook_indexes_info")
    new = stats.index_info
    for key in ("quantizer_id", "num_codebooks"):
        if old and new and str(old.get(key)) != str(new.get(key)):
            raise ValueError(
                f"resume from {path}: it was trained with {key}={old.get(key)!r} but the "
                f"manifest has {key}={new.get(key)!r}; use a new --exp-dir"
            )


def _move_batch(batch, device):
    return {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}


def _forward(model, batch):
    return model(
        batch["features"], batch["feature_lens"], batch["tokens"],
        codebook_indexes=batch["codebook_indexes"],
        teacher_embeddings=batch["teacher_embeddings"], teacher_lens=batch["teacher_lens"],
    )


def validate(model, loader, device) -> dict:
    """Mean losses over ``loader`` (weighted by utterances), model in eval mode."""
    was_training = model.training
    model.eval()
    sums, n = {}, 0
    with torch.no_grad():
        for batch in loader:
            b = len(batch["cut_ids"])
            out = _forward(model, _move_batch(batch, device))
            for k in LOSS_KEYS:
                sums[k] = sums.get(k, 0.0) + float(out[k]) * b
            n += b
    model.train(was_training)
    return {k: v / max(1, n) for k, v in sums.items()}


def _make_loader(dataset, sampler, num_workers):
    return torch.utils.data.DataLoader(
        dataset, sampler=sampler, batch_size=None, num_workers=num_workers,
        # A private generator: creating the iterator must not consume the global torch RNG
        # (it would shift the RNG stream of a resumed run).
        generator=torch.Generator(),
        persistent_workers=False,
    )


def train(config) -> dict:
    """Train a student; see the module docstring. Returns a summary dict."""
    import numpy as np
    import random

    from mvqkd.data.dataset import KDDataset
    from mvqkd.data.tokenizer import load_bpe
    from mvqkd.data.specaug import SpecAugment
    from mvqkd.student import build_model
    from mvqkd.student.checkpoint import (
        get_rng_state, load_checkpoint_file, remove_old_step_checkpoints, save_checkpoint,
        set_rng_state, unwrap,
    )
    from mvqkd.training.distributed import (
        all_true, barrier, cleanup_distributed, setup_distributed,
    )
    from mvqkd.training.optim import build_optimizer
    from mvqkd.training.sampling import SnapshotSampler, build_sampler

    cfg = TrainConfig.from_any(config)
    dinfo = setup_distributed(cfg.device)
    exp = Path(cfg.exp_dir)
    exp.mkdir(parents=True, exist_ok=True)
    monitor = TrainMonitor(exp, dinfo, cfg.tensorboard)
    try:
        monitor.log_start(cfg)
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        random.seed(cfg.seed)

        sp = load_bpe(cfg.bpe_model)
        cuts, stats = _load_cuts(cfg.train_cuts, sp, cfg, "train")
        valid_cuts, valid_dataset = None, None
        if cfg.valid_cuts:
            expected = dict(stats.index_info or {})
            valid_kd = _valid_kd(cfg.valid_cuts, cfg.kd)
            valid_cuts, _ = _load_cuts(cfg.valid_cuts, sp, cfg, "valid", expected, kd=valid_kd)
            valid_dataset = KDDataset(sp, valid_kd, cfg.on_the_fly_feats)

        resume_path = _find_resume(cfg)
        ckpt = load_checkpoint_file(resume_path) if resume_path else None
        if ckpt is not None:
            _check_resume_info(ckpt, stats, resume_path)
            model_cfg_dict = ckpt["config"]
        else:
            model_cfg_dict = dataclasses.asdict(build_model_config(cfg, sp.get_piece_size(), stats))
        model = build_model(model_cfg_dict).to(dinfo.device)
        if ckpt is not None:
            model.load_state_dict(ckpt["model"])
        elif model_cfg_dict.get("kd_normalize"):
            from mvqkd.data.dataset import embedding_stats

            mean, std = embedding_stats(cuts)
            model.kd_head.set_target_stats(mean.to(dinfo.device), std.to(dinfo.device))
            logger.info("KD targets standardised: mean |mean| %.3f, std %.3f .. %.3f over %d dims",
                        float(mean.abs().mean()), float(std.min()), float(std.max()), len(std))
        n_params = sum(p.numel() for p in model.parameters())
        logger.info("model: %.2fM parameters, config %s", n_params / 1e6, model_cfg_dict)
        if dinfo.world_size > 1:
            model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[dinfo.device.index] if dinfo.device.type == "cuda" else None,
                find_unused_parameters=False,
            )
        warmup = 0 if model_cfg_dict.get("sigma_reparam") else cfg.warmup_steps
        optimizer, scheduler = build_optimizer(
            model, cfg.lr, cfg.weight_decay, warmup, cfg.lr_decay_steps
        )

        sampler = build_sampler(cuts, cfg.max_duration, True, cfg.seed, dinfo.world_size,
                                dinfo.rank, cfg.num_buckets)
        start_epoch, step = 1, 0
        if ckpt is not None:
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            step = int(ckpt["step"])
            if ckpt.get("epoch_done"):
                start_epoch = int(ckpt["epoch"]) + 1
            else:
                start_epoch = int(ckpt["epoch"])
                sd = dict(ckpt["sampler"])
                if int(sd["world_size"]) != dinfo.world_size:
                    raise ValueError(
                        f"resume from {resume_path}: saved with world size {sd['world_size']}, "
                        f"now {dinfo.world_size}; resume mid-epoch needs the same world size"
                    )
                sd["rank"] = dinfo.rank
                sampler.load_state_dict(sd)
            set_rng_state(ckpt["rng"][min(dinfo.rank, len(ckpt["rng"]) - 1)])
            logger.info("resumed from %s (epoch %d, step %d)", resume_path, start_epoch, step)
        else:
            # Different augmentation / dropout per rank; the model init above is shared.
            torch.manual_seed(cfg.seed + dinfo.rank)
        del ckpt

        distilling = cfg.kd != "none"
        specaug = SpecAugment(time_warp_factor=0 if distilling else cfg.time_warp_factor,
                              distilling=distilling) if cfg.spec_augment else None
        dataset = KDDataset(sp, cfg.kd, cfg.on_the_fly_feats)
        snap = SnapshotSampler(sampler)
        train_info = {"codebook_indexes_info": stats.index_info, "filter": dict(stats.dropped)}

        def save(path, epoch, epoch_done, sampler_state):
            rngs = [get_rng_state()]
            if dinfo.world_size > 1:
                gathered = [None] * dinfo.world_size
                torch.distributed.all_gather_object(gathered, rngs[0])
                rngs = gathered
            if dinfo.is_main:
                save_checkpoint(path, model=model, config=model_cfg_dict, optimizer=optimizer,
                                scheduler=scheduler, sampler=sampler_state, rng=rngs,
                                epoch=epoch, step=step, epoch_done=epoch_done,
                                train_info=train_info)
                logger.info("saved %s", path)
            barrier(dinfo)

        history, valid_hist, nan_run = [], [], 0
        stop = False
        for epoch in range(start_epoch, cfg.num_epochs + 1):
            sampler.set_epoch(epoch)
            model.train()
            monitor.start_epoch(epoch)
            for batch in _make_loader(dataset, snap, cfg.num_workers):
                sampler_state = snap.pop_state()
                batch = _move_batch(batch, dinfo.device)
                if specaug is not None:
                    batch["features"] = specaug(batch["features"], batch["feature_lens"])
                out = _forward(model, batch)
                loss = out["loss"]
                finite = all_true(bool(torch.isfinite(loss)), dinfo)
                optimizer.zero_grad(set_to_none=True)
                if finite:
                    loss.backward()
                    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                    finite = bool(torch.isfinite(grad_norm))  # same on all ranks after DDP
                if not finite:
                    nan_run += 1
                    logger.warning("non-finite loss or gradient at step %d (cuts %s); batch "
                                   "skipped (%d in a row)", step + 1, batch["cut_ids"][:4], nan_run)
                    optimizer.zero_grad(set_to_none=True)
                    if nan_run > cfg.max_nan_batches:
                        raise RuntimeError(
                            f"{nan_run} non-finite losses in a row (> --max-nan-batches "
                            f"{cfg.max_nan_batches}); stopping. Lower --lr or check the data."
                        )
                    continue
                nan_run = 0
                optimizer.step()
                scheduler.step()
                step += 1
                rec = {k: float(out[k].detach()) for k in LOSS_KEYS}
                rec.update(step=step, epoch=epoch, grad_norm=float(grad_norm),
                           cut_ids=list(batch["cut_ids"]),
                           lr=scheduler.get_last_lr()[0], batch_size=len(batch["cut_ids"]))
                history.append(rec)
                monitor.log_step(rec, out.get("attn_entropy"), cfg.log_interval)
                if cfg.save_every_n > 0 and step % cfg.save_every_n == 0:
                    save(exp / f"checkpoint-{step}.pt", epoch, False, sampler_state)
                    if dinfo.is_main:
                        remove_old_step_checkpoints(exp, cfg.keep_last_k)
                if cfg.max_steps is not None and step >= cfg.max_steps:
                    if not (cfg.save_every_n > 0 and step % cfg.save_every_n == 0):
                        save(exp / f"checkpoint-{step}.pt", epoch, False, sampler_state)
                    stop = True
                    break
            if stop:
                break
            monitor.end_epoch(epoch)
            if valid_cuts is not None:
                valid_hist.append(_run_validation(model, valid_dataset, valid_cuts, cfg, dinfo,
                                                  monitor, epoch, step))
            save(exp / f"epoch-{epoch}.pt", epoch, True, sampler.state_dict())
        return {"history": history, "valid": valid_hist, "final_step": step,
                "filter": dict(stats.dropped), "rank": dinfo.rank, "model": unwrap(model)}
    finally:
        monitor.close()
        cleanup_distributed(dinfo)


def _run_validation(model, valid_dataset, valid_cuts, cfg, dinfo, monitor, epoch, step):
    """Validation losses on rank 0 (other ranks wait); logged and returned."""
    from mvqkd.student.checkpoint import unwrap
    from mvqkd.training.distributed import barrier
    from mvqkd.training.sampling import build_sampler

    res = {}
    if dinfo.is_main:
        vs = build_sampler(valid_cuts, cfg.max_duration, False, cfg.seed, 1, 0, cfg.num_buckets,
                           drop_last=False)
        res = validate(unwrap(model), _make_loader(valid_dataset, vs, 0), dinfo.device)
        monitor.log_valid(epoch, step, res)
    barrier(dinfo)
    return res


__all__ = ["TrainConfig", "train", "validate", "parse_overrides", "build_model_config"]
