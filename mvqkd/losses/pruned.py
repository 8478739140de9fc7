"""The pruned RNN-T loss (Kuang et al., "Pruned RNN-T for fast, memory-efficient ASR
training", Interspeech 2022) in plain PyTorch, under k2's names and signatures, so that
code written against ``k2`` runs on mvqkd by changing one import.

The recipe, as icefall runs it:

1. :func:`rnnt_loss_smoothed` (or :func:`rnnt_loss_simple`): the "simple" loss of a trivial
   joiner, ``logits[t, s] = am[t] + lm[s]`` over the vocabulary, normalised without ever
   building a (B, T, S+1, C) tensor (one (T, C) x (C, S+1) product per utterance). With
   ``return_grad=True`` it also returns ``(px_grad, py_grad)``, the posterior occupancy of
   every label / blank transition (the gradients of each utterance's log-probability);
2. :func:`get_rnnt_prune_ranges`: for each frame, the ``s_range`` consecutive symbol
   positions holding the most occupancy, made monotone, starting at 0 and never skipping
   a symbol between frames;
3. :func:`do_rnnt_pruning`: the encoder / predictor outputs gathered to (B, T, s_range, C)
   for the full joiner;
4. :func:`rnnt_loss_pruned`: the transducer loss of the full joiner's logits inside the
   band only (transitions outside it are impossible).

Shapes (k2's): ``am`` (B, T, C), ``lm`` (B, S+1, C), ``symbols`` (B, S), ``px`` (B, S, T+1)
label log-probs (column T is -inf), ``py`` (B, S+1, T) blank log-probs, ``ranges``
(B, T, s_range). ``boundary`` (B, 4) int64 rows ``[0, 0, S_b, T_b]`` (default: the full
sizes); only begin offsets of 0 are supported. ``reduction``: ``"mean"`` (over the batch),
``"sum"`` or ``"none"``. Only ``rnnt_type="regular"`` (icefall's default) and
``delay_penalty=0`` are implemented. Inputs in float16 / bfloat16 are computed in float32;
the gradients come back in the input's dtype.

The lattice forward-backward is :func:`mvqkd.losses.rnnt.lattice_log_prob` (anti-diagonal
dynamic programming with a custom backward), shared with the full loss.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mvqkd.losses.rnnt import NEG_INF, lattice_log_prob, reduce_losses, rnnt_loss as _full_loss

__all__ = ["rnnt_loss", "rnnt_loss_simple", "rnnt_loss_smoothed", "get_rnnt_prune_ranges",
           "do_rnnt_pruning", "rnnt_loss_pruned"]


def _check_options(boundary: Tensor | None, rnnt_type: str, delay_penalty: float, B: int, S: int,
                   T: int, device) -> tuple[Tensor, Tensor]:
    """(T_b, S_b) lengths (B,) from ``boundary``, after refusing what is not implemented."""
    if rnnt_type != "regular":
        raise NotImplementedError(f"rnnt_type={rnnt_type!r}: only 'regular' is implemented")
    if delay_penalty != 0.0:
        raise NotImplementedError("delay_penalty != 0 is not implemented")
    if boundary is None:
        return (torch.full((B,), T, dtype=torch.long, device=device),
                torch.full((B,), S, dtype=torch.long, device=device))
    if boundary.shape != (B, 4):
        raise ValueError(f"boundary must be (B, 4) = ({B}, 4), got {tuple(boundary.shape)}")
    if bool((boundary[:, :2] != 0).any()):
        raise NotImplementedError("boundary begin offsets other than 0 are not implemented")
    s_b, t_b = boundary[:, 2].long().to(device), boundary[:, 3].long().to(device)
    if bool((t_b < 1).any()) or bool((t_b > T).any()) or bool((s_b < 0).any()) or bool((s_b > S).any()):
        raise ValueError(f"boundary lengths out of range: T_b {t_b.tolist()} (1..{T}), "
                         f"S_b {s_b.tolist()} (0..{S})")
    return t_b, s_b


def _float(x: Tensor) -> Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _log_prob(blank: Tensor, label: Tensor, t_b: Tensor, s_b: Tensor, reduction: str,
              return_grad: bool):
    """Negated lattice log-prob, reduced; optionally k2's (px_grad, py_grad).

    ``blank``, ``label``: (B, T, S+1) transition log-probs (label row S unused)."""
    log_z, post_blank, post_label = lattice_log_prob(blank, label, t_b, s_b)
    loss = reduce_losses(-log_z, reduction)
    if not return_grad:
        return loss
    px_grad = torch.nn.functional.pad(post_label[:, :, :-1].transpose(1, 2), (0, 1))  # (B, S, T+1)
    py_grad = post_blank.transpose(1, 2)  # (B, S+1, T)
    return loss, (px_grad, py_grad)


def get_rnnt_logprobs_smoothed(lm: Tensor, am: Tensor, symbols: Tensor, termination_symbol: int,
                               lm_only_scale: float = 0.1, am_only_scale: float = 0.1
                               ) -> tuple[Tensor, Tensor]:
    """The trivial joiner's transition log-probs, interpolated with the lm-only and am-only
    distributions: ``(blank, label)``, each (B, T, S+1) (k2's ``py``, ``px`` transposed).

    ``logp[t, s, c] = am[t, c] + lm[s, c] - log sum_c' exp(am[t, c'] + lm[s, c'])``; the
    smoothed value is ``(1 - l - a) logp + l log softmax(lm[s])_c + a log softmax(am[t])_c``.
    """
    lm, am = _float(lm), _float(am)
    B, T, C = am.shape
    S = symbols.shape[1]
    if lm.shape != (B, S + 1, C):
        raise ValueError(f"lm must be (B, S+1, C) = ({B}, {S + 1}, {C}), got {tuple(lm.shape)}")
    am_max, lm_max = am.max(-1, keepdim=True).values, lm.max(-1, keepdim=True).values
    prod = torch.matmul((am - am_max).exp(), (lm - lm_max).exp().transpose(1, 2))  # (B, T, S+1)
    norm = prod.clamp_min(1e-38).log() + am_max + lm_max.transpose(1, 2)
    sym = torch.nn.functional.pad(symbols.long().clamp(0, C - 1), (0, 1), value=termination_symbol)
    am_label = am.gather(2, sym[:, None, :].expand(B, T, S + 1))  # (B, T, S+1): am[t, y_s]
    lm_label = lm.gather(2, sym[:, :, None]).squeeze(2)[:, None, :]  # (B, 1, S+1): lm[s, y_s]
    label = am_label + lm_label - norm
    blank = am[:, :, termination_symbol, None] + lm[:, None, :, termination_symbol] - norm
    combined = 1.0 - lm_only_scale - am_only_scale
    if lm_only_scale or am_only_scale:
        lm_lp = lm - lm.logsumexp(-1, keepdim=True)  # (B, S+1, C)
        am_lp = am - am.logsumexp(-1, keepdim=True)  # (B, T, C)
        label = (combined * label + lm_only_scale * lm_lp.gather(2, sym[:, :, None]).squeeze(2)[:, None, :]
                 + am_only_scale * am_lp.gather(2, sym[:, None, :].expand(B, T, S + 1)))
        blank = (combined * blank + lm_only_scale * lm_lp[:, None, :, termination_symbol]
                 + am_only_scale * am_lp[:, :, termination_symbol, None])
    return blank, label


def rnnt_loss_smoothed(lm: Tensor, am: Tensor, symbols: Tensor, termination_symbol: int,
                       lm_only_scale: float = 0.1, am_only_scale: float = 0.1,
                       boundary: Tensor | None = None, rnnt_type: str = "regular",
                       delay_penalty: float = 0.0, reduction: str = "mean",
                       return_grad: bool = False):
    """The simple (trivial-joiner) loss with lm-only / am-only smoothing (k2's
    ``rnnt_loss_smoothed``). Returns the loss, or ``(loss, (px_grad, py_grad))``."""
    B, T, _ = am.shape
    t_b, s_b = _check_options(boundary, rnnt_type, delay_penalty, B, symbols.shape[1], T, am.device)
    blank, label = get_rnnt_logprobs_smoothed(lm, am, symbols, termination_symbol, lm_only_scale,
                                              am_only_scale)
    return _log_prob(blank, label, t_b, s_b, reduction, return_grad)


def rnnt_loss_simple(lm: Tensor, am: Tensor, symbols: Tensor, termination_symbol: int,
                     boundary: Tensor | None = None, rnnt_type: str = "regular",
                     delay_penalty: float = 0.0, reduction: str = "mean", return_grad: bool = False):
    """The simple loss without smoothing (k2's ``rnnt_loss_simple``)."""
    return rnnt_loss_smoothed(lm, am, symbols, termination_symbol, 0.0, 0.0, boundary, rnnt_type,
                              delay_penalty, reduction, return_grad)


def _suffix_min(x: Tensor) -> Tensor:
    """``y[..., t] = min(x[..., t:])`` along the last dim (the tightest non-decreasing
    sequence below ``x``)."""
    return torch.cummin(x.flip(-1), dim=-1).values.flip(-1)


def get_rnnt_prune_ranges(px_grad: Tensor, py_grad: Tensor, boundary: Tensor, s_range: int) -> Tensor:
    """Pruning bounds from the simple loss's occupancies: (B, T, s_range) symbol positions.

    For frame t the band ``[s_t, s_t + s_range)`` maximises the blank occupancy inside it
    minus the occupancy of the label transition that would enter it from ``s_t - 1``. Padded
    frames (t >= T_b) take the last band below S_b. The starts are then made monotone
    (non-decreasing), start at 0 and grow by at most ``s_range - 1`` per frame, so that
    consecutive bands overlap and no symbol can be skipped. ``s_range > S`` keeps all
    S + 1 positions (nothing is pruned).
    """
    B, S, T1 = px_grad.shape
    T = py_grad.shape[2]
    if T1 != T + 1 or py_grad.shape != (B, S + 1, T):
        raise ValueError(f"px_grad (B, S, T+1) and py_grad (B, S+1, T) expected, got "
                         f"{tuple(px_grad.shape)} and {tuple(py_grad.shape)}")
    if s_range < 1:
        raise ValueError(f"s_range must be >= 1, got {s_range}")
    r = min(s_range, S + 1)
    # window sums of the blank occupancy over [s, s + r), for s = 0 .. S + 1 - r
    cum = torch.nn.functional.pad(py_grad.cumsum(1), (0, 0, 1, 0))  # (B, S+2, T)
    inside = cum[:, r:] - cum[:, : S + 2 - r]  # (B, S+2-r, T)
    entering = torch.nn.functional.pad(px_grad[:, :, :T], (0, 0, 1, 0))[:, : S + 2 - r]  # label s-1 -> s
    s_begin = (inside - entering).argmax(1)  # (B, T)
    t = torch.arange(T, device=px_grad.device)
    s_b, t_b = boundary[:, 2].long(), boundary[:, 3].long()
    pad_begin = (s_b - r + 1).clamp(min=0)[:, None].expand(B, T)
    s_begin = torch.where(t[None, :] < t_b[:, None], s_begin, pad_begin)
    s_begin = _suffix_min(s_begin)  # non-decreasing
    w = _suffix_min((r - 1) * t[None, :] - s_begin)  # growth <= r - 1 per frame ...
    s_begin = (r - 1) * t[None, :] - w.clamp(min=0)  # ... and the first band starts at 0
    return s_begin[:, :, None] + torch.arange(r, device=px_grad.device)


def do_rnnt_pruning(am: Tensor, lm: Tensor, ranges: Tensor) -> tuple[Tensor, Tensor]:
    """Gather the encoder output ``am`` (B, T, C) and predictor output ``lm`` (B, S+1, C) to
    ``(am_pruned, lm_pruned)``, each (B, T, s_range, C), for the full joiner."""
    B, T, R = ranges.shape
    C = am.shape[-1]
    if lm.shape[0] != B or lm.shape[-1] != C or am.shape[:2] != (B, T):
        raise ValueError(f"am (B, T, C) / lm (B, S+1, C) / ranges (B, T, R) disagree: {tuple(am.shape)}, "
                         f"{tuple(lm.shape)}, {tuple(ranges.shape)}")
    # advanced indexing, not gather on an expanded (B, T, S+1, C) view: its backward would
    # materialise a (B, T, S+1, C) gradient, the memory pruning exists to avoid
    lm_pruned = lm[torch.arange(B, device=lm.device)[:, None, None], ranges]  # (B, T, R, C)
    return am.unsqueeze(2).expand(B, T, R, C), lm_pruned


def rnnt_loss_pruned(logits: Tensor, symbols: Tensor, ranges: Tensor, termination_symbol: int,
                     boundary: Tensor | None = None, rnnt_type: str = "regular",
                     delay_penalty: float = 0.0, reduction: str = "mean") -> Tensor:
    """The transducer loss of the full joiner inside the bands: ``logits`` (B, T, s_range, C)
    at the symbol positions ``ranges`` (B, T, s_range); every transition outside a band is
    impossible. With bands covering all S + 1 positions it equals the full loss."""
    B, T, R, C = logits.shape
    S = symbols.shape[1]
    t_b, s_b = _check_options(boundary, rnnt_type, delay_penalty, B, S, T, logits.device)
    if ranges.shape != (B, T, R):
        raise ValueError(f"ranges must be (B, T, s_range) = ({B}, {T}, {R}), got {tuple(ranges.shape)}")
    lp = _float(logits).log_softmax(-1)  # (B, T, R, C)
    sym = torch.nn.functional.pad(symbols.long().clamp(0, C - 1), (0, 1), value=termination_symbol)
    band_sym = sym[:, None, :].expand(B, T, S + 1).gather(2, ranges)  # (B, T, R)
    band_label = lp.gather(3, band_sym.unsqueeze(-1)).squeeze(-1)
    band_blank = lp[..., termination_symbol]
    empty = lp.new_full((B, T, S + 1), NEG_INF)
    label = empty.scatter(2, ranges, band_label)  # (B, T, S+1), -inf outside the band
    blank = empty.scatter(2, ranges, band_blank)
    return _log_prob(blank, label, t_b, s_b, reduction, False)


def rnnt_loss(logits: Tensor, symbols: Tensor, termination_symbol: int, boundary: Tensor | None = None,
              rnnt_type: str = "regular", delay_penalty: float = 0.0, reduction: str = "mean") -> Tensor:
    """The full transducer loss with k2's signature (``logits`` (B, T, S+1, C))."""
    B, T, S1, _ = logits.shape
    t_b, s_b = _check_options(boundary, rnnt_type, delay_penalty, B, S1 - 1, T, logits.device)
    return _full_loss(_float(logits), symbols.long(), t_b, s_b, blank=termination_symbol,
                      reduction=reduction)
