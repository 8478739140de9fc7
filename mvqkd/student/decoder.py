"""Stateless predictor (Ghodsi et al. 2020, icefall's ``Decoder``) and the joiner.

The predictor sees only the last ``context_size`` tokens: an embedding followed by a
depthwise Conv1d of kernel ``context_size`` (no padding) and a ReLU. During training the
token history is left-padded with ``context_size - 1`` blanks (``need_pad=True``); during
decoding the caller passes exactly ``context_size`` tokens (``need_pad=False``). The blank
embedding is a trainable vector like any other token (padding with blank ids in token
space), so both paths give the same output for the same history.
"""

from __future__ import annotations

import torch
from torch import nn

from mvqkd.student.depthwise import depthwise_conv1d


class Decoder(nn.Module):
    """Stateless predictor: ``y`` (N, U) long -> (N, U, decoder_dim).

    ``need_pad=True``: output u depends on ``y[:, u-context_size+1 .. u]`` with blanks on
    the left. ``need_pad=False``: ``y`` must be (N, context_size) and the output is
    (N, 1, decoder_dim), the prediction after that history.
    """

    def __init__(self, vocab_size: int, decoder_dim: int, blank_id: int, context_size: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.blank_id = blank_id
        self.context_size = context_size
        self.embedding = nn.Embedding(vocab_size, decoder_dim)
        if context_size > 1:
            self.conv = nn.Conv1d(decoder_dim, decoder_dim, context_size, groups=decoder_dim,
                                  bias=False)

    def forward(self, y: torch.Tensor, need_pad: bool = True) -> torch.Tensor:
        if y.dim() != 2:
            raise ValueError(f"decoder input must be (N, U) token ids, got {tuple(y.shape)}")
        if need_pad:
            y = nn.functional.pad(y, (self.context_size - 1, 0), value=self.blank_id)
        elif y.size(1) != self.context_size:
            raise ValueError(f"need_pad=False expects (N, context_size={self.context_size}) "
                             f"tokens, got {tuple(y.shape)}")
        emb = self.embedding(y)  # (N, U + context_size - 1, D)
        if self.context_size > 1:
            emb = depthwise_conv1d(self.conv, emb.transpose(1, 2)).transpose(1, 2)  # (N, U, D)
        return torch.relu(emb)


class Joiner(nn.Module):
    """``tanh(encoder_proj(enc) + decoder_proj(dec))`` -> output linear (V).

    ``enc`` (..., E) and ``dec`` (..., decoder_dim) broadcast against each other, e.g.
    (B, T, 1, E) with (B, 1, U+1, Dd) -> logits (B, T, U+1, V). With
    ``project_input=False`` both inputs are already projected to ``joiner_dim``.
    """

    def __init__(self, encoder_dim: int, decoder_dim: int, joiner_dim: int, vocab_size: int):
        super().__init__()
        self.encoder_proj = nn.Linear(encoder_dim, joiner_dim)
        self.decoder_proj = nn.Linear(decoder_dim, joiner_dim)
        self.output_linear = nn.Linear(joiner_dim, vocab_size)

    def forward(self, enc: torch.Tensor, dec: torch.Tensor,
                project_input: bool = True) -> torch.Tensor:
        if project_input:
            enc, dec = self.encoder_proj(enc), self.decoder_proj(dec)
        return self.output_linear(torch.tanh(enc + dec))
