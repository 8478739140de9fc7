"""mvqkd.losses: transducer losses.

- :func:`rnnt_loss`: pure-PyTorch RNN-T loss with torchaudio's signature.
- :func:`transducer_loss`: same arguments plus ``backend="auto"|"torch"|"fast_rnnt"|"k2"``;
  uses a compiled implementation when one is importable (see :mod:`mvqkd.losses.backends`).
"""

from mvqkd.losses.backends import available_backends, resolve_backend, transducer_loss
from mvqkd.losses.rnnt import rnnt_loss

__all__ = ["rnnt_loss", "transducer_loss", "available_backends", "resolve_backend"]
