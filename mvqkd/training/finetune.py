"""Fine-tuning the demo teacher with character CTC (``mvqkd finetune-teacher``), on the
shared loop of :mod:`mvqkd.training.loop` (the model side is :mod:`mvqkd.teacher.ctc`).

Files in ``out_dir``:
- the best-by-dev model (``save_pretrained``), rewritten whenever dev WER improves;
- ``train_state.pt``: model / optimizer / scheduler / RNG state after the last finished
  epoch (``weights_only``-safe, like the student's checkpoints); a rerun with the same
  ``out_dir`` resumes from it;
- ``finetune_log.json``: per epoch train loss, dev WER, wall time;
- ``teacher_wer.json``: final greedy CTC WER of the best model per evaluation set;
- ``log/log-train-*.txt``: the training log.

Budgets are counted (``num_epochs``, ``max_steps``: the same command and seed give the same
teacher on any machine); ``time_budget`` is an explicit opt-in.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mvqkd.training.config import FinetuneConfig
from mvqkd.teacher.ctc import (WER_FILE, AudioCache, as_cutset, build_ctc_model, collate,
                               ctc_wer, decode_cuts, encode_text, eval_batches, labels_for, score,
                               vocabulary, write_processor)

logger = logging.getLogger(__name__)

STATE_FILE = "train_state.pt"
LOG_FILE = "finetune_log.json"


def _lr_lambda(warmup: int, total: int):
    """Linear warm-up to 1, then cosine decay to 0.05 at step ``total``."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))
    return f


@dataclass
class _Run:
    model: object
    do_norm: bool
    with_mask: bool
    optimizer: object
    scheduler: object
    steps_per_epoch: int
    start_epoch: int = 1
    step: int = 0
    best: float = float("inf")
    history: list = field(default_factory=list)


