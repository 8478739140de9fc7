"""mvqkd.quantizer: additive multi-codebook quantizer, its training and metrics.

Public API (imported lazily so that ``mvqkd --help`` does not import torch)::

    q = train_quantizer(x, num_codebooks=8, codebook_size=256, time_budget=60)
    codes = q.encode(x)          # (..., N) uint8
    x_hat = q.decode(codes)      # (..., D)
    q.save("q.pt"); q = load_quantizer("q.pt")
"""

import importlib

_EXPORTS = {"Quantizer": "model", "load_quantizer": "model", "train_quantizer": "train"}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
