"""Optimiser and learning-rate schedule for the student.

AdamW with a step-based Eden-like schedule (icefall's Eden without the epoch term):

    lr(step) = base_lr * warmup(step) * ((step^2 + D^2) / D^2) ** -0.25

``warmup(step)`` rises linearly from 0.1 to 1 over ``warmup_steps`` (as Eden's 0.5 -> 1
warmup, but from lower because AdamW has no parameter-scale limiting); with sigma-Reparam
``warmup_steps`` is 0 (the reparametrisation is meant to make warmup unnecessary). D =
``lr_decay_steps``: the rate is about constant before D and decays as step^-0.5 after.
"""

from __future__ import annotations

import torch


def adamw(params, **kwargs) -> torch.optim.AdamW:
    """``torch.optim.AdamW(params, **kwargs)`` with the multi-tensor (``foreach``) update on every
    device. torch picks it for CUDA only; on CPU it does the same element-wise arithmetic as the
    per-parameter loop, bit for bit (tests/student/test_optim.py), in one call per operation
    instead of one per parameter. A profile put ~5% of a demo student's step in that loop, but
    a timed epoch came out the same either way (docs/benchmarks.md, "Student steps")."""
    return torch.optim.AdamW(params, foreach=True, **kwargs)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """``optimizer.load_state_dict(state)``, keeping the optimizer's own ``foreach`` setting (a
    state dict carries it per parameter group, and one written before :func:`adamw` has None)."""
    foreach = [g.get("foreach") for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, value in zip(optimizer.param_groups, foreach):
        group["foreach"] = value


class EdenLike:
    """Picklable LR multiplier for ``torch.optim.lr_scheduler.LambdaLR`` (its state is saved)."""

    def __init__(self, warmup_steps: int, lr_decay_steps: float):
        if lr_decay_steps <= 0:
            raise ValueError(f"lr_decay_steps must be > 0, got {lr_decay_steps}")
        self.warmup_steps = int(warmup_steps)
        self.lr_decay_steps = float(lr_decay_steps)

    def __call__(self, step: int) -> float:
        warm = 1.0
        if self.warmup_steps > 0 and step < self.warmup_steps:
            warm = 0.1 + 0.9 * step / self.warmup_steps
        d2 = self.lr_decay_steps ** 2
        return warm * ((step ** 2 + d2) / d2) ** -0.25


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float,
                    warmup_steps: int, lr_decay_steps: float):
    """``(AdamW, LambdaLR)``; biases and norms get no weight decay."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 else decay).append(p)
    optimizer = adamw([{"params": decay, "weight_decay": weight_decay},
                       {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, EdenLike(warmup_steps, lr_decay_steps))
    return optimizer, scheduler
