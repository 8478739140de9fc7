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


def exact_spectral_vectors(state_dict: dict) -> dict:
    """``state_dict`` with every sigma-Reparam layer's ``u`` and ``v`` set to the top left
    and right singular vectors of its ``weight`` (float64 SVD), so that the layer's
    ``spectral_norm()`` is exactly ``||W||_2``; other entries are passed through.

    For state dicts that are means of several models (``--avg N``, ``--use-averaged-model``):
    ``u`` and ``v`` are unit vectors that one power step per training step keeps near W's
    top singular pair, and when the two largest singular values are close that pair can
    turn between checkpoints (between epochs 4 and 5 of a demo student, ``u . u'`` down to
    -0.79). Their mean is then short (norm 0.33) and far from the averaged W's singular
    vectors, ``u^T W v`` underestimates ``sigma(W)`` up to 11x, and every such layer's
    effective weight ``gamma W / sigma`` comes out that much too large.
    A sigma-Reparam layer is recognised by the four entries ``P.weight`` ``(out, in)``,
    ``P.gamma`` ``()``, ``P.u`` ``(out,)`` and ``P.v`` ``(in,)``."""
    out = dict(state_dict)
    for key in state_dict:
        if not key.endswith("gamma"):
            continue
        prefix = key[: -len("gamma")]
        w, u, v = (state_dict.get(prefix + name) for name in ("weight", "u", "v"))
        if w is None or u is None or v is None or w.dim() != 2 or u.shape != w.shape[:1] \
                or v.shape != w.shape[1:]:
            continue
        left, _, right = torch.linalg.svd(w.detach().to(torch.float64), full_matrices=False)
        out[prefix + "u"] = left[:, 0].to(u.dtype)
        out[prefix + "v"] = right[0].to(v.dtype)
    return out


def make_linear(in_features: int, out_features: int, bias: bool = True,
                sigma_reparam: bool = False) -> nn.Linear:
    """``nn.Linear`` or :class:`SigmaReparamLinear` (used by every encoder linear)."""
    cls = SigmaReparamLinear if sigma_reparam else nn.Linear
    return cls(in_features, out_features, bias=bias)
