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

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from mvqkd.quantizer.estimators import ESTIMATORS, quantize_with_estimator
from mvqkd.quantizer.kmeans import assign, kmeans, sample_proportional, segment_sum
from mvqkd.quantizer.metrics import relative_error, usage_counts, usage_stats
from mvqkd.quantizer.model import ALLOWED_NUM_CODEBOOKS, MAX_CODEBOOK_SIZE, Quantizer
from mvqkd.quantizer.search import cross_table, encode_normalized, reconstruct

logger = logging.getLogger(__name__)

MAX_JOINT_LSQ = 4096  # N*K up to which the joint normal equations are solved directly


def residual_kmeans_init(
    z: Tensor, num_codebooks: int, codebook_size: int, iters: int, gen: torch.Generator,
    deadline: float | None = None,
) -> Tensor:
    """Residual k-means (k-means++ seeded) initialisation.

    Args:
        z: (n, D) normalised frames, n >= codebook_size.
        deadline: ``time.time()`` after which the remaining codebooks get k-means++
            seeds and one Lloyd iteration, so a time budget is respected.
    Returns:
        (N, K, D) codebooks.
    """
    residual = z.clone()
    books = []
    for _ in range(num_codebooks):
        late = deadline is not None and time.time() > deadline
        c = kmeans(residual, codebook_size, min(1, iters) if late else iters, gen)
        idx, _ = assign(residual, c)
        residual = residual - c[idx]
        books.append(c)
    return torch.stack(books)


def lsq_update(z: Tensor, codes: Tensor, codebooks: Tensor, ridge: float = 1e-2) -> Tensor:
    """Least-squares codebooks for fixed codes.

    Minimises ``||Z - B C||^2 + ridge ||C - C_old||^2`` over all codewords, B the
    (n, N*K) one-hot code matrix. Solved jointly (Cholesky of the N*K x N*K normal
    matrix, built from code co-occurrence counts) when N*K <= MAX_JOINT_LSQ, else by
    one block Gauss-Seidel sweep (each codebook exact given the others).

    Args:
        z: (n, D); codes: (n, N) int64; codebooks: (N, K, D) current values.
    Returns:
        (N, K, D) updated codebooks. Unused codewords keep their old value.
    """
    n, D = z.shape
    N, K, _ = codebooks.shape
    NK = N * K
    flat = codes + torch.arange(N, device=codes.device) * K  # (n, N)
    if NK <= MAX_JOINT_LSQ:
        pairs = (flat.unsqueeze(2) * NK + flat.unsqueeze(1)).flatten()
        gram = torch.bincount(pairs, minlength=NK * NK).view(NK, NK).double()
        gram.diagonal().add_(ridge)
        rhs = ridge * codebooks.reshape(NK, D).double()
        zd = z.double()
        for m in range(N):
            rhs += segment_sum(flat[:, m], zd, NK)
        chol = torch.linalg.cholesky(gram)
        return torch.cholesky_solve(rhs, chol).float().view(N, K, D)
    books = codebooks.clone()
    residual = z - reconstruct(codes, books)
    for m in range(N):
        residual += books[m][codes[:, m]]
        counts = torch.bincount(codes[:, m], minlength=K).to(z.dtype)
        sums = segment_sum(codes[:, m], residual, K)
        books[m] = (sums + ridge * books[m]) / (counts + ridge).unsqueeze(1)
        residual -= books[m][codes[:, m]]
    return books


def reseed_dead(
    z: Tensor, codes: Tensor, codebooks: Tensor, min_count: int, gen: torch.Generator,
    alpha: float = 0.3,
) -> tuple[Tensor, int]:
    """Re-seed rarely used codewords from the buffer ``z`` of recent frames.

    A codeword of codebook m used fewer than ``min_count`` times is moved next to a
    busy one: a frame is drawn with probability proportional to its squared error
    (k-means++ style) and the codeword becomes ``C[m, i_m] + alpha * (z - z_hat)``,
    i.e. it splits the cluster of that frame towards it. (Copying the frame's full
    residual, ``alpha = 1``, tends to make singletons in high dimensions.)

    Args:
        z: (n, D) buffer; codes: (n, N) its codes under ``codebooks`` (N, K, D).
    Returns:
        (new codebooks, number of codewords re-seeded).
    """
    N, K, _ = codebooks.shape
    counts = usage_counts(codes, K)
    books = codebooks.clone()
    z_hat = reconstruct(codes, books)
    err = ((z - z_hat) ** 2).sum(1)
    total = 0
    for m in range(N):
        dead = (counts[m] < min_count).nonzero().flatten()
        if len(dead) == 0:
            continue
        num = min(len(dead), z.shape[0])
        rows = sample_proportional(err, num, gen)
        donor = books[m][codes[rows, m]]
        books[m, dead[:num]] = donor + alpha * (z[rows] - z_hat[rows])
        err[rows] = 0.0  # do not hand the same frame to two codebooks
        total += num
    return books, total


NORMALIZE_MODES = ("global", "per-dim")