def _build_or_resume(cfg: FinetuneConfig, train_cuts, out: Path) -> _Run:
    from mvqkd.student.checkpoint import load_checkpoint_file
    from mvqkd.training.checkpoint import set_rng_state
    from mvqkd.training.optim import adamw, load_optimizer_state

    model, do_norm = build_ctc_model(cfg.size, cfg.seed, cfg.init_from)
    with_mask = model.config.feat_extract_norm == "layer"
    model.to(torch.device(cfg.device)).train()
    logger.info("HubertForCTC: %d layers, dim %d, %.2fM parameters", model.config.num_hidden_layers,
                model.config.hidden_size, sum(p.numel() for p in model.parameters()) / 1e6)
    hours = sum(c.duration for c in train_cuts) / 3600
    steps_per_epoch = max(1, math.ceil(hours * 3600 / cfg.max_duration * 1.1))
    total = steps_per_epoch * cfg.num_epochs
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    opt_ = adamw(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt_, _lr_lambda(min(cfg.warmup_steps, total // 3 + 1),
                                                                total))
    run = _Run(model, do_norm, with_mask, opt_, sched, steps_per_epoch)
    state_path = out / STATE_FILE
    if state_path.is_file():
        st = load_checkpoint_file(state_path)
        model.load_state_dict(st["model"])
        load_optimizer_state(opt_, st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        set_rng_state(st["rng"])
        run.start_epoch, run.step = int(st["epoch"]) + 1, int(st["step"])
        run.best, run.history = float(st["best_wer"]), list(st["history"])
        logger.info("resuming from %s: epoch %d done, step %d, best dev WER %.2f",
                    state_path, st["epoch"], run.step, run.best)
    else:
        write_processor(out, do_norm, with_mask)
    logger.info("training on %.2f h (%d cuts), %d epochs, ~%d steps/epoch, max %.0f s/batch",
                hours, len(train_cuts), cfg.num_epochs, steps_per_epoch, cfg.max_duration)
    return run


def _evaluate_and_keep(run: _Run, cfg: FinetuneConfig, dev_cuts, cache, out: Path, epoch,
                       loss_avg: float, t0: float, c0: float) -> None:
    """Greedy dev WER; the model is saved whenever it improves; the log file rewritten."""
    refs, hyps = decode_cuts(run.model, dev_cuts, cache, run.do_norm, run.with_mask,
                             cfg.max_duration * 2, torch.device(cfg.device), desc=f"dev epoch {epoch}")
    res = score(refs, hyps)
    run.history.append(dict(epoch=epoch, step=run.step, train_loss=loss_avg, dev=res,
                            elapsed_s=round(time.time() - t0, 1),
                            cpu_s=round(time.process_time() - c0, 1)))
    logger.info("epoch %s step %d: train loss %.3f, dev WER %.2f%% (ins %d del %d sub %d)",
                epoch, run.step, loss_avg, res["wer"], res["ins"], res["del"], res["sub"])
    if res["wer"] < run.best:
        run.best = res["wer"]
        run.model.save_pretrained(str(out))
        logger.info("new best dev WER %.2f%%: saved to %s", run.best, out)
    (out / LOG_FILE).write_text(json.dumps(run.history, indent=1))


def _train(run: _Run, cfg: FinetuneConfig, train_cuts, dev_cuts, out: Path, monitor) -> None:
    from mvqkd.data.sampling import build_sampler
    from mvqkd.training.checkpoint import rng_state, save_checkpoint
    from mvqkd.training.loop import Budget, Stepper, run_epoch

    dev = torch.device(cfg.device)
    vocab = vocabulary()
    sampler = build_sampler(train_cuts, cfg.max_duration, shuffle=True, seed=cfg.seed, world_size=1,
                            rank=0, num_buckets=10, drop_last=False)
    # SortaGrad (Deep Speech 2): the first epoch goes from the shortest utterances up,
    # which shortens the all-blank plateau of CTC from scratch
    first = eval_batches(train_cuts, cfg.max_duration, ascending=True) if cfg.sorta_grad else sampler
    cache, t0, c0 = AudioCache(), time.time(), time.process_time()
    stepper = Stepper(run.model, run.optimizer, run.scheduler, cfg.grad_clip, 20, run.step)
    budget = Budget(cfg.num_epochs, cfg.max_steps, cfg.time_budget)

    def loss_fn(batch):
        x, mask, _ = collate(batch, cache, run.do_norm, run.with_mask)
        loss = run.model(x.to(dev), attention_mask=None if mask is None else mask.to(dev),
                         labels=labels_for(batch, vocab).to(dev)).loss
        return {"loss": loss}

    for epoch in range(run.start_epoch, cfg.num_epochs + 1):
        if budget.exhausted(run.step):
            break
        sampler.set_epoch(epoch)
        monitor.start_epoch(epoch)
        sums = []

        def on_step(out_, batch, epoch=epoch):
            run.step = stepper.step
            sums.append(float(out_["loss"].detach()))
            monitor.log_step(dict(loss=sums[-1], step=run.step, epoch=epoch, lr=stepper.lr,
                                  grad_norm=out_["grad_norm"]), None, cfg.log_interval)

        stopped = run_epoch(first if epoch == 1 else sampler, loss_fn, stepper, budget, on_step,
                            describe=lambda b: f"cuts {[c.id for c in b][:4]}")
        monitor.end_epoch(epoch)
        _evaluate_and_keep(run, cfg, dev_cuts, cache, out, epoch if not stopped else f"{epoch} (partial)",
                           sum(sums) / max(1, len(sums)), t0, c0)
        if stopped:
            break
        save_checkpoint(out / STATE_FILE, model=run.model, optimizer=run.optimizer,
                        scheduler=run.scheduler, rng=rng_state(), epoch=epoch, step=run.step,
                        best_wer=run.best, history=run.history)


def _fitting(cuts, max_duration: float):
    """``cuts`` without those longer than a batch (``--max-duration``), which lhotse's sampler
    would train alone, past the budget; warned about by name. ``cuts`` itself if none is."""
    from lhotse import CutSet

    from mvqkd.data.dataset import warn_too_long

    keep, too_long = [], []
    for c in cuts:
        (keep if c.duration <= max_duration else too_long).append(c)
    if not too_long:
        return cuts
    warn_too_long("train", too_long, max_duration)
    if not keep:
        raise ValueError(f"train cuts: every cut is longer than --max-duration {max_duration:g} s")
    return CutSet.from_cuts(keep)


def finetune_teacher(train_cuts, dev_cuts, out_dir: str | Path, **options) -> Path:
    """Train a character-CTC ``HubertForCTC`` and keep the best-by-dev-WER model in ``out_dir``.

    Args:
        train_cuts, dev_cuts: lhotse CutSets (or manifest paths) with recordings (16 kHz mono)
            and one upper-case supervision per cut.
        out_dir: output directory (see the module docstring); resumes from its ``train_state.pt``.
        options: fields of :class:`FinetuneConfig` (``size``, ``max_steps``, ``lr``, ...).
    Returns:
        ``out_dir``.
    """
    from mvqkd.training.distributed import DistInfo
    from mvqkd.training.monitor import TrainMonitor

    cfg = FinetuneConfig(**options)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    monitor = TrainMonitor(out, DistInfo(device=torch.device(cfg.device)), tensorboard=False)
    try:
        monitor.log_start(cfg)
        train_cuts = _fitting(as_cutset(train_cuts, "train cuts"), cfg.max_duration)
        dev_cuts = as_cutset(dev_cuts, "dev cuts")
        vocab = vocabulary()
        for c in train_cuts:  # fail before training on a transcript the vocabulary cannot spell
            encode_text(c.supervisions[0].text, vocab, c.id)
        t0 = time.time()
        run = _build_or_resume(cfg, train_cuts, out)
        _train(run, cfg, train_cuts, dev_cuts, out, monitor)
        if not (out / "config.json").is_file():  # no evaluation ran (nothing left to train)
            run.model.save_pretrained(str(out))
        sets = {"dev": dev_cuts, **{k: as_cutset(v, k) for k, v in (cfg.eval_cuts or {}).items()}}
        wers = {name: ctc_wer(out, cuts, cfg.max_duration * 2, cfg.device) for name, cuts in sets.items()}
        wers["train_time_s"] = round(time.time() - t0, 1)
        (out / WER_FILE).write_text(json.dumps(wers, indent=1))
        logger.info("teacher WER: %s", {k: v["wer"] for k, v in wers.items() if isinstance(v, dict)})
        return out
    except BaseException as e:
        monitor.fatal(e)
        raise
    finally:
        monitor.close()
