"""Batched transducer search: greedy and icefall's modified beam search.

Model interface (docs/DEVELOPING.md): ``model.blank_id``, ``model.decoder.context_size``,
``model.decoder(y (N, context_size) long, need_pad=False) -> (N, 1, decoder_dim)``,
``model.joiner.encoder_proj``, ``model.joiner.decoder_proj`` and
``model.joiner(enc, dec, project_input=False) -> (..., V)`` on projected inputs.
If the model has an ``unk_id`` attribute, that token is, like blank, never emitted
(icefall's convention); otherwise only blank is skipped.

All functions take ``encoder_out`` (B, T, E) and ``encoder_out_lens`` (B,) and return
one token-id list per utterance, in batch order.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from typing import NamedTuple

import torch

logger = logging.getLogger(__name__)


def _skip_ids(model) -> set[int]:
    skip = {int(model.blank_id)}
    unk = getattr(model, "unk_id", None)
    if unk is not None:
        skip.add(int(unk))
    return skip


def _decoder_out(model, contexts: list[list[int]], device) -> torch.Tensor:
    """Projected decoder output for each context: (N, J)."""
    y = torch.tensor(contexts, dtype=torch.long, device=device)  # (N, context_size)
    dec = model.decoder(y, need_pad=False)  # (N, 1, decoder_dim)
    return model.joiner.decoder_proj(dec.squeeze(1))


class _Setup(NamedTuple):
    """What both searches derive from the model and the encoder output."""

    B: int
    T: int
    device: torch.device
    ctx: int  # decoder context size
    blank: int
    skip: set[int]  # token ids never emitted (blank, and unk when the model has one)
    enc: torch.Tensor  # (B, T, J) projected encoder output


def _setup(model, encoder_out, encoder_out_lens) -> _Setup:
    """Check shapes and project the encoder output once; encoder_out (B, T, E), lens (B,)."""
    if encoder_out.dim() != 3:
        raise ValueError(f"encoder_out must be (B, T, E), got {tuple(encoder_out.shape)}")
    if encoder_out_lens.shape != (encoder_out.shape[0],):
        raise ValueError(
            f"encoder_out_lens must be ({encoder_out.shape[0]},), got {tuple(encoder_out_lens.shape)}"
        )
    if encoder_out.shape[0] and int(encoder_out_lens.max()) > encoder_out.shape[1]:
        raise ValueError(f"encoder_out_lens {encoder_out_lens.tolist()} exceed T={encoder_out.shape[1]}")
    B, T, _ = encoder_out.shape
    return _Setup(B, T, encoder_out.device, model.decoder.context_size, int(model.blank_id),
                  _skip_ids(model), model.joiner.encoder_proj(encoder_out))


@torch.no_grad()
def greedy_search(model, encoder_out, encoder_out_lens, max_sym_per_frame: int = 1) -> list[list[int]]:
    """Batched greedy search: at each frame emit the argmax until it is blank
    (at most ``max_sym_per_frame`` symbols per frame).

    encoder_out: (B, T, E); encoder_out_lens: (B,). Returns B token-id lists.
    """
    if max_sym_per_frame < 1:
        raise ValueError(f"max_sym_per_frame must be >= 1, got {max_sym_per_frame}")
    B, T, device, ctx, blank, skip, enc = _setup(model, encoder_out, encoder_out_lens)
    lens = encoder_out_lens.to(device)
    contexts = [[blank] * ctx for _ in range(B)]  # last ctx tokens of each hypothesis
    hyps: list[list[int]] = [[] for _ in range(B)]
    dec = _decoder_out(model, contexts, device)  # (B, J)
    for t in range(T):
        active = (lens > t).nonzero().flatten().tolist()
        for _ in range(max_sym_per_frame):
            if not active:
                break
            idx = torch.tensor(active, device=device)
            logits = model.joiner(enc[idx, t], dec[idx], project_input=False)  # (A, V)
            best = logits.argmax(dim=-1).tolist()
            emitted = [(b, y) for b, y in zip(active, best) if y not in skip]
            if not emitted:
                break
            for b, y in emitted:
                hyps[b].append(y)
                contexts[b] = contexts[b][1:] + [y] if ctx > 0 else []
            upd = [b for b, _ in emitted]
            dec[torch.tensor(upd, device=device)] = _decoder_out(model, [contexts[b] for b in upd], device)
            active = upd
    return hyps


@dataclass
class _Hyp:
    ys: tuple[int, ...]  # context blanks + emitted tokens
    log_prob: float


def _log_add(a: float, b: float) -> float:
    m = max(a, b)
    if m == -math.inf:
        return m
    return m + math.log(math.exp(a - m) + math.exp(b - m))


@torch.no_grad()
def modified_beam_search(
    model, encoder_out, encoder_out_lens, beam: int = 4, length_norm: bool = True
) -> list[list[int]]:
    """Batched modified beam search (icefall): at most one symbol per frame.

    At each frame every hypothesis of every utterance is extended by every token
    (blank keeps its token sequence); per utterance the ``beam`` best (hypothesis,
    token) pairs survive, and pairs giving the same token sequence are merged by
    log-add of their probabilities. The result is the hypothesis with the highest
    log-prob (divided by its length incl. the context blanks if ``length_norm``,
    as icefall does).

    encoder_out: (B, T, E); encoder_out_lens: (B,). Returns B token-id lists.
    """
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    B, T, device, ctx, blank, skip, enc = _setup(model, encoder_out, encoder_out_lens)
    lens = encoder_out_lens.tolist()
    start = tuple([blank] * ctx)
    beams: list[dict[tuple, _Hyp]] = [{start: _Hyp(start, 0.0)} for _ in range(B)]
    for t in range(T):
        active = [b for b in range(B) if lens[b] > t]
        if not active:
            break
        flat = [(b, h) for b in active for h in beams[b].values()]
        dec = _decoder_out(model, [list(h.ys[len(h.ys) - ctx:]) if ctx else [] for _, h in flat], device)
        rows = torch.tensor([b for b, _ in flat], device=device)
        logp = model.joiner(enc[rows, t], dec, project_input=False).log_softmax(dim=-1)  # (H, V)
        V = logp.shape[-1]
        scores = logp + torch.tensor([h.log_prob for _, h in flat], dtype=logp.dtype, device=device)[:, None]
        # pad every utterance to `beam` hypothesis rows so one topk serves the batch
        n_hyp = [len(beams[b]) for b in active]
        padded = scores.new_full((len(active), beam, V), -math.inf)
        row = 0
        for i, n in enumerate(n_hyp):
            padded[i, :n] = scores[row:row + n]
            row += n
        top_val, top_idx = padded.view(len(active), -1).topk(beam, dim=-1)
        top_val, top_idx = top_val.tolist(), top_idx.tolist()
        for i, b in enumerate(active):
            old = list(beams[b].values())
            new: dict[tuple, _Hyp] = {}
            for val, flat_idx in zip(top_val[i], top_idx[i]):
                if val == -math.inf:
                    continue
                h, tok = old[flat_idx // V], flat_idx % V
                ys = h.ys if tok in skip else h.ys + (tok,)
                if ys in new:
                    new[ys].log_prob = _log_add(new[ys].log_prob, val)
                else:
                    new[ys] = _Hyp(ys, val)
            beams[b] = new
    out = []
    for b in range(B):
        best = max(beams[b].values(), key=lambda h: h.log_prob / len(h.ys) if length_norm and h.ys else h.log_prob)
        out.append(list(best.ys[ctx:]))
    return out


SEARCH_METHODS = {"greedy_search": greedy_search, "modified_beam_search": modified_beam_search}


def search(method: str, model, encoder_out, encoder_out_lens, beam_size: int = 4) -> list[list[int]]:
    """Dispatch by name: ``greedy_search`` | ``modified_beam_search``."""
    if method == "greedy_search":
        return greedy_search(model, encoder_out, encoder_out_lens)
    if method == "modified_beam_search":
        return modified_beam_search(model, encoder_out, encoder_out_lens, beam=beam_size)
    raise ValueError(f"unknown decoding method {method!r}; choose one of {sorted(SEARCH_METHODS)}")
