"""Training the additive quantizer.

Algorithm (the additive-quantization / LSQ family, with robust-VQ remedies):

1. normalise: per-dim mean, one global scale (so errors keep their meaning), or with
   ``normalize="per-dim"`` each dimension to unit variance (so every dimension counts alike);
2. initialise by residual k-means, each codebook seeded with k-means++;
3. iterate (``method="lsq"``): encode the training frames by beam search + ICM,
   then solve the least-squares problem for *all* codebooks jointly given the
   codes; re-seed dead / rarely used codewords from the current residuals
   (k-means++-style sampling proportional to the frame error);
   or (``method="sgd"``): Adam on the codebooks with minibatches through a
   selectable gradient estimator (NSVQ noise substitution or STE), with the
   same re-seeding from a buffer of recent residuals;
4. after each iteration measure the relative error on a held-out split and keep
   the best codebooks; ``time_budget`` stops the loop and returns that best model.

Shapes: n = frames, D = dim, N = codebooks, K = codebook size.
"""

from __future__ import annotations

import logging
import math
import time

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from mvqkd.logs import progress_bar

from mvqkd.quantizer.estimators import ESTIMATORS, quantize_with_estimator
from mvqkd.quantizer.metrics import relative_error, usage_counts, usage_stats
from mvqkd.quantizer.model import ALLOWED_NUM_CODEBOOKS, MAX_CODEBOOK_SIZE, Quantizer
from mvqkd.quantizer.search import cross_table, encode_normalized, reconstruct
from mvqkd.quantizer.updates import lsq_update, reseed_dead, residual_kmeans_init

logger = logging.getLogger(__name__)

NORMALIZE_MODES = ("global", "per-dim")
METHODS = ("lsq", "sgd", "product")


