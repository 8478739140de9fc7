"""icefall's averaged model (``--average-period``): the running mean of the student's
weights, sampled every ``period`` optimiser steps, kept next to the model in float64.

After ``n`` samples (steps ``p, 2p, ..., np``) ``model_avg`` is their mean, and a checkpoint
stores it with ``model_avg_count = n`` and ``average_period = p``. The mean over any
interval between two checkpoints then follows from their two running means,
``(n_e * avg_e - n_s * avg_s) / (n_e - n_s)``, which is what ``mvqkd decode --use-averaged-model`` reads
(:func:`mvqkd.student.checkpoint.averaged_model_between`). Sampling never touches the model,
the optimiser or an RNG: a run trains the same weights with or without it.
"""

from __future__ import annotations

import torch


class RunningAverage:
    """The mean of the model's state dict over every ``period``-th optimiser step, kept on
    the CPU (a GPU model's copy costs no GPU memory)."""

    def __init__(self, model: torch.nn.Module, period: int, state: dict | None = None):
        if period < 1:
            raise ValueError(f"--average-period must be >= 1 to average, got {period}")
        self.period = period
        if state is None:
            self.avg = {k: v.detach().to("cpu", torch.float64, copy=True) if v.is_floating_point()
                        else v.detach().cpu().clone() for k, v in model.state_dict().items()}
            self.count = 0
        else:
            self.avg, self.count = dict(state["model_avg"]), int(state["model_avg_count"])

    def update(self, model: torch.nn.Module, step: int) -> None:
        """Fold in the model after optimiser step ``step`` when ``step`` is a multiple of the period."""
        if step % self.period:
            return
        self.count += 1
        with torch.no_grad():
            for k, v in model.state_dict().items():
                if v.is_floating_point():
                    self.avg[k] += (v.detach().to("cpu", torch.float64) - self.avg[k]) / self.count
                else:
                    self.avg[k] = v.detach().cpu().clone()

    def state_dict(self) -> dict:
        """The checkpoint entries: ``model_avg`` (float64 state dict), ``model_avg_count`` and
        ``average_period``."""
        return {"model_avg": self.avg, "model_avg_count": self.count, "average_period": self.period}
