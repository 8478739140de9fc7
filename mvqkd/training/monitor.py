"""Training monitoring: log file, tensorboard, progress, per-head attention entropy.

- ``EXP/log/log-train-YYYY-mm-dd-HH-MM-SS.txt`` (rank > 0 adds ``-rankR``): everything the
  ``mvqkd`` loggers write during training.
- ``EXP/tensorboard`` (rank 0): ``train/{loss,rnnt,ctc,codebook,kd,lr,grad_norm}``,
  ``attn_entropy/layerL/headH`` (nats), ``valid/*``.
- At each epoch end the log summarises the epoch's mean losses and, per encoder layer,
  the mean / min / max head entropy (a collapsing head shows as a min near 0).
- A progress bar only on a terminal (:mod:`mvqkd.logs`); in a file, the periodic
  ``step N`` log lines are the progress.
- :meth:`TrainMonitor.fatal` writes the traceback of an error that stops training to the
  log file (not the console, where it is reported once) before it propagates.

``loss_keys`` names the scalar losses of a step record (the student's ``LOSS_KEYS``, or
``("loss",)`` for the teacher).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from mvqkd.logs import FileLog, progress_bar, use_bar

logger = logging.getLogger("mvqkd.train")


class TrainMonitor:
    def __init__(self, exp_dir: Path, dinfo, tensorboard: bool = True,
                 loss_keys: tuple[str, ...] = ("loss",)):
        self.dinfo = dinfo
        self.loss_keys = tuple(loss_keys)
        log_dir = Path(exp_dir) / "log"
        log_dir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y-%m-%d-%H-%M-%S")
        suffix = f"-rank{dinfo.rank}" if dinfo.rank else ""
        self.log_path = log_dir / f"log-train-{stamp}{suffix}.txt"
        self._file_log = FileLog(self.log_path)
        self.writer = None
        if tensorboard and dinfo.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(Path(exp_dir) / "tensorboard"))
        self._bar = None

    def log_start(self, cfg) -> None:
        logger.info("training config: %s", cfg)
        logger.info("world size %d, rank %d, device %s", self.dinfo.world_size,
                    self.dinfo.rank, self.dinfo.device)

    def fatal(self, exc: BaseException) -> None:
        """Write an error that stops training, with its traceback, to the log file only: on the
        console the command reports it once (``mvqkd``'s one-line message for a user error, or
        Python's traceback as it propagates)."""
        record = logger.makeRecord(logger.name, logging.ERROR, __file__, 0,
                                   "training stopped by %s: %s", (type(exc).__name__, exc),
                                   (type(exc), exc, exc.__traceback__))
        self._file_log.handler.handle(record)

    def start_epoch(self, epoch: int) -> None:
        self._sums, self._n, self._ent, self._n_ent = {}, 0, None, 0
        # a bar on a terminal only: in a file the periodic "step N" lines are the progress
        self._bar = progress_bar(f"epoch {epoch}", unit="batch",
                                 disable=not (self.dinfo.is_main and use_bar()))

    def log_step(self, rec: dict, attn_entropy, log_interval: int) -> None:
        step = rec["step"]
        for k in self.loss_keys:
            self._sums[k] = self._sums.get(k, 0.0) + rec[k]
        self._n += 1
        if attn_entropy is not None:
            ent = attn_entropy.detach().float().cpu()
            self._ent = ent if self._ent is None else self._ent + ent
            self._n_ent += 1
        if self._bar is not None:
            self._bar.set_postfix(**{k: f"{rec[k]:.3f}" for k in self.loss_keys[:3]})
            self._bar.update(1)
        if log_interval > 0 and step % log_interval == 0:
            logger.info("step %d epoch %d: %s lr %.2e grad_norm %.2f", step, rec["epoch"],
                        " ".join(f"{k} {rec[k]:.4f}" for k in self.loss_keys), rec["lr"],
                        rec["grad_norm"])
            if self.writer is not None:
                for k in (*self.loss_keys, "lr", "grad_norm"):
                    self.writer.add_scalar(f"train/{k}", rec[k], step)
                if attn_entropy is not None:
                    for layer, row in enumerate(attn_entropy.detach().float().cpu().tolist()):
                        for head, value in enumerate(row):
                            self.writer.add_scalar(
                                f"attn_entropy/layer{layer + 1}/head{head + 1}", value, step)

    def end_epoch(self, epoch: int) -> dict:
        if self._bar is not None:
            self._bar.close()
        means = {k: v / max(1, self._n) for k, v in self._sums.items()}
        logger.info("epoch %d done: %d steps, mean %s", epoch, self._n,
                    " ".join(f"{k} {v:.4f}" for k, v in means.items()))
        if self._ent is not None:
            ent = self._ent / self._n_ent
            for layer, row in enumerate(ent):
                logger.info("epoch %d attention entropy layer %d: mean %.3f min %.3f max %.3f "
                            "(heads: %s)", epoch, layer + 1, float(row.mean()), float(row.min()),
                            float(row.max()), " ".join(f"{float(v):.2f}" for v in row))
        return means

    def log_valid(self, epoch: int, step: int, res: dict) -> None:
        logger.info("epoch %d validation: %s", epoch,
                    " ".join(f"{k} {v:.4f}" for k, v in res.items()))
        if self.writer is not None:
            for k, v in res.items():
                self.writer.add_scalar(f"valid/{k}", v, step)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self.writer is not None:
            self.writer.close()
        self._file_log.close()
