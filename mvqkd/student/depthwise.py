"""Depthwise 1-D convolution for inference without torch's per-channel loop.

The student has two depthwise ``nn.Conv1d`` (``groups == channels``): the Conformer
convolution module's (kernel 15) and the stateless predictor's (kernel ``context_size``,
called once per frame of beam search). On CPU with oneDNN off (``MVQKD_PORTABLE_KERNELS=1``,
the recipe's default) torch runs a grouped convolution as one im2col + GEMM per channel:
~150 calls per predictor step, most of the time of a decode in that setting.

:func:`depthwise_conv1d` computes the same sum as that GEMM, kernel tap by kernel tap:
``y[n, c, t] = sum_k w[c, k] x[n, c, t + k]`` accumulated in k order with fused multiply-adds,
which is bit for bit what the per-channel GEMM returns under the portable setting (MKL's AVX2
branch, on every processor; ``tests/student/test_depthwise.py``); MKL's other paths may sum in
another order, a difference in the last bits.
It is used only where no gradient is recorded (validation, decoding); training keeps
``nn.Conv1d`` (a different backward would change the trained weights), and so do tracing and
ONNX export (an exported model keeps its ``Conv`` node).
"""

from __future__ import annotations

import torch
from torch import nn


def _uses_loop(conv: nn.Conv1d, x: torch.Tensor) -> bool:
    """Whether :func:`depthwise_conv1d` replaces ``conv(x)`` (see the module docstring)."""
    return (x.device.type == "cpu" and not torch.is_grad_enabled()
            and not torch.backends.mkldnn.enabled
            and not torch.jit.is_tracing() and not torch.onnx.is_in_onnx_export()
            and conv.groups == conv.in_channels == conv.out_channels
            and conv.stride == (1,) and conv.dilation == (1,) and conv.padding_mode == "zeros"
            and not isinstance(conv.padding, str))


def depthwise_conv1d(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` for a depthwise ``conv``: ``x`` (N, C, L) -> (N, C, L + 2 p - K + 1).

    Without autograd on CPU with oneDNN off, K fused multiply-adds over shifted views (the
    sum torch's per-channel GEMM computes, in its order); otherwise ``conv(x)`` itself.
    """
    if not _uses_loop(conv, x):
        return conv(x)
    pad = conv.padding[0]
    if pad:
        x = nn.functional.pad(x, (pad, pad))
    w = conv.weight[:, 0, :]  # (C, K)
    K = w.shape[1]
    L = x.shape[-1] - K + 1
    y = x[..., :L] * w[:, :1]
    for k in range(1, K):
        y = torch.addcmul(y, x[..., k:k + L], w[:, k:k + 1])
    if conv.bias is not None:
        y = y + conv.bias[:, None]
    return y
