"""Depthwise 1-D convolution without torch's per-channel loop in the forward pass.

The student has two depthwise ``nn.Conv1d`` (``groups == channels``): the Conformer
convolution module's (kernel 15) and the stateless predictor's (kernel ``context_size``,
called once per frame of beam search). On CPU with oneDNN off (``MVQKD_PORTABLE_KERNELS=1``,
the recipe's default) torch runs a grouped convolution as one im2col + GEMM per channel:
~150 calls per predictor step, most of the time of a decode in that setting, and ~30% of a
depthwise convolution's training time.

:func:`depthwise_conv1d` computes the same sum as that GEMM, kernel tap by kernel tap:
``y[n, c, t] = sum_k w[c, k] x[n, c, t + k]`` accumulated in k order with fused multiply-adds,
which is bit for bit what the per-channel GEMM returns under the portable setting (MKL's AVX2
branch, on every processor; ``tests/student/test_depthwise.py``); MKL's other paths may sum in
another order, a difference in the last bits. Where autograd records (training), the backward
is torch's own convolution backward, called with the convolution's arguments, so the
gradients and the trained weights are those of ``nn.Conv1d`` bit for bit (a backward through
the taps would sum the weight gradient in another order). Tracing and ONNX export keep
``nn.Conv1d`` (an exported model keeps its ``Conv`` node).
"""

from __future__ import annotations

import torch
from torch import nn


def _uses_loop(conv: nn.Conv1d, x: torch.Tensor) -> bool:
    """Whether :func:`depthwise_conv1d` replaces ``conv(x)``'s forward (see the module docstring)."""
    return (x.device.type == "cpu"
            and not torch.backends.mkldnn.enabled
            and not torch.is_autocast_enabled("cpu")  # --amp: the convolution's own precision
            and not torch.jit.is_tracing() and not torch.onnx.is_in_onnx_export()
            and conv.groups == conv.in_channels == conv.out_channels
            and conv.stride == (1,) and conv.dilation == (1,) and conv.padding_mode == "zeros"
            and not isinstance(conv.padding, str))


def _taps(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, pad: int) -> torch.Tensor:
    """``x`` (N, C, L), ``w`` (C, 1, K) -> (N, C, L + 2 pad - K + 1): K fused multiply-adds over
    shifted views, in tap order (the per-channel GEMM's sum)."""
    if pad:
        x = nn.functional.pad(x, (pad, pad))
    w = w[:, 0, :]  # (C, K)
    K = w.shape[1]
    L = x.shape[-1] - K + 1
    y = x[..., :L] * w[:, :1]
    for k in range(1, K):
        y = torch.addcmul(y, x[..., k:k + L], w[:, k:k + 1])
    if bias is not None:
        y = y + bias[:, None]
    return y


class _TapsThenConvBackward(torch.autograd.Function):
    """The taps forward, and for the backward the very call autograd makes for ``conv(x)``
    (``aten::convolution_backward`` with the convolution's arguments): the gradients, and so the
    trained weights, are bit for bit those of ``nn.Conv1d`` (``tests/student/test_depthwise.py``)."""

    @staticmethod
    def forward(ctx, x, weight, bias, pad):
        ctx.save_for_backward(x, weight)
        ctx.pad, ctx.has_bias = pad, bias is not None
        return _taps(x, weight, bias, pad)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        channels = weight.shape[0]
        want = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]]
        gx, gw, gb = torch.ops.aten.convolution_backward(
            grad, x, weight, [channels] if ctx.has_bias else None, [1], [ctx.pad], [1], False, [0],
            channels, want)
        return gx, gw, gb, None


def depthwise_conv1d(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` for a depthwise ``conv``: ``x`` (N, C, L) -> (N, C, L + 2 p - K + 1).

    On CPU with oneDNN off, K fused multiply-adds over shifted views (the sum torch's
    per-channel GEMM computes, in its order) and, where autograd records, torch's own
    convolution backward; otherwise ``conv(x)`` itself.
    """
    if not _uses_loop(conv, x):
        return conv(x)
    if torch.is_grad_enabled():  # autograd records the Function only where an input needs it
        return _TapsThenConvBackward.apply(x, conv.weight, conv.bias, conv.padding[0])
    return _taps(x, conv.weight, conv.bias, conv.padding[0])
