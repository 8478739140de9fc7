"""mvqkd.quantizer: additive multi-codebook quantizer, its training and metrics.

Public API (imported lazily so that ``mvqkd --help`` does not import torch)::

    q = train_quantizer(x, num_codebooks=8, codebook_size=256, time_budget=60)
    codes = q.encode(x)          # (..., N) uint8
    x_hat = q.decode(codes)      # (..., D)
    q.save("q.pt"); q = load_quantizer("q.pt")
"""

from mvqkd._lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {"Quantizer": "model", "load_quantizer": "model",
                                               "train_quantizer": "train",
                                               "codeword_neighbours": "metrics"})
