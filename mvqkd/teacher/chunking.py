"""Long utterances in bounded memory: the two ways a teacher runs a recording longer than
``--chunk-seconds`` (:meth:`mvqkd.teacher.model.Teacher.extract_chunked`).

``windows`` (the default)
    The whole teacher runs on windows of at most ``chunk_frames`` frames that overlap by
    ``overlap_frames`` on each side; only their centres are kept. Time is linear in the
    length and no activation grows with it. Through global self-attention a window cannot
    see the rest of the file, so its frames differ a little from a whole-file pass
    (relative squared error 2e-5 for the tiny test teacher at 10 minutes, which changes 10%
    of the additive quantizer's code frames: docs/benchmarks.md).

``front-end``
    Only the convolutional front-end runs in chunks: it works at 3.2 kHz with 512 channels
    (for HuBERT base / large), 64 times the frame rate, and a whole-file pass spends most of
    its memory there. Its frames are a local function of the waveform, so chunks aligned on
    the 320-sample stride give exactly the whole-file frames. The transformer layers then see
    the whole recording (transformers' SDPA attention, whose memory is linear in the length
    on CPU and CUDA), so the embeddings equal a whole-file pass up to float rounding. Memory
    grows with frames x hidden size (a few copies of the output itself), attention time with
    the square of the length.

In both modes the waveform is normalised once, as a whole (``do_normalize``), and so is the
first convolution's output of a group-norm front-end (base-style checkpoints normalise it
per channel over the whole input): a first pass computes those statistics piece by piece
(:func:`whole_file_group_norm`), so that no chunk or window is normalised on its own.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch

from mvqkd.conventions import TEACHER_MIN_SAMPLES, TEACHER_STRIDE

#: model types whose attention memory grows with the square of the length (WavLM's relative
#: position bias is a (heads, T, T) tensor), which ``front-end`` chunking cannot bound
QUADRATIC_ATTENTION = ("wavlm",)
#: samples per piece of the group-norm statistics pass: 10 s (HuBERT base's first convolution
#: then holds 512 x 32,000 values, 64 MiB, plus their float64 copy)
STATISTICS_PIECE_SAMPLES = 160_000


def frame_span(a: int, b: int) -> tuple[int, int]:
    """The samples ``[start, stop)`` that produce teacher frames ``a .. b-1`` (stride 320,
    receptive field 400)."""
    return a * TEACHER_STRIDE, (b - 1) * TEACHER_STRIDE + TEACHER_MIN_SAMPLES


def windows(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, total: int,
            chunk_frames: int, overlap_frames: int) -> torch.Tensor:
    """``windows`` mode.

    Args:
        forward: prepared waveform ``(S,)`` -> frames ``(num_frames(S), D)``.
        x: the prepared waveform ``(S,)`` of ``total`` frames.
    Returns:
        ``(total, D)``: each window's centre, ``overlap_frames`` of context on each side dropped.
    """
    step = chunk_frames - 2 * overlap_frames
    if step < 1:
        raise ValueError(f"chunk of {chunk_frames} frames leaves nothing between overlaps of "
                         f"{overlap_frames}")
    out = []
    for start in range(0, total, step):
        a, b = max(0, start - overlap_frames), min(total, start + step + overlap_frames)
        lo, hi = frame_span(a, b)
        emb = forward(x[lo:hi])
        out.append(emb[start - a: start - a + min(step, total - start)])
    return torch.cat(out)


class ChunkedFeatureEncoder(torch.nn.Module):
    """Stands in for a transformers SSL model's ``feature_extractor`` (``HubertFeatureEncoder``
    and its wav2vec2 / data2vec-audio / WavLM twins) during one forward: the same output
    ``(1, C, T)`` for an input ``(1, S)``, computed on chunks of at most ``chunk_frames``
    frames (a group norm inside must already hold the whole file's statistics:
    :func:`whole_file_group_norm`).

    Args:
        encoder: the model's feature encoder.
        chunk_frames: frames per chunk.
        total: frames of the whole input (the teacher's ``num_frames(S)``).
    """

    def __init__(self, encoder: torch.nn.Module, chunk_frames: int, total: int):
        super().__init__()
        self.encoder = encoder
        self.chunk_frames = chunk_frames
        self.total = total

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != 1:
            raise ValueError("front-end chunking runs one utterance at a time")
        parts = []
        for a in range(0, self.total, self.chunk_frames):
            lo, hi = frame_span(a, min(self.total, a + self.chunk_frames))
            parts.append(self.encoder(x[:, lo:hi]))
        return torch.cat(parts, dim=2)


@contextlib.contextmanager
def chunked_front_end(model: torch.nn.Module, chunk_frames: int, total: int):
    """Inside: ``model.feature_extractor`` (a transformers SSL model's) is a
    :class:`ChunkedFeatureEncoder` around itself, for an input of ``total`` frames."""
    encoder = model.feature_extractor
    model.feature_extractor = ChunkedFeatureEncoder(encoder, chunk_frames, total)
    try:
        yield
    finally:
        model.feature_extractor = encoder


@contextlib.contextmanager
def whole_file_group_norm(encoder: torch.nn.Module, x: torch.Tensor):
    """Inside: a group-norm front-end's first norm (``encoder.conv_layers[0].layer_norm``, a
    per-channel ``GroupNorm`` over time) uses the statistics of the whole waveform ``x``
    ``(S,)`` (:func:`conv_statistics`) instead of those of each chunk or window it is given,
    as the waveform itself is normalised once, as a whole. For teachers whose
    ``TeacherInfo.group_norm`` is set (the caller decides)."""
    first = encoder.conv_layers[0]
    norm = first.layer_norm
    if not isinstance(norm, torch.nn.GroupNorm) or norm.num_groups != norm.num_channels:
        raise ValueError(f"chunked extraction supports a per-channel GroupNorm after the first "
                         f"convolution, not {norm}")
    mean, var = conv_statistics(first.conv, x, STATISTICS_PIECE_SAMPLES)
    first.layer_norm = FixedChannelNorm(mean, var, norm)
    try:
        yield
    finally:
        first.layer_norm = norm


def conv_statistics(conv: torch.nn.Conv1d, x: torch.Tensor, piece_samples: int) -> tuple[torch.Tensor, ...]:
    """Per-channel mean and (biased) variance over time of ``conv(x)``, the whole-file
    statistics of a group norm, computed on pieces of about ``piece_samples`` samples.

    Args:
        conv: one-input-channel convolution (the front-end's first layer).
        x: waveform ``(S,)``.
    Returns:
        ``(C,)`` mean and ``(C,)`` variance, on ``conv``'s device, in its dtype.
    """
    (k,), (s,) = conv.kernel_size, conv.stride
    n_out = (x.numel() - k) // s + 1
    per = max(1, piece_samples // s)
    total = torch.zeros(conv.out_channels, dtype=torch.float64, device=conv.weight.device)
    squares = torch.zeros_like(total)
    for j in range(0, n_out, per):
        j1 = min(n_out, j + per)
        piece = x[j * s:(j1 - 1) * s + k].to(conv.weight)
        y = conv(piece[None, None])[0].double()  # (C, j1 - j)
        total += y.sum(1)
        squares += (y * y).sum(1)
    mean = total / n_out
    var = (squares / n_out - mean * mean).clamp_min(0)
    return mean.to(conv.weight.dtype), var.to(conv.weight.dtype)


class FixedChannelNorm(torch.nn.Module):
    """``norm`` (a per-channel ``GroupNorm``) with given statistics: ``(x - mean) /
    sqrt(var + eps) * weight + bias`` on ``(B, C, T)``, as one multiply-add (one output
    tensor, as the fused group norm: the first convolution's output is the largest activation
    of a front-end)."""

    def __init__(self, mean: torch.Tensor, var: torch.Tensor, norm: torch.nn.GroupNorm):
        super().__init__()
        scale = torch.rsqrt(var + norm.eps)
        shift = -mean * scale
        if norm.affine:
            scale, shift = scale * norm.weight, shift * norm.weight + norm.bias
        self.scale, self.shift = scale[:, None], shift[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift, x, self.scale)
