"""Batched transducer search: greedy, icefall's modified beam search, and fast beam search
(icefall's ``fast_beam_search`` with the trivial graph, one best) in plain PyTorch.

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

from mvqkd.decode.config import BEAM_SIZE, FAST_BEAM_DEFAULTS

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
def greedy_search(model, encoder_out, encoder_out_lens, max_sym_per_frame: int = 1,
                  return_frames: bool = False):
    """Batched greedy search: at each frame emit the argmax until it is blank
    (at most ``max_sym_per_frame`` symbols per frame).

    encoder_out: (B, T, E); encoder_out_lens: (B,). Returns B token-id lists; with
    ``return_frames`` also B lists of the encoder frame (0-based) each token was emitted at.
    """
    if max_sym_per_frame < 1:
        raise ValueError(f"max_sym_per_frame must be >= 1, got {max_sym_per_frame}")
    B, T, device, ctx, blank, skip, enc = _setup(model, encoder_out, encoder_out_lens)
    lens = encoder_out_lens.to(device)
    contexts = [[blank] * ctx for _ in range(B)]  # last ctx tokens of each hypothesis
    hyps: list[list[int]] = [[] for _ in range(B)]
    frames: list[list[int]] = [[] for _ in range(B)]
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
                frames[b].append(t)
                contexts[b] = contexts[b][1:] + [y] if ctx > 0 else []
            upd = [b for b, _ in emitted]
            dec[torch.tensor(upd, device=device)] = _decoder_out(model, [contexts[b] for b in upd], device)
            active = upd
    return (hyps, frames) if return_frames else hyps


def _per_utterance(scores: torch.Tensor, counts: list[int], width: int) -> torch.Tensor:
    """Regroup stacked hypothesis rows ``scores`` (sum(counts), V) into (len(counts), width, V),
    utterance i holding its counts[i] rows first and -inf padding after, so that one topk
    over the last two dims serves the whole batch."""
    padded = scores.new_full((len(counts), width, scores.shape[-1]), -math.inf)
    row = 0
    for i, n in enumerate(counts):
        padded[i, :n] = scores[row:row + n]
        row += n
    return padded


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
    model, encoder_out, encoder_out_lens, beam: int = BEAM_SIZE, length_norm: bool = True
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
        padded = _per_utterance(scores, [len(beams[b]) for b in active], beam)
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


class _State(NamedTuple):
    score: float  # Viterbi log-prob of the best path ending in this decoder context
    ys: tuple[int, ...]  # its emitted tokens


@torch.no_grad()
def fast_beam_search(model, encoder_out, encoder_out_lens, beam: float = FAST_BEAM_DEFAULTS["beam"],
                     max_contexts: int = FAST_BEAM_DEFAULTS["max_contexts"],
                     max_states: int = FAST_BEAM_DEFAULTS["max_states"]) -> list[list[int]]:
    """Batched fast beam search, one best (icefall's ``fast_beam_search_one_best`` with the
    trivial decoding graph, which k2 runs as ``RnntDecodingStreams``), in PyTorch.

    Search space: the modified RNN-T topology (at most one symbol per frame); a path scores
    the sum of its per-frame log-probs. The decoder sees only the last ``context_size``
    tokens, so paths that end in the same context are one search state: they are merged
    keeping the best path (Viterbi; k2 keeps every arc in a lattice and takes its shortest
    path, which is the same path when nothing is pruned). After each frame an utterance
    keeps the states within ``beam`` (log-prob) of its best one, at most
    ``min(max_contexts, max_states)`` of them (with the trivial graph each state is its own
    context, so the two limits coincide). Tokens in ``_skip_ids`` other than blank (unk)
    are, like blank, never emitted. Unlike modified beam search there is no length
    normalisation: the result is the best path's token sequence.

    With ``beam = inf`` and ``max_states >= V ** context_size`` nothing is pruned and the
    result is the exact best path (tested against enumeration of all paths); with
    ``max_states = 1`` it is greedy search with one symbol per frame.

    encoder_out: (B, T, E); encoder_out_lens: (B,). Returns B token-id lists.
    """
    if not beam > 0:
        raise ValueError(f"beam must be > 0, got {beam}")
    if max_contexts < 1 or max_states < 1:
        raise ValueError(f"max_contexts and max_states must be >= 1, got {max_contexts}, {max_states}")
    width = min(max_contexts, max_states)
    B, T, device, ctx, blank, skip, enc = _setup(model, encoder_out, encoder_out_lens)
    lens = encoder_out_lens.tolist()
    start = tuple([blank] * ctx)
    states: list[dict[tuple, _State]] = [{start: _State(0.0, ())} for _ in range(B)]
    dec_cache: dict[tuple, torch.Tensor] = {}  # context -> projected decoder output (J,)
    for t in range(T):
        active = [b for b in range(B) if lens[b] > t]
        if not active:
            break
        flat = [(b, c, st) for b in active for c, st in states[b].items()]
        new_ctx = list({c for _, c, _ in flat if c not in dec_cache})
        if new_ctx:
            for c, d in zip(new_ctx, _decoder_out(model, [list(c) for c in new_ctx], device)):
                dec_cache[c] = d
        dec = torch.stack([dec_cache[c] for _, c, _ in flat])
        rows = torch.tensor([b for b, _, _ in flat], device=device)
        logp = model.joiner(enc[rows, t], dec, project_input=False).log_softmax(dim=-1)  # (N, V)
        V = logp.shape[-1]
        scores = logp + torch.tensor([st.score for _, _, st in flat], dtype=logp.dtype,
                                     device=device)[:, None]
        counts = [len(states[b]) for b in active]
        padded = _per_utterance(scores, counts, max(counts)).view(len(active), -1)
        # a context is reached from at most (number of states + 1) (state, token) pairs, so
        # the k best pairs hold at least `width` distinct contexts
        k = min(padded.shape[1], width * (max(counts) + 1))
        top_val, top_idx = padded.topk(k, dim=-1)
        top_val, top_idx = top_val.tolist(), top_idx.tolist()
        for i, b in enumerate(active):
            old = list(states[b].items())
            new: dict[tuple, _State] = {}
            floor = top_val[i][0] - beam
            for val, flat_idx in zip(top_val[i], top_idx[i]):
                if val == -math.inf or val < floor or len(new) == width:
                    break
                (c, st), tok = old[flat_idx // V], flat_idx % V
                if tok in skip:
                    key, ys = c, st.ys
                else:
                    key, ys = (c + (tok,))[1:] if ctx else (), st.ys + (tok,)
                if key not in new:  # candidates come best first: the first is the Viterbi path
                    new[key] = _State(val, ys)
            states[b] = new
    return [list(max(states[b].values(), key=lambda st: st.score).ys) for b in range(B)]


SEARCH_METHODS = {"greedy_search": greedy_search, "modified_beam_search": modified_beam_search,
                  "fast_beam_search": fast_beam_search}


def search(method: str, model, encoder_out, encoder_out_lens, beam_size: int = BEAM_SIZE,
           **fast_opts) -> list[list[int]]:
    """Dispatch by name: ``greedy_search`` | ``modified_beam_search`` (``beam_size``) |
    ``fast_beam_search`` (``fast_opts``: ``beam``, ``max_contexts``, ``max_states``)."""
    if method == "greedy_search":
        return greedy_search(model, encoder_out, encoder_out_lens)
    if method == "modified_beam_search":
        return modified_beam_search(model, encoder_out, encoder_out_lens, beam=beam_size)
    if method == "fast_beam_search":
        return fast_beam_search(model, encoder_out, encoder_out_lens, **fast_opts)
    raise ValueError(f"unknown decoding method {method!r}; choose one of {sorted(SEARCH_METHODS)}")