def _check_args(x: Tensor, num_codebooks: int, codebook_size: int, method: str, estimator: str,
                normalize: str = "global"):
    if normalize not in NORMALIZE_MODES:
        raise ValueError(f"normalize must be one of {NORMALIZE_MODES}, got {normalize!r}")
    if num_codebooks not in ALLOWED_NUM_CODEBOOKS:
        raise ValueError(f"num_codebooks must be one of {ALLOWED_NUM_CODEBOOKS}, got {num_codebooks}")
    if not 2 <= codebook_size <= MAX_CODEBOOK_SIZE:
        raise ValueError(f"codebook_size must be in [2, {MAX_CODEBOOK_SIZE}], got {codebook_size}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if x.dim() != 2:
        raise ValueError(f"embeddings must be (frames, dim), got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError("no training frames (empty embeddings)")
    bad = ~torch.isfinite(x).all(1)
    if bad.any():
        rows = bad.nonzero().flatten()[:5].tolist()
        raise ValueError(
            f"{int(bad.sum())} of {x.shape[0]} training frames contain NaN/Inf (first rows: {rows}); "
            "drop them first (load_embeddings(..., drop_nonfinite=True))"
        )


def input_normalisation(x: Tensor, mode: str) -> tuple[Tensor, Tensor]:
    """Mean (D,) and scale (scalar for "global", (D,) for "per-dim") of frames x (n, D),
    such that ``z = (x - mean) / scale`` has ``E||z||^2 = 1``. A constant dimension gets
    the scale of the mean std (it is zero after centring either way)."""
    mean = x.mean(0)
    if mode == "global":
        return mean, ((x - mean) ** 2).sum(1).mean().sqrt().clamp_min(1e-12)
    if mode == "per-dim":
        std = (x - mean).pow(2).mean(0).sqrt()
        mean_std = std.mean().clamp_min(1e-12)
        std = torch.where(std > 1e-6 * mean_std, std, mean_std)
        return mean, std * x.shape[1] ** 0.5
    raise ValueError(f"normalize must be one of {NORMALIZE_MODES}, got {mode!r}")


def train_quantizer(
    embeddings,
    num_codebooks: int,
    codebook_size: int = 256,
    iters: int | None = None,
    time_budget: float | None = None,
    seed: int = 0,
    device="cpu",
    method: str = "lsq",
    estimator: str = "nsvq",
    beam: int = 4,
    icm_iters: int = 1,
    train_beam: int | None = None,
    heldout_frac: float = 0.05,
    max_heldout: int = 2000,
    kmeans_iters: int = 2,
    kmeans_frames: int | None = None,
    reseed_frac: float = 0.2,
    normalize: str = "global",
    ridge: float = 1e-2,
    lr: float = 1e-3,
    batch_size: int = 1024,
    steps_per_iter: int = 50,
    progress: bool = True,
) -> Quantizer:
    """Train an additive quantizer on ``embeddings`` (frames, D).

    Args:
        embeddings: (frames, D) float tensor or ndarray, all finite.
        num_codebooks: N in {1, 2, 4, 8, 16, 32}.
        codebook_size: K (<= 256 gives uint8 codes).
        iters: training iterations (default 10 without a time budget, unlimited with one).
        time_budget: wall-clock seconds; stop and keep the best model so far.
        seed: all randomness derives from it.
        device: "cpu", "cuda", ...
        method: "lsq" (alternating encode / joint least squares), "sgd" (Adam through
            ``estimator``), or "product": product quantization (k-means on N blocks of
            dimensions, ``iters`` Lloyd iterations; :mod:`mvqkd.quantizer.product`).
        estimator: "nsvq" or "ste", the gradient estimator of ``method="sgd"``.
        beam, icm_iters: the encoder's search, stored in the quantizer.
        train_beam: beam used while training (default: ``beam``).
        heldout_frac, max_heldout: held-out split for the logged relative error.
        kmeans_iters, kmeans_frames: residual k-means initialisation (frames default 10*K).
        reseed_frac: codewords used less than ``reseed_frac`` x the mean usage (frames / K)
            in an iteration are re-seeded.
        normalize: "global": subtract the per-dim mean, divide by one scale (the RMS frame
            norm); the quantizer minimises the raw squared error. "per-dim": divide each
            dimension by its std x sqrt(D); it minimises the error of standardised frames.
            Either way ``E||z||^2 = 1``. The logged / stored relative error is measured in
            this normalised space (for "global" it equals the raw-space one).
        ridge: pull of the least-squares solution towards the previous codebooks.
        lr, batch_size, steps_per_iter: for ``method="sgd"``.
    Returns:
        the best :class:`Quantizer` by held-out relative error; its ``history`` holds
        the training curve and the codeword usage on the training frames.
    """
    t0 = time.time()
    x = torch.as_tensor(np.asarray(embeddings) if not torch.is_tensor(embeddings) else embeddings)
    x = x.float()
    _check_args(x, num_codebooks, codebook_size, method, estimator, normalize)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    if iters is None:
        iters = 10 if time_budget is None else 10**9
    data = _split_and_normalise(x, codebook_size, heldout_frac, max_heldout, normalize, gen,
                                torch.device(device))
    if method == "product":
        return _train_product(data, num_codebooks, codebook_size, iters, gen, t0,
                              {"method": method, "seed": seed, "iters_done": iters,
                               "normalize": normalize})
    run = _Run(data, beam, icm_iters, beam if train_beam is None else train_beam, gen, t0)
    kf = min(data.z.shape[0], kmeans_frames or 10 * codebook_size)
    deadline = None if time_budget is None else t0 + 0.3 * time_budget
    run.start(residual_kmeans_init(data.z[:kf], num_codebooks, codebook_size, kmeans_iters, gen,
                                   deadline))
    sgd = _SGD(run.books, lr, batch_size, steps_per_iter, estimator) if method == "sgd" else None
    bar = progress_bar("train-quantizer", total=None if iters >= 10**9 else iters, unit="iter",
                       disable=not progress)
    while run.it < iters and not run.out_of_time(time_budget):
        run.iteration(method, sgd, ridge, reseed_frac)
        bar.set_postfix(rel_err=f"{run.curve[-1]['heldout_rel_err']:.4f}", best=f"{run.best_err:.4f}")
        bar.update(1)
    bar.close()

    best, counts, revived = _revive_dead(data.z, run.best, beam, icm_iters, gen)
    q = Quantizer(best, data.mean, data.scale, beam=beam, icm_iters=icm_iters)
    q.history = {
        "curve": run.curve,
        "usage": counts.cpu().tolist(),
        "usage_stats": usage_stats(counts),
        "heldout_rel_err": run.best_err,
        "train_frames": int(data.z.shape[0]),
        "heldout_frames": int(data.n_held),
        "revived_at_end": revived,
        "train_seconds": time.time() - t0,
        "args": {"method": method, "estimator": estimator, "seed": seed, "iters_done": run.it,
                 "normalize": normalize, "time_budget": time_budget, "train_beam": run.train_beam},
    }
    logger.info("trained %s: held-out relative error %.4f, %d dead codewords on training frames, "
                "%.1fs", q, run.best_err, q.history["usage_stats"]["dead_total"], time.time() - t0)
    return q


def _train_product(data, num_codebooks: int, codebook_size: int, iters: int,
                   gen: torch.Generator, t0: float, args: dict) -> Quantizer:
    from mvqkd.quantizer.product import product_codebooks

    books = product_codebooks(data.z, num_codebooks, codebook_size, iters, gen)
    q = Quantizer(books, data.mean, data.scale, beam=1, icm_iters=0)
    codes = encode_normalized(data.z, books, 1, 0)
    counts = usage_counts(codes, codebook_size)
    held = encode_normalized(data.zh, books, 1, 0)
    err = relative_error(data.zh, reconstruct(held, books))
    q.history = {"curve": [{"iter": iters, "time": time.time() - t0, "heldout_rel_err": err,
                            "reseeded": 0}],
                 "usage": counts.cpu().tolist(), "usage_stats": usage_stats(counts),
                 "heldout_rel_err": err, "train_frames": int(data.z.shape[0]),
                 "heldout_frames": int(data.n_held), "revived_at_end": 0,
                 "train_seconds": time.time() - t0, "structure": "product", "args": args}
    logger.info("trained product %s: held-out relative error %.4f, %.1fs", q, err, time.time() - t0)
    return q


@dataclass
class _Data:
    z: Tensor  # (n, D) normalised training frames
    zh: Tensor  # (n_held, D) normalised held-out frames (a slice of z when none are held out)
    mean: Tensor
    scale: Tensor
    n_held: int


def _split_and_normalise(x: Tensor, codebook_size: int, heldout_frac: float, max_heldout: int,
                         normalize: str, gen: torch.Generator, device) -> _Data:
    """Shuffle, hold out a split for the logged error, normalise with the training statistics."""
    n_all = x.shape[0]
    n_held = min(max_heldout, int(n_all * heldout_frac)) if n_all > 2 * codebook_size else 0
    if n_all - n_held < codebook_size:
        raise ValueError(
            f"{n_all} training frames are fewer than codebook_size={codebook_size} codewords; "
            "give more frames or a smaller codebook"
        )
    x = x[torch.randperm(n_all, generator=gen)].to(device)
    held, train = x[:n_held], x[n_held:]
    mean, scale = input_normalisation(train, normalize)
    z = (train - mean) / scale
    zh = (held - mean) / scale if n_held else z[: min(2000, z.shape[0])]
    return _Data(z, zh, mean, scale, n_held)


class _SGD:
    """Adam on a copy of the codebooks (``method="sgd"``)."""

    def __init__(self, books: Tensor, lr: float, batch_size: int, steps: int, estimator: str):
        self.param = books.clone().requires_grad_(True)
        self.opt = torch.optim.Adam([self.param], lr=lr)
        self.batch_size, self.steps, self.estimator = batch_size, steps, estimator


class _Run:
    """The state of one training run: current and best codebooks, the curve, the clock."""

    def __init__(self, data: _Data, beam: int, icm_iters: int, train_beam: int,
                 gen: torch.Generator, t0: float):
        self.data, self.beam, self.icm_iters, self.train_beam = data, beam, icm_iters, train_beam
        self.gen, self.t0 = gen, t0
        self.it, self.last_dt, self.t_encode = 0, 0.0, 0.0

    def heldout_error(self) -> float:
        codes = encode_normalized(self.data.zh, self.books, self.beam, self.icm_iters, self.table)
        return relative_error(self.data.zh, reconstruct(codes, self.books))

    def start(self, books: Tensor) -> None:
        self.books, self.table = books, cross_table(books)
        self.best_err, self.best = self.heldout_error(), books.clone()
        self.curve = [{"iter": 0, "time": time.time() - self.t0, "heldout_rel_err": self.best_err,
                       "reseeded": 0}]
        logger.info("init (residual k-means): held-out relative error %.4f", self.best_err)

    def out_of_time(self, time_budget: float | None) -> bool:
        """Opt-in wall-clock budget: the first iteration runs when the initialisation used
        less than half of it; later ones when one more iteration and the final usage pass fit."""
        if time_budget is None:
            return False
        spent = time.time() - self.t0
        late = spent > 0.5 * time_budget if self.it == 0 else \
            spent + self.last_dt + self.t_encode > time_budget
        if late:
            logger.info("time budget %.1fs reached after %d iterations", time_budget, self.it)
        return late

    def iteration(self, method: str, sgd: _SGD | None, ridge: float, reseed_frac: float) -> None:
        """Encode + least squares (or SGD steps), re-seed rare codewords, keep the best."""
        t_it = time.time()
        self.it += 1
        z, K = self.data.z, self.books.shape[1]
        if method == "lsq":
            codes = encode_normalized(z, self.books, self.train_beam, self.icm_iters, self.table)
            self.t_encode = time.time() - t_it
            self.books = lsq_update(z, codes, self.books, ridge)
            buf, buf_codes = z, codes
        else:
            buf, buf_codes = _sgd_steps(z, sgd.param, sgd.opt, sgd.batch_size, sgd.steps,
                                        sgd.estimator, self.train_beam, self.icm_iters, self.gen)
            self.books = sgd.param.detach().clone()
        min_count = max(1, round(reseed_frac * buf.shape[0] / K))
        self.books, n_reseeded = reseed_dead(buf, buf_codes, self.books, min_count, self.gen)
        if sgd is not None:
            with torch.no_grad():
                sgd.param.copy_(self.books)
        self.table = cross_table(self.books)
        err = self.heldout_error()
        if err < self.best_err:
            self.best_err, self.best = err, self.books.clone()
        self.curve.append({"iter": self.it, "time": time.time() - self.t0, "heldout_rel_err": err,
                           "reseeded": n_reseeded})
        logger.info("iter %d: held-out relative error %.4f (best %.4f), re-seeded %d codewords",
                    self.it, err, self.best_err, n_reseeded)
        self.last_dt = time.time() - t_it


def _revive_dead(z: Tensor, books: Tensor, beam: int, icm_iters: int, gen: torch.Generator):
    """Final pass: codewords no training frame uses are split off busy ones (see
    :func:`reseed_dead`). A changed codeword was unused, so frames only move to it when
    that lowers their error: the training error cannot increase.

    Returns:
        (codebooks, usage counts (N, K) on z, number of codewords revived).
    """
    codes = encode_normalized(z, books, beam, icm_iters)
    counts = usage_counts(codes, books.shape[1])
    if not (counts == 0).any():
        return books, counts, 0
    books, revived = reseed_dead(z, codes, books, 1, gen)
    counts = usage_counts(encode_normalized(z, books, beam, icm_iters), books.shape[1])
    return books, counts, revived


def _sgd_steps(z, param, opt, batch_size, steps, estimator, beam, icm_iters, gen):
    """``steps`` Adam steps on minibatches of z; returns the last batches and codes
    as the re-seeding buffer."""
    bufs, buf_codes = [], []
    for _ in range(steps):
        rows = torch.randint(z.shape[0], (min(batch_size, z.shape[0]),), generator=gen).to(z.device)
        zb = z[rows]
        with torch.no_grad():
            codes = encode_normalized(zb, param.detach(), beam, icm_iters)
        z_tilde, aux = quantize_with_estimator(zb, codes, param, estimator, gen)
        loss = ((z_tilde - zb) ** 2).sum(-1).mean() + aux
        opt.zero_grad()
        loss.backward()
        opt.step()
        bufs.append(zb)
        buf_codes.append(codes)
    keep = max(1, math.ceil(4 * param.shape[1] / max(1, batch_size)))  # >= 4 frames per codeword
    return torch.cat(bufs[-keep:]), torch.cat(buf_codes[-keep:])
