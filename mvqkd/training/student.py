"""Training the transducer student (single process or DDP under torchrun).

``train(config)`` takes a :class:`TrainConfig`, an ``argparse.Namespace`` or a dict of the
same fields, and returns a summary dict (``history``: one dict per optimiser step with the
losses; ``valid``: the validation losses of the epochs ``--valid-every`` picks; ``final_step``; ``model``).

Named steps, in order:

1. :func:`mvqkd.training.setup.prepare_data`: tokenizer and checked cuts;
2. :func:`build_or_resume`: the model from a preset (or from the checkpoint it resumes:
   ``--start-epoch`` or, by default, the newest checkpoint in ``--exp-dir``), AdamW with an
   Eden-like schedule, the sampler, and on resume the optimiser, scheduler, sampler
   position and RNG states;
3. :func:`train_epochs`: SpecAugment (no time warp while distilling), the shared loop of
   :mod:`mvqkd.training.loop` (non-finite batches skipped, gradient clipping, budgets in
   epochs / ``--max-steps``, wall clock only with ``--time-budget``), step checkpoints
   every ``--save-every-n`` steps (the newest ``--keep-last-k`` kept), an epoch checkpoint
   and the validation losses after each epoch (``--valid-every``: every N-th and the last).

Logs: ``EXP/log/log-train-*.txt`` (fatal errors included), tensorboard, periodic lines.
Checkpoints (``weights_only``-safe, docs/FORMATS.md) also carry the BPE model.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mvqkd.conventions import CODEBOOK_INDEXES, TEACHER_EMBEDDINGS, info_field
from mvqkd.student.model import LOSS_KEYS
from mvqkd.training.config import TrainConfig
from mvqkd.training.monitor import TrainMonitor
from mvqkd.training.setup import (TrainData, build_model_config, check_resume_info, decode_indexes,
                                  find_resume, prepare_data)

logger = logging.getLogger(__name__)


@dataclass
class Run:
    """The trainable state of one run (fresh or resumed)."""

    model: torch.nn.Module  # possibly DDP-wrapped
    model_config: dict
    optimizer: torch.optim.Optimizer
    scheduler: object
    sampler: object
    first_sampler: object = None  # --sorta-grad: epoch 1 from the shortest cuts up
    start_epoch: int = 1
    step: int = 0
    averager: object = None  # --average-period: RunningAverage of the weights (rank 0)

    def sampler_for(self, epoch: int):
        return self.first_sampler if epoch == 1 and self.first_sampler is not None else self.sampler


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def move_batch(batch: dict, device) -> dict:
    return {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}


def forward(model, batch: dict, step: int | None = None) -> dict:
    """The student's losses on a collated :class:`~mvqkd.data.dataset.KDDataset` batch
    (``step``: the optimiser step, for the pruned loss's warm-up; None when evaluating)."""
    return model(
        batch["features"], batch["feature_lens"], batch["tokens"],
        codebook_indexes=batch[CODEBOOK_INDEXES],
        teacher_embeddings=batch[TEACHER_EMBEDDINGS], teacher_lens=batch["teacher_lens"],
        step=step,
    )


def amp_context(amp: str, device):
    """``(autocast context factory, GradScaler or None)`` for ``--amp none|bf16|fp16``."""
    import contextlib
    import functools

    if amp == "none":
        return contextlib.nullcontext, None
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None
    return functools.partial(torch.autocast, device_type=device.type, dtype=dtype), scaler


def make_loader(dataset, sampler, num_workers: int):
    return torch.utils.data.DataLoader(
        dataset, sampler=sampler, batch_size=None, num_workers=num_workers,
        # A private generator: creating the iterator must not consume the global torch RNG
        # (it would shift the RNG stream of a resumed run).
        generator=torch.Generator(), persistent_workers=False,
    )


def validate(model, loader, device) -> dict:
    """Mean losses over ``loader`` (weighted by utterances), model in eval mode."""
    was_training = model.training
    model.eval()
    sums, n = {}, 0
    with torch.no_grad():
        for batch in loader:
            if batch is None:
                continue
            b = len(batch["cut_ids"])
            out = forward(model, move_batch(batch, device))
            for k in LOSS_KEYS:
                sums[k] = sums.get(k, 0.0) + float(out[k]) * b
            n += b
    model.train(was_training)
    return {k: v / max(1, n) for k, v in sums.items()}


def _set_kd_stats(model, cuts, device, quantizer=None) -> None:
    """Per-dimension statistics of the regression targets: the stored float embeddings, or
    the quantizer's reconstructions of the indexes (``--quantizer``)."""
    from mvqkd.data.dataset import array_stats, embedding_stats

    if quantizer is None:
        mean, std = embedding_stats(cuts)
    else:
        mean, std = array_stats((quantizer.decode(c.load_custom(CODEBOOK_INDEXES)) for c in cuts),
                                "decoded codebook-index")
    model.kd_head.set_target_stats(mean.to(device), std.to(device))
    logger.info("KD targets standardised: mean |mean| %.3f, std %.3f .. %.3f over %d dims",
                float(mean.abs().mean()), float(std.min()), float(std.max()), len(std))


def _init_label_heads(model, model_cfg: dict, data: TrainData, device) -> None:
    """What a fresh model's distillation heads take from the data: the standardisation of
    the regression targets, the codebook head's codewords or codeword-neighbour table."""
    if model_cfg.get("kd_normalize"):
        _set_kd_stats(model, data.cuts, device, data.quantizer)
    if model_cfg.get("codebook_geometry_dim"):
        model.codebook_head.set_codewords(data.quantizer.codebooks.to(device))
        logger.info("codebook head scores the codewords of quantizer %s", data.quantizer.id)
    temperature = float(model_cfg.get("codebook_smoothing_temperature") or 0.0)
    if temperature > 0:
        from mvqkd.quantizer import codeword_neighbours

        model.codebook_head.set_neighbours(
            codeword_neighbours(data.quantizer.codebooks, temperature).to(device))
        logger.info("codebook targets smoothed over codeword neighbours (temperature %g, "
                    "quantizer %s)", temperature, data.quantizer.id)


def _restore(ckpt: dict, run: Run, dinfo, path) -> None:
    """Optimiser, scheduler, sampler position and RNG states from a checkpoint."""
    from mvqkd.training.checkpoint import set_rng_state
    from mvqkd.training.optim import load_optimizer_state

    load_optimizer_state(run.optimizer, ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    run.step = int(ckpt["step"])
    if ckpt.get("epoch_done"):
        run.start_epoch = int(ckpt["epoch"]) + 1
    else:
        run.start_epoch = int(ckpt["epoch"])
        sd = dict(ckpt["sampler"])
        if int(sd["world_size"]) != dinfo.world_size:
            raise ValueError(f"resume from {path}: saved with world size {sd['world_size']}, "
                             f"now {dinfo.world_size}; resume mid-epoch needs the same world size")
        sd["rank"] = dinfo.rank
        run.sampler_for(run.start_epoch).load_state_dict(sd)
    set_rng_state(ckpt["rng"][min(dinfo.rank, len(ckpt["rng"]) - 1)])
    logger.info("resumed from %s (epoch %d, step %d)", path, run.start_epoch, run.step)


def build_or_resume(cfg: TrainConfig, data: TrainData, dinfo) -> Run:
    """A fresh model, or the one of the checkpoint this run resumes (see the module doc)."""
    from mvqkd.data.sampling import build_sampler, curriculum_sampler
    from mvqkd.student import build_model
    from mvqkd.student.checkpoint import load_checkpoint_file
    from mvqkd.training.optim import build_optimizer

    path = find_resume(cfg)
    ckpt = load_checkpoint_file(path) if path else None
    if ckpt is not None:
        check_resume_info(ckpt, data.stats, path)
        model_cfg = ckpt["config"]
    else:
        model_cfg = dataclasses.asdict(build_model_config(cfg, data.sp.get_piece_size(), data.stats))
    model = build_model(model_cfg).to(dinfo.device)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
    else:
        _init_label_heads(model, model_cfg, data, dinfo.device)
    logger.info("model: %.2fM parameters, config %s",
                sum(p.numel() for p in model.parameters()) / 1e6, model_cfg)
    if dinfo.world_size > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dinfo.device.index] if dinfo.device.type == "cuda" else None)
    warmup = 0 if model_cfg.get("sigma_reparam") else cfg.warmup_steps
    optimizer, scheduler = build_optimizer(model, cfg.lr, cfg.weight_decay, warmup,
                                           cfg.lr_decay_steps)
    sampler = build_sampler(data.cuts, cfg.max_duration, True, cfg.seed, dinfo.world_size,
                            dinfo.rank, cfg.num_buckets)
    first = (curriculum_sampler(data.cuts, cfg.max_duration, dinfo.world_size, dinfo.rank)
             if cfg.sorta_grad else None)
    run = Run(model, model_cfg, optimizer, scheduler, sampler, first)
    if ckpt is not None:
        _restore(ckpt, run, dinfo, path)
    else:
        torch.manual_seed(cfg.seed + dinfo.rank)  # per-rank augmentation / dropout
    if cfg.average_period > 0 and dinfo.is_main:
        run.averager = _averager(cfg, model, ckpt, path)
    return run


