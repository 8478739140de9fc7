"""A tiny transducer satisfying exactly the decoding interface of docs/DEVELOPING.md."""

import torch
from torch import nn


class TinyDecoder(nn.Module):
    """Stateless decoder: embeddings of the last ``context_size`` tokens, concatenated."""

    def __init__(self, vocab_size, dim, context_size, blank_id=0):
        super().__init__()
        self.context_size = context_size
        self.blank_id = blank_id
        self.embed = nn.Embedding(vocab_size, dim)
        self.out = nn.Linear(dim * context_size, dim)

    def forward(self, y, need_pad=True):
        """y: (N, U) long -> (N, U, dim); with need_pad=False U must equal context_size."""
        assert not need_pad and y.shape[1] == self.context_size, (y.shape, need_pad)
        e = self.embed(y).flatten(1)  # (N, context_size * dim)
        return self.out(e).unsqueeze(1)  # (N, 1, dim)


class TinyJoiner(nn.Module):
    def __init__(self, enc_dim, dec_dim, joiner_dim, vocab_size):
        super().__init__()
        self.encoder_proj = nn.Linear(enc_dim, joiner_dim)
        self.decoder_proj = nn.Linear(dec_dim, joiner_dim)
        self.output_linear = nn.Linear(joiner_dim, vocab_size)

    def forward(self, enc, dec, project_input=True):
        """enc (..., E or J), dec (..., D or J) -> logits (..., V)."""
        if project_input:
            enc, dec = self.encoder_proj(enc), self.decoder_proj(dec)
        return self.output_linear(torch.tanh(enc + dec))


class TinyTransducer(nn.Module):
    """features (B, T, F) -> encoder_out (B, T // 2, E) by frame stacking + linear."""

    def __init__(self, feat_dim=8, vocab_size=6, enc_dim=8, dec_dim=8, joiner_dim=8, context_size=2,
                 blank_id=0):
        super().__init__()
        self.blank_id = blank_id
        self.vocab_size = vocab_size
        self.encoder = nn.Linear(2 * feat_dim, enc_dim)
        self.decoder = TinyDecoder(vocab_size, dec_dim, context_size, blank_id)
        self.joiner = TinyJoiner(enc_dim, dec_dim, joiner_dim, vocab_size)

    def encode(self, features, feature_lens):
        B, T, F = features.shape
        T2 = T // 2
        x = features[:, : 2 * T2].reshape(B, T2, 2 * F)
        return torch.tanh(self.encoder(x)), feature_lens // 2


def peaked_model(vocab_size=6, context_size=2, seed=0, scale=30.0):
    """A model whose joiner output does not depend on the decoder state and is sharply
    peaked: decoder_proj is zero, the encoder part is scaled up. Then the most probable
    token sequence is the per-frame argmax, i.e. the greedy result."""
    torch.manual_seed(seed)
    m = TinyTransducer(vocab_size=vocab_size, context_size=context_size)
    with torch.no_grad():
        m.joiner.decoder_proj.weight.zero_()
        m.joiner.decoder_proj.bias.zero_()
        m.joiner.output_linear.weight.mul_(scale)
    return m.eval()
