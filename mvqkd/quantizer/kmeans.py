"""k-means with k-means++ seeding (vectorised torch, deterministic for a generator).

Shapes: n = points, D = dim, K = clusters.
"""

from __future__ import annotations

import torch
from torch import Tensor


def sq_dists(x: Tensor, centers: Tensor) -> Tensor:
    """(n, D), (K, D) -> (n, K) squared Euclidean distances."""
    return (
        (x * x).sum(1, keepdim=True) - 2.0 * x @ centers.T + (centers * centers).sum(1).unsqueeze(0)
    ).clamp_min_(0.0)


def sample_proportional(weights: Tensor, num: int, gen: torch.Generator) -> Tensor:
    """Draw ``num`` distinct indexes with probability proportional to ``weights`` (n,).

    Draws on the CPU generator so that results do not depend on the device.
    """
    w = weights.detach().double().cpu().clamp_min(0)
    if float(w.sum()) <= 0 or int((w > 0).sum()) < num:
        w = w + 1e-12
    return torch.multinomial(w, num, replacement=False, generator=gen).to(weights.device)


def kmeans_plusplus(x: Tensor, k: int, gen: torch.Generator) -> Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007).

    Args:
        x: (n, D) with n >= k.
    Returns:
        (k, D) initial centers, rows of x.
    """
    n = x.shape[0]
    x2 = (x * x).sum(1)
    chosen = [int(torch.randint(n, (1,), generator=gen))]
    d2 = (x2 - 2.0 * (x @ x[chosen[0]]) + x2[chosen[0]]).clamp_min_(0.0)
    for _ in range(1, k):
        i = int(sample_proportional(d2, 1, gen))
        chosen.append(i)
        d2 = torch.minimum(d2, (x2 - 2.0 * (x @ x[i]) + x2[i]).clamp_min_(0.0))
    return x[torch.tensor(chosen, device=x.device)].clone()


def segment_sum(idx: Tensor, values: Tensor, size: int, chunk: int = 8192) -> Tensor:
    """Sum the rows of ``values`` (n, D) into ``size`` bins given by ``idx`` (n,).

    Deterministic on every device: ``index_add_`` on CPU, one-hot matmuls on CUDA
    (whose float ``index_add_`` uses atomics).
    """
    out = values.new_zeros((size, values.shape[1]))
    if not values.is_cuda:
        return out.index_add_(0, idx, values)
    for s in range(0, idx.shape[0], chunk):
        onehot = torch.nn.functional.one_hot(idx[s : s + chunk], size).to(values.dtype)
        out += onehot.T @ values[s : s + chunk]
    return out


def assign(x: Tensor, centers: Tensor, chunk: int = 8192) -> tuple[Tensor, Tensor]:
    """Nearest center per point: (n,) indexes and (n,) squared distances."""
    idx, dist = [], []
    for s in range(0, x.shape[0], chunk):
        d, i = sq_dists(x[s : s + chunk], centers).min(1)
        idx.append(i)
        dist.append(d)
    return torch.cat(idx), torch.cat(dist)


def kmeans(x: Tensor, k: int, iters: int, gen: torch.Generator) -> Tensor:
    """Lloyd's k-means from k-means++ seeds; empty clusters are re-seeded from
    the points farthest from their centers.

    Args:
        x: (n, D), n >= k.
    Returns:
        (k, D) centers.
    """
    if x.shape[0] < k:
        raise ValueError(f"k-means needs at least {k} points, got {x.shape[0]}")
    centers = kmeans_plusplus(x, k, gen)
    for _ in range(iters):
        idx, dist = assign(x, centers)
        counts = torch.bincount(idx, minlength=k)
        sums = segment_sum(idx, x, k)
        new = sums / counts.clamp_min(1).unsqueeze(1).to(x.dtype)
        empty = (counts == 0).nonzero().flatten()
        if len(empty):
            new[empty] = x[sample_proportional(dist, len(empty), gen)]
        centers = new
    return centers