def _averager(cfg: TrainConfig, model, ckpt: dict | None, path):
    """The running average of ``--average-period``, continued from the resumed checkpoint."""
    from mvqkd.training.averaging import RunningAverage
    from mvqkd.training.checkpoint import unwrap

    if ckpt is not None and "model_avg" in ckpt:
        if int(ckpt.get("average_period", cfg.average_period)) != cfg.average_period:
            raise ValueError(f"resume from {path}: its averaged model samples every "
                             f"{ckpt['average_period']} steps, not --average-period {cfg.average_period}; "
                             f"pass --average-period {ckpt['average_period']}")
        return RunningAverage(unwrap(model), cfg.average_period, ckpt)
    if ckpt is not None:
        logger.warning("resume from %s: it holds no averaged model; the average starts at step %d "
                       "(--use-averaged-model can only decode intervals after it)", path, int(ckpt["step"]))
    return RunningAverage(unwrap(model), cfg.average_period)


class Saver:
    """Writes the run's checkpoints (rank 0; every rank contributes its RNG state)."""

    def __init__(self, cfg: TrainConfig, run: Run, data: TrainData, dinfo):
        from mvqkd.training.checkpoint import bpe_entry

        self.exp, self.cfg, self.run, self.dinfo = Path(cfg.exp_dir), cfg, run, dinfo
        self.train_info = {info_field(CODEBOOK_INDEXES): data.stats.index_info,
                           "filter": dict(data.stats.dropped)}
        self.bpe = bpe_entry(cfg.bpe_model)
        self.last_step_saved = -1

    def save(self, path: Path, epoch: int, step: int, epoch_done: bool, sampler_state) -> None:
        from mvqkd.training.checkpoint import rng_state, save_checkpoint
        from mvqkd.training.distributed import barrier

        rngs = [rng_state()]
        if self.dinfo.world_size > 1:
            gathered = [None] * self.dinfo.world_size
            torch.distributed.all_gather_object(gathered, rngs[0])
            rngs = gathered
        if self.dinfo.is_main:
            r = self.run
            averaged = r.averager.state_dict() if r.averager is not None else {}
            save_checkpoint(path, model=r.model, config=r.model_config, optimizer=r.optimizer,
                            scheduler=r.scheduler, sampler=sampler_state, rng=rngs, epoch=epoch,
                            step=step, epoch_done=epoch_done, train_info=self.train_info,
                            bpe_model=self.bpe, **averaged)
            logger.info("saved %s", path)
        barrier(self.dinfo)

    def save_step(self, epoch: int, step: int, sampler_state) -> None:
        from mvqkd.training.checkpoint import remove_old_step_checkpoints

        if step == self.last_step_saved:
            return
        self.save(self.exp / f"checkpoint-{step}.pt", epoch, step, False, sampler_state)
        self.last_step_saved = step
        if self.dinfo.is_main:
            remove_old_step_checkpoints(self.exp, self.cfg.keep_last_k)


