"""mvqkd.losses: transducer losses.

- :func:`rnnt_loss`: pure-PyTorch RNN-T loss with torchaudio's signature.
- :func:`transducer_loss`: same arguments plus ``backend="auto"|"torch"|"fast_rnnt"|"k2"``;
  uses a compiled implementation when one is importable (see :mod:`mvqkd.losses.backends`).
- k2's pruned RNN-T API in plain PyTorch (:mod:`mvqkd.losses.pruned`):
  :func:`rnnt_loss_simple`, :func:`rnnt_loss_smoothed`, :func:`get_rnnt_prune_ranges`,
  :func:`do_rnnt_pruning`, :func:`rnnt_loss_pruned` (and k2's full ``rnnt_loss`` signature
  as ``mvqkd.losses.pruned.rnnt_loss``).
"""

from mvqkd.losses.backends import available_backends, resolve_backend, transducer_loss
from mvqkd.losses.pruned import (do_rnnt_pruning, get_rnnt_prune_ranges, rnnt_loss_pruned,
                                 rnnt_loss_simple, rnnt_loss_smoothed)
from mvqkd.losses.rnnt import rnnt_loss

__all__ = ["rnnt_loss", "transducer_loss", "available_backends", "resolve_backend",
           "rnnt_loss_simple", "rnnt_loss_smoothed", "get_rnnt_prune_ranges", "do_rnnt_pruning",
           "rnnt_loss_pruned"]
