"""The one training loop, shared by the student (``mvqkd train``) and the demo teacher
(``mvqkd finetune-teacher``): guarded optimiser steps, epochs of batches, budgets.

- :class:`Budget`: when training stops. Counted budgets (epochs, ``max_steps``) are the
  default everywhere, so the same command and seed give the same model on any machine;
  ``time_budget`` (wall-clock seconds) is an explicit opt-in.
- :class:`Stepper`: one optimiser step from a loss, with the non-finite guard (a NaN/Inf
  loss or gradient skips the batch; more than ``max_nan_batches`` in a row stop training)
  and gradient clipping; counts the steps.
- :func:`run_epoch`: batches -> ``loss_fn`` -> :class:`Stepper` -> ``on_step``, until the
  batches end or the budget does.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch

logger = logging.getLogger(__name__)


@dataclass
class Budget:
    """``num_epochs`` epochs, at most ``max_steps`` optimiser steps in total and, when set,
    at most ``time_budget`` seconds of wall clock (opt-in; not reproducible across machines)."""

    num_epochs: int
    max_steps: int | None = None
    time_budget: float | None = None
    t0: float = field(default_factory=time.time)

    def exhausted(self, step: int) -> bool:
        if self.max_steps is not None and step >= self.max_steps:
            return True
        return self.time_budget is not None and time.time() - self.t0 > self.time_budget

    def reason(self, step: int) -> str:
        if self.max_steps is not None and step >= self.max_steps:
            return f"max steps {self.max_steps} reached"
        return f"time budget {self.time_budget:.0f} s reached"


class Stepper:
    """Turns a loss into an optimiser step (see the module docstring).

    ``all_finite(flag) -> bool`` agrees the finiteness across DDP ranks (default: identity).
    """

    def __init__(self, model, optimizer, scheduler, grad_clip: float, max_nan_batches: int,
                 step: int = 0, all_finite: Callable[[bool], bool] = lambda ok: ok, scaler=None):
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.grad_clip, self.max_nan_batches = grad_clip, max_nan_batches
        self.step, self.nan_run = step, 0
        self.all_finite = all_finite
        self.scaler = scaler  # torch.amp.GradScaler for fp16

    def __call__(self, loss: torch.Tensor, where: str = "") -> float | None:
        """Backward, clip and step; returns the gradient norm, or None for a skipped batch."""
        finite = self.all_finite(bool(torch.isfinite(loss)))
        self.optimizer.zero_grad(set_to_none=True)
        grad_norm = None
        if finite:
            (loss if self.scaler is None else self.scaler.scale(loss)).backward()
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
            finite = bool(torch.isfinite(grad_norm))  # the same on all ranks after DDP
        if not finite:
            if self.scaler is not None and bool(torch.isfinite(loss)):
                self.scaler.update()  # an fp16 overflow: a smaller scale next time
            self._skip(where)
            return None
        self.nan_run = 0
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return float(grad_norm)

    def _skip(self, where: str) -> None:
        self.nan_run += 1
        logger.warning("non-finite loss or gradient at step %d (%s); batch skipped (%d in a row)",
                       self.step + 1, where, self.nan_run)
        self.optimizer.zero_grad(set_to_none=True)
        if self.nan_run > self.max_nan_batches:
            raise RuntimeError(
                f"{self.nan_run} non-finite losses in a row (> --max-nan-batches "
                f"{self.max_nan_batches}); stopping. Lower --lr or check the data.")

    @property
    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]


def run_epoch(batches: Iterable, loss_fn: Callable[[object], dict], stepper: Stepper,
              budget: Budget, on_step: Callable[[dict, object], None],
              describe: Callable[[object], str] = lambda batch: "") -> bool:
    """Train on ``batches``; returns True when the budget stopped the epoch early.

    ``loss_fn(batch)`` returns a dict with the scalar tensor ``loss`` (other entries are
    passed on), or None to skip the batch; ``on_step(out, batch)`` runs after every
    successful step (logging, checkpoints) with ``out["grad_norm"]`` set.
    """
    for batch in batches:
        out = loss_fn(batch)
        if out is None:
            continue
        grad_norm = stepper(out["loss"], describe(batch))
        if grad_norm is None:
            continue
        out["grad_norm"] = grad_norm
        on_step(out, batch)
        if budget.exhausted(stepper.step):
            logger.info("stopping at step %d: %s", stepper.step, budget.reason(stepper.step))
            return True
    return False