def _check_args(x: Tensor, num_codebooks: int, codebook_size: int, method: str, estimator: str,
                normalize: str = "global"):
    if normalize not in NORMALIZE_MODES:
        raise ValueError(f"normalize must be one of {NORMALIZE_MODES}, got {normalize!r}")
    if num_codebooks not in ALLOWED_NUM_CODEBOOKS:
        raise ValueError(f"num_codebooks must be one of {ALLOWED_NUM_CODEBOOKS}, got {num_codebooks}")
    if not 2 <= codebook_size <= MAX_CODEBOOK_SIZE:
        raise ValueError(f"codebook_size must be in [2, {MAX_CODEBOOK_SIZE}], got {codebook_size}")
    if method not in ("lsq", "sgd"):
        raise ValueError(f"method must be 'lsq' or 'sgd', got {method!r}")
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
        method: "lsq" (alternating encode / joint least squares) or "sgd"
            (Adam through ``estimator``).
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
    device = torch.device(device)
    n_all, D = x.shape
    n_held = min(max_heldout, int(n_all * heldout_frac)) if n_all > 2 * codebook_size else 0
    if n_all - n_held < codebook_size:
        raise ValueError(
            f"{n_all} training frames are fewer than codebook_size={codebook_size} codewords; "
            "give more frames or a smaller codebook"
        )
    perm = torch.randperm(n_all, generator=gen)
    x = x[perm].to(device)
    held, train = x[:n_held], x[n_held:]
    if iters is None:
        iters = 10 if time_budget is None else 10**9
    train_beam = beam if train_beam is None else train_beam

    mean, scale = input_normalisation(train, normalize)
    z = (train - mean) / scale
    zh = (held - mean) / scale if n_held else z[: min(2000, z.shape[0])]

    kf = min(z.shape[0], kmeans_frames or 10 * codebook_size)
    deadline = None if time_budget is None else t0 + 0.3 * time_budget
    books = residual_kmeans_init(z[:kf], num_codebooks, codebook_size, kmeans_iters, gen, deadline)

    def heldout_error(b: Tensor, table: Tensor) -> float:
        codes = encode_normalized(zh, b, beam, icm_iters, table)
        return relative_error(zh, reconstruct(codes, b))

    table = cross_table(books)
    best_err = heldout_error(books, table)
    t_encode = 0.0  # measured time to encode the training frames (the final pass does it again)
    best = books.clone()
    curve = [{"iter": 0, "time": time.time() - t0, "heldout_rel_err": best_err, "reseeded": 0}]
    logger.info("init (residual k-means): held-out relative error %.4f", best_err)
    opt = None
    if method == "sgd":
        param = books.clone().requires_grad_(True)
        opt = torch.optim.Adam([param], lr=lr)
    bar = tqdm(total=None if iters >= 10**9 else iters, desc="train-quantizer", disable=not progress)
    last_dt = 0.0
    it = 0
    while it < iters:
        t_it = time.time()
        # the first iteration runs when the initialisation used less than half the budget;
        # later ones when one more iteration plus the final usage pass still fit
        if time_budget is not None and (
            (it == 0 and t_it - t0 > 0.5 * time_budget)
            or (it > 0 and (t_it - t0) + last_dt + t_encode > time_budget)
        ):
            logger.info("time budget %.1fs reached after %d iterations", time_budget, it)
            break
        it += 1
        if method == "lsq":
            codes = encode_normalized(z, books, train_beam, icm_iters, table)
            t_encode = time.time() - t_it
            books = lsq_update(z, codes, books, ridge)
            buf, buf_codes = z, codes
        else:
            buf, buf_codes = _sgd_steps(z, param, opt, batch_size, steps_per_iter, estimator,
                                        train_beam, icm_iters, gen)
            books = param.detach().clone()
        min_count = max(1, round(reseed_frac * buf.shape[0] / codebook_size))
        books, n_reseeded = reseed_dead(buf, buf_codes, books, min_count, gen)
        if method == "sgd":
            with torch.no_grad():
                param.copy_(books)
        table = cross_table(books)
        err = heldout_error(books, table)
        if err < best_err:
            best_err, best = err, books.clone()
        curve.append({"iter": it, "time": time.time() - t0, "heldout_rel_err": err,
                      "reseeded": n_reseeded})
        logger.info("iter %d: held-out relative error %.4f (best %.4f), re-seeded %d codewords",
                    it, err, best_err, n_reseeded)
        bar.update(1)
        bar.set_postfix(rel_err=f"{err:.4f}", best=f"{best_err:.4f}")
        last_dt = time.time() - t_it
    bar.close()

    best, counts, revived = _revive_dead(z, best, beam, icm_iters, gen)
    q = Quantizer(best, mean, scale, beam=beam, icm_iters=icm_iters)
    q.history = {
        "curve": curve,
        "usage": counts.cpu().tolist(),
        "usage_stats": usage_stats(counts),
        "heldout_rel_err": best_err,
        "train_frames": int(train.shape[0]),
        "heldout_frames": int(n_held),
        "revived_at_end": revived,
        "train_seconds": time.time() - t0,
        "args": {"method": method, "estimator": estimator, "seed": seed, "iters_done": it,
                 "normalize": normalize,
                 "time_budget": time_budget, "train_beam": train_beam},
    }
    logger.info("trained %s: held-out relative error %.4f, %d dead codewords on training frames, "
                "%.1fs", q, best_err, q.history["usage_stats"]["dead_total"], time.time() - t0)
    return q


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
