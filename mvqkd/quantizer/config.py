"""Options of ``mvqkd train-quantizer`` (standard library only; the CLI builds its parser
from this dataclass and :func:`mvqkd.quantizer.train.train_quantizer` takes the same names)."""

from __future__ import annotations

from dataclasses import dataclass

from mvqkd.options import opt

NORMALIZE_MODES = ("global", "per-dim")


@dataclass
class QuantizerConfig:
    num_codebooks: int = opt(0, required=True, help="N, one of 1 2 4 8 16 32 (bytes/frame)")
    codebook_size: int = opt(256, "K entries per codebook (<=256: uint8 codes)")
    iters: int | None = opt(None, "training iterations (default 10); the reproducible budget")
    time_budget: float | None = opt(None, "opt-in: stop after this many wall-clock seconds and keep "
                                          "the best model so far (not reproducible across machines)")
    seed: int = opt(0, "random seed (training is deterministic for it)")
    method: str = opt("lsq", "lsq: additive codebooks, alternating beam-search encoding / joint "
                             "least squares; sgd: the same codebooks trained with Adam through "
                             "--estimator; product: product quantization (k-means on N blocks of "
                             "dimensions: codes a student predicts more easily, at a higher "
                             "reconstruction error)", choices=["lsq", "sgd", "product"])
    estimator: str = opt("nsvq", "gradient estimator for --method sgd (NSVQ noise substitution or "
                                 "straight-through)", choices=["nsvq", "ste"])
    beam: int = opt(4, "beam width of the encoder search")
    icm_iters: int = opt(1, "ICM refinement passes after the beam search")
    normalize: str = opt("global", "input normalisation: global = subtract the per-dim mean, divide "
                                   "by one scale (minimises the raw squared error); per-dim = "
                                   "standardise each dimension (every dimension counts alike, as for "
                                   "L2-KD with --kd-normalize)", choices=list(NORMALIZE_MODES))
