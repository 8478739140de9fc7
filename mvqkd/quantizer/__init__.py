"""mvqkd.quantizer: additive multi-codebook quantizer, its training and metrics.

Public API::

    q = train_quantizer(x, num_codebooks=8, codebook_size=256, time_budget=60)
    codes = q.encode(x)          # (..., N) uint8
    x_hat = q.decode(codes)      # (..., D)
    q.save("q.pt"); q = load_quantizer("q.pt")
"""

from mvqkd.quantizer.model import Quantizer, load_quantizer


def train_quantizer(*args, **kwargs):
    """See :func:`mvqkd.quantizer.train.train_quantizer`."""
    from mvqkd.quantizer.train import train_quantizer as _train

    return _train(*args, **kwargs)


__all__ = ["Quantizer", "load_quantizer", "train_quantizer"]
