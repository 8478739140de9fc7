"""Conformer encoder of the transducer student: 4x Conv2d subsampling + Conformer blocks.

Frame rates: 100 Hz fbank ``(B, T, F)`` -> 25 Hz encoder frames ``(B, T', E)`` with

    T' = ceil(T / 4) = (T + 3) // 4          (see :func:`subsampled_lengths`)

(two Conv2d layers of kernel 3, stride 2, padding 1, each mapping L -> ceil(L / 2)).
Encoder frame t therefore covers fbank frames [4t, 4t + 4) and the 50 Hz teacher frames
2t and 2t + 1 (:func:`mvqkd.student.heads.align_teacher_to_student`).

Padding never leaks into valid frames: padded input frames are zeroed, the time axis is
re-masked between the two subsampling convolutions and before every depthwise convolution
(where a lone sequence would see zero padding), attention ignores padded keys, and the
layer norms are per frame (no batch norm). A sequence gives the same output alone or padded
in a batch (eval mode).

Blocks are macaron Conformers (Gulati et al. 2020): ``x + FF/2, x + MHSA, x + Conv,
x + FF/2, LayerNorm``. Self-attention is plain multi-head attention with rotary position
embeddings (relative positions, no extra parameters). Every ``nn.Linear`` can be
sigma-reparametrised (:mod:`mvqkd.student.sigma_reparam`). Each attention layer also
returns the per-head attention entropy (detached).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
from torch import nn

from mvqkd.conventions import SUBSAMPLING_FACTOR
from mvqkd.student.depthwise import depthwise_conv1d

from .sigma_reparam import make_linear


def subsampled_lengths(lens: torch.Tensor) -> torch.Tensor:
    """Encoder output lengths for fbank lengths ``lens`` (B,): ``ceil(lens / 4)``, the tensor
    form of :func:`mvqkd.conventions.subsampled_length` (two stride-2 convolutions)."""
    f = SUBSAMPLING_FACTOR
    return torch.div(lens + f - 1, f, rounding_mode="floor")


def padding_mask(lens: torch.Tensor, max_len: int) -> torch.Tensor:
    """``(B, max_len)`` bool, True at PADDED positions."""
    return torch.arange(max_len, device=lens.device)[None, :] >= lens[:, None]


class EncoderOutput(NamedTuple):
    """``out`` (B, T', E) final output; ``lens`` (B,); ``distill`` (B, T', E) output of the
    distillation layer; ``attn_entropy`` (num_layers, num_heads), detached."""

    out: torch.Tensor
    lens: torch.Tensor
    distill: torch.Tensor
    attn_entropy: torch.Tensor


class Conv2dSubsampling(nn.Module):
    """(B, T, F) -> (B, ceil(T/4), E): two Conv2d(3x3, stride 2, padding 1) + ReLU, then
    a linear layer on the flattened (channels x ceil(F/4)) frame.

    ``channels`` (default ``encoder_dim``, as icefall's conformer) sets the width of both
    convolutions; the second one runs at 50 Hz x F/2 and is the most expensive layer of a
    small encoder on CPU, so the demo preset narrows it."""

    def __init__(self, feature_dim: int, encoder_dim: int, dropout: float,
                 sigma_reparam: bool = False, channels: Optional[int] = None):
        super().__init__()
        ch = channels or encoder_dim
        self.conv1 = nn.Conv2d(1, ch, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, stride=2, padding=1)
        freq = (feature_dim + 3) // 4
        self.out = make_linear(ch * freq, encoder_dim, sigma_reparam=sigma_reparam)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, lens: torch.Tensor):
        x = x.masked_fill(padding_mask(lens, x.size(1))[:, :, None], 0.0)
        x = torch.relu(self.conv1(x.unsqueeze(1)))  # (B, C, ceil(T/2), F')
        half = torch.div(lens + 1, 2, rounding_mode="floor")
        x = x.masked_fill(padding_mask(half, x.size(2))[:, None, :, None], 0.0)
        x = torch.relu(self.conv2(x))  # (B, C, ceil(T/4), F'')
        b, c, t, f = x.shape
        x = self.out(x.permute(0, 2, 1, 3).reshape(b, t, c * f))
        return self.dropout(x), subsampled_lengths(lens)


def rotary_tables(length: int, head_dim: int, device, dtype):
    """cos / sin tables ``(length, head_dim)`` for rotary position embeddings."""
    inv = 1.0 / (10000 ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim))
    ang = torch.arange(length, device=device).float()[:, None] * inv[None, :]
    ang = torch.cat([ang, ang], dim=-1)
    return ang.cos().to(dtype), ang.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` (B, H, T, Dh) by position (rotate-half convention)."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def attention_entropy(p: torch.Tensor, query_valid: torch.Tensor) -> torch.Tensor:
    """Mean over valid queries (and batch) of ``-sum_k p log p``.

    ``p`` (B, H, Tq, Tk) attention weights (zero on padded keys), ``query_valid`` (B, Tq)
    bool -> (H,), detached.
    """
    with torch.no_grad():
        ent = torch.special.entr(p.detach().float()).sum(-1)  # (B, H, Tq)
        w = query_valid[:, None, :].to(ent.dtype)
        return (ent * w).sum((0, 2)) / w.sum((0, 2)).clamp(min=1.0)


class MultiHeadSelfAttention(nn.Module):
    """(B, T, E) -> (B, T, E) and per-head entropy (H,); padded keys are masked."""

    def __init__(self, dim: int, num_heads: int, dropout: float, sigma_reparam: bool = False):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = make_linear(dim, 3 * dim, sigma_reparam=sigma_reparam)
        self.out = make_linear(dim, dim, sigma_reparam=sigma_reparam)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pad: torch.Tensor, rope):
        b, t, _ = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.num_heads, self.head_dim).permute(
            2, 0, 3, 1, 4)  # each (B, H, T, Dh)
        q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        scores = scores.masked_fill(pad[:, None, None, :], float("-inf"))
        p = torch.softmax(scores, dim=-1)  # (B, H, T, T)
        entropy = attention_entropy(p, ~pad)
        y = torch.matmul(self.dropout(p), v).transpose(1, 2).reshape(b, t, -1)
        return self.out(y), entropy


class FeedForward(nn.Module):
    def __init__(self, dim: int, ff_dim: int, dropout: float, sigma_reparam: bool = False):
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(dim), make_linear(dim, ff_dim, sigma_reparam=sigma_reparam), nn.SiLU(),
            nn.Dropout(dropout), make_linear(ff_dim, dim, sigma_reparam=sigma_reparam),
            nn.Dropout(dropout))

    def forward(self, x):
        return self.net(x)


class ConvModule(nn.Module):
    """Conformer convolution module: pointwise + GLU, depthwise conv, LayerNorm, SiLU,
    pointwise. Pointwise convolutions are linear layers (so sigma-Reparam covers them)."""

    def __init__(self, dim: int, kernel: int, dropout: float, sigma_reparam: bool = False):
        super().__init__()
        self.norm_in = nn.LayerNorm(dim)
        self.pw1 = make_linear(dim, 2 * dim, sigma_reparam=sigma_reparam)
        self.depthwise = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.norm_mid = nn.LayerNorm(dim)
        self.pw2 = make_linear(dim, dim, sigma_reparam=sigma_reparam)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pad: torch.Tensor):
        y = nn.functional.glu(self.pw1(self.norm_in(x)), dim=-1)
        y = y.masked_fill(pad[:, :, None], 0.0)
        y = depthwise_conv1d(self.depthwise, y.transpose(1, 2)).transpose(1, 2)
        y = self.pw2(nn.functional.silu(self.norm_mid(y)))
        return self.dropout(y)


class ConformerBlock(nn.Module):
    """(B, T, E) -> (B, T, E), per-head attention entropy (H,)."""

    def __init__(self, dim, num_heads, ff_dim, kernel, dropout, sigma_reparam=False):
        super().__init__()
        self.ff1 = FeedForward(dim, ff_dim, dropout, sigma_reparam)
        self.norm_att = nn.LayerNorm(dim)
        self.attn = MultiHeadSelfAttention(dim, num_heads, dropout, sigma_reparam)
        self.att_dropout = nn.Dropout(dropout)
        self.conv = ConvModule(dim, kernel, dropout, sigma_reparam)
        self.ff2 = FeedForward(dim, ff_dim, dropout, sigma_reparam)
        self.norm_out = nn.LayerNorm(dim)

    def forward(self, x, pad, rope):
        x = x + 0.5 * self.ff1(x)
        a, entropy = self.attn(self.norm_att(x), pad, rope)
        x = x + self.att_dropout(a)
        x = x + self.conv(x, pad)
        x = x + 0.5 * self.ff2(x)
        x = self.norm_out(x).masked_fill(pad[:, :, None], 0.0)
        return x, entropy


class ConformerEncoder(nn.Module):
    """fbank (B, T, F), lengths (B,) -> :class:`EncoderOutput` at 25 Hz.

    ``distill_layer`` is 1-based: its block's output is returned as ``distill``.
    """

    def __init__(self, feature_dim: int, encoder_dim: int, num_layers: int, num_heads: int,
                 ff_dim: int, conv_kernel: int, dropout: float, distill_layer: int,
                 sigma_reparam: bool = False, subsampling_channels: Optional[int] = None):
        super().__init__()
        if not 1 <= distill_layer <= num_layers:
            raise ValueError(f"distill_layer={distill_layer} not in [1, {num_layers}]")
        self.distill_layer = distill_layer
        self.num_heads = num_heads
        self.subsampling = Conv2dSubsampling(feature_dim, encoder_dim, dropout, sigma_reparam,
                                             subsampling_channels)
        self.layers = nn.ModuleList([
            ConformerBlock(encoder_dim, num_heads, ff_dim, conv_kernel, dropout, sigma_reparam)
            for _ in range(num_layers)])

    def forward(self, features: torch.Tensor, feature_lens: torch.Tensor) -> EncoderOutput:
        if features.dim() != 3:
            raise ValueError(f"features must be (B, T, F), got shape {tuple(features.shape)}")
        feature_lens = feature_lens.to(features.device)
        if feature_lens.numel() != features.size(0):
            raise ValueError(f"feature_lens has {feature_lens.numel()} entries for a batch of "
                             f"{features.size(0)}")
        if (feature_lens < 1).any() or (feature_lens > features.size(1)).any():
            raise ValueError(f"feature_lens must be in [1, {features.size(1)}], got "
                             f"{feature_lens.tolist()}")
        x, lens = self.subsampling(features, feature_lens)
        pad = padding_mask(lens, x.size(1))
        x = x.masked_fill(pad[:, :, None], 0.0)
        rope = rotary_tables(x.size(1), self.layers[0].attn.head_dim, x.device, x.dtype)
        entropies, distill = [], None
        for i, layer in enumerate(self.layers, start=1):
            x, ent = layer(x, pad, rope)
            entropies.append(ent)
            if i == self.distill_layer:
                distill = x
        return EncoderOutput(x, lens, distill, torch.stack(entropies))
