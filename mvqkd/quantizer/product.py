"""Product quantization in the additive format: codebook m only has non-zero entries on its
own block of dimensions, so the sum of one codeword per codebook is a concatenation of
per-block codewords (Jegou et al. 2011). Each block is coded by its nearest codeword, with
no interaction between codebooks: a code is a simple function of its block of the
embedding, which a student can predict far more easily than the jointly searched codes of
an additive quantizer (docs/RESULTS.md), at a higher reconstruction error.

The file format is the additive quantizer's (:class:`~mvqkd.quantizer.model.Quantizer`,
codebooks (N, K, D) with zeros outside each block); it encodes with beam 1 and no ICM,
which is exact here.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import Tensor

from mvqkd.quantizer.kmeans import kmeans

logger = logging.getLogger(__name__)


def block_bounds(dim: int, num_blocks: int) -> list[tuple[int, int]]:
    """Contiguous ``[start, stop)`` blocks of as equal a size as possible."""
    edges = np.linspace(0, dim, num_blocks + 1).round().astype(int)
    if np.any(np.diff(edges) < 1):
        raise ValueError(f"cannot split dim {dim} into {num_blocks} non-empty blocks")
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def product_codebooks(z: Tensor, num_codebooks: int, codebook_size: int, iters: int,
                      gen: torch.Generator) -> Tensor:
    """k-means (k-means++ seeds, ``iters`` Lloyd iterations) on each block of the normalised
    frames z (n, D) -> block-sparse codebooks (N, K, D)."""
    n, dim = z.shape
    books = z.new_zeros((num_codebooks, codebook_size, dim))
    for m, (a, b) in enumerate(block_bounds(dim, num_codebooks)):
        books[m, :, a:b] = kmeans(z[:, a:b].contiguous(), codebook_size, iters, gen)
        logger.info("product quantizer: block %d (dims %d-%d) done", m, a, b - 1)
    return books
