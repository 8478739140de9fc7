"""Options of :func:`mvqkd.train.train` (no heavy imports: the CLI reads the defaults).

Field names are the ``mvqkd train`` options with ``-`` -> ``_``; see
``mvqkd train --help`` for what each one means.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field


@dataclass
class TrainConfig:
    train_cuts: str = ""
    bpe_model: str = ""
    exp_dir: str = "exp/student"
    valid_cuts: str | None = None
    kd: str = "mvq"
    ctc_loss_scale: float = 0.0
    codebook_loss_scale: float = 0.1
    codebook_loss: str = "independent"
    kd_loss_scale: float = 1.0
    kd_normalize: bool = False
    distill_layer: int | None = None
    quantizer_id: str | None = None
    num_codebooks: int | None = None
    skip_missing_indexes: bool = False
    model_size: str = "small"
    model_override: list = field(default_factory=list)  # ["key=value", ...]
    sigma_reparam: bool = False
    num_epochs: int = 30
    start_epoch: int | None = None
    max_duration: float = 200.0
    num_buckets: int = 30
    num_workers: int = 2
    on_the_fly_feats: bool = False
    spec_augment: bool = True
    time_warp_factor: int = 80
    lr: float = 1e-3
    weight_decay: float = 1e-2
    warmup_steps: int = 2000
    lr_decay_steps: float = 10000.0
    grad_clip: float = 5.0
    save_every_n: int = 2000
    keep_last_k: int = 10
    max_nan_batches: int = 20
    max_steps: int | None = None
    log_interval: int = 50
    seed: int = 42
    device: str | None = None
    tensorboard: bool = True

    @classmethod
    def from_any(cls, obj) -> "TrainConfig":
        if isinstance(obj, cls):
            return obj
        d = vars(obj) if isinstance(obj, argparse.Namespace) else dict(obj)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