def run_validation(run: Run, data: TrainData, cfg: TrainConfig, dinfo, monitor, epoch: int) -> dict:
    """Validation losses on rank 0 (other ranks wait); logged and returned."""
    from mvqkd.data.dataset import KDDataset
    from mvqkd.data.sampling import build_sampler
    from mvqkd.training.checkpoint import unwrap
    from mvqkd.training.distributed import barrier

    res = {}
    if dinfo.is_main:
        vs = build_sampler(data.valid_cuts, cfg.max_duration, False, cfg.seed, 1, 0,
                           cfg.num_buckets, drop_last=False)
        loader = make_loader(KDDataset(data.sp, data.valid_kd, cfg.on_the_fly_feats,
                                       cfg.skip_bad_indexes), vs, 0)
        res = validate(unwrap(run.model), loader, dinfo.device)
        monitor.log_valid(epoch, run.step, res)
    barrier(dinfo)
    return res


def validates_after(epoch: int, cfg: TrainConfig) -> bool:
    """Whether the validation loss is computed after ``epoch`` (``--valid-every``)."""
    return epoch == cfg.num_epochs or (cfg.valid_every > 0 and epoch % cfg.valid_every == 0)


def train_epochs(cfg: TrainConfig, data: TrainData, run: Run, dinfo, monitor) -> dict:
    """The epochs of a run (see the module docstring); returns the summary dict."""
    from mvqkd.data.dataset import KDDataset
    from mvqkd.data.sampling import SnapshotSampler
    from mvqkd.data.specaug import SpecAugment
    from mvqkd.training.distributed import all_true
    from mvqkd.training.loop import Budget, Stepper, run_epoch

    distilling = cfg.kd != "none"
    specaug = SpecAugment(time_warp_factor=0 if distilling else cfg.time_warp_factor,
                          distilling=distilling) if cfg.spec_augment else None
    dataset = KDDataset(data.sp, cfg.kd, cfg.on_the_fly_feats, cfg.skip_bad_indexes)
    autocast, scaler = amp_context(cfg.amp, dinfo.device)
    stepper = Stepper(run.model, run.optimizer, run.scheduler, cfg.grad_clip, cfg.max_nan_batches,
                      run.step, all_finite=lambda ok: all_true(ok, dinfo), scaler=scaler)
    budget = Budget(cfg.num_epochs, cfg.max_steps, cfg.time_budget)
    from mvqkd.training.checkpoint import unwrap

    saver = Saver(cfg, run, data, dinfo)
    decode = data.quantizer is not None and unwrap(run.model).kd_head is not None  # decoded regression
    history, valid_hist, current = [], [], {}

    def loss_fn(batch):
        current["sampler"] = current["snap"].pop_state()  # one snapshot per consumed batch
        if batch is None:  # every cut of it skipped (--skip-bad-indexes)
            return None
        batch = move_batch(batch, dinfo.device)
        if decode:
            batch[TEACHER_EMBEDDINGS], batch["teacher_lens"] = decode_indexes(
                data.quantizer, batch[CODEBOOK_INDEXES])
        if specaug is not None:
            batch["features"] = specaug(batch["features"], batch["feature_lens"])
        with autocast():
            return forward(run.model, batch, stepper.step)

    for epoch in range(run.start_epoch, cfg.num_epochs + 1):
        sampler = run.sampler_for(epoch)
        sampler.set_epoch(epoch)
        current["snap"] = snap = SnapshotSampler(sampler)
        run.model.train()
        monitor.start_epoch(epoch)

        def on_step(out, batch, epoch=epoch):
            run.step = stepper.step
            rec = {k: float(out[k].detach()) for k in LOSS_KEYS}
            rec.update(step=run.step, epoch=epoch, grad_norm=out["grad_norm"], lr=stepper.lr,
                       cut_ids=list(batch["cut_ids"]), batch_size=len(batch["cut_ids"]))
            history.append(rec)
            if run.averager is not None:
                run.averager.update(unwrap(run.model), run.step)
            monitor.log_step(rec, out.get("attn_entropy"), cfg.log_interval)
            if cfg.save_every_n > 0 and run.step % cfg.save_every_n == 0:
                saver.save_step(epoch, run.step, current["sampler"])

        loader = make_loader(dataset, snap, cfg.num_workers)
        if run_epoch(loader, loss_fn, stepper, budget, on_step,
                     describe=lambda b: f"cuts {b['cut_ids'][:4]}"):
            saver.save_step(epoch, run.step, current["sampler"])
            break
        monitor.end_epoch(epoch)
        if data.valid_cuts is not None and validates_after(epoch, cfg):
            valid_hist.append(run_validation(run, data, cfg, dinfo, monitor, epoch))
        saver.save(Path(cfg.exp_dir) / f"epoch-{epoch}.pt", epoch, run.step, True,
                   sampler.state_dict())
    return {"history": history, "valid": valid_hist, "final_step": run.step,
            "filter": dict(data.stats.dropped), "rank": dinfo.rank, "model": unwrap(run.model)}


def train(config) -> dict:
    """Train a student; see the module docstring. Returns a summary dict."""
    from mvqkd.training.distributed import cleanup_distributed, setup_distributed

    cfg = TrainConfig.from_any(config)
    if cfg.valid_every < 0:
        raise ValueError(f"--valid-every must be >= 0 (0: after the last epoch only), got {cfg.valid_every}")
    dinfo = setup_distributed(cfg.device)
    Path(cfg.exp_dir).mkdir(parents=True, exist_ok=True)
    monitor = TrainMonitor(Path(cfg.exp_dir), dinfo, cfg.tensorboard, LOSS_KEYS)
    try:
        monitor.log_start(cfg)
        seed_everything(cfg.seed)
        data = prepare_data(cfg)
        run = build_or_resume(cfg, data, dinfo)
        return train_epochs(cfg, data, run, dinfo, monitor)
    except BaseException as e:
        monitor.fatal(e)
        raise
    finally:
        monitor.close()
        cleanup_distributed(dinfo)
