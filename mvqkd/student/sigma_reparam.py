"""sigma-Reparam linear layers (Zhai et al., ICML 2023).

``W_hat = (gamma / sigma(W)) W`` where ``sigma(W)`` is the spectral norm of ``W``,
estimated by ONE power-iteration step per training forward (vectors ``u``, ``v`` kept as
buffers, as ``torch.nn.utils.spectral_norm`` does), and ``gamma`` is a learned scalar
initialised to ``sigma(W)`` at construction, so that ``W_hat == W`` at init.
In eval mode the buffers are not updated.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SigmaReparamLinear(nn.Linear):
    """Drop-in :class:`torch.nn.Linear` with sigma-Reparam.

    Input ``(..., in_features)`` -> output ``(..., out_features)``. Extra state: parameter
    ``gamma`` (scalar), buffers ``u`` ``(out_features,)`` and ``v`` ``(in_features,)``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 init_iters: int = 20):
        super().__init__(in_features, out_features, bias=bias)
        g = torch.Generator().manual_seed(in_features * 7919 + out_features)
        self.register_buffer("u", F.normalize(torch.randn(out_features, generator=g), dim=0))
        self.register_buffer("v", F.normalize(torch.randn(in_features, generator=g), dim=0))
        for _ in range(init_iters):
            self._power_step()
        self.gamma = nn.Parameter(self.spectral_norm().detach().reshape(()))

    @torch.no_grad()
    def _power_step(self) -> None:
        w = self.weight
        self.v.copy_(F.normalize(w.t().mv(self.u), dim=0))
        self.u.copy_(F.normalize(w.mv(self.v), dim=0))

    def spectral_norm(self) -> torch.Tensor:
        """Current estimate ``u^T W v`` of ``sigma(W)`` (differentiable in ``W``)."""
        # clones: a later in-place power step must not invalidate this graph
        return torch.dot(self.u.clone(), self.weight.mv(self.v.clone()))

    def effective_weight(self) -> torch.Tensor:
        """``(gamma / sigma(W)) W``, shape ``(out_features, in_features)``."""
        if self.training:
            self._power_step()
        return self.weight * (self.gamma / self.spectral_norm())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight(), self.bias)


def make_linear(in_features: int, out_features: int, bias: bool = True,
                sigma_reparam: bool = False) -> nn.Linear:
    """``nn.Linear`` or :class:`SigmaReparamLinear` (used by every encoder linear)."""
    cls = SigmaReparamLinear if sigma_reparam else nn.Linear
    return cls(in_features, out_features, bias=bias)
