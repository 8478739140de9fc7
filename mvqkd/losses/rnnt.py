"""Pure-PyTorch RNN-T (transducer) loss with torchaudio's signature.

The loss of one sequence is ``-log P(y | x)``, the log-sum over every monotonic
alignment in the (T, U+1) lattice: from cell (t, u) a *blank* moves to (t+1, u)
and the *label* ``y[u]`` moves to (t, u+1); the path ends with a blank from
(T-1, U).

Implementation: the log-softmax is taken once (as ``logits - logsumexp``) and
only two (B, T, U+1) tables are gathered, the blank and the label log-probs.
A custom autograd function then runs the forward variable alpha and the
backward variable beta over *anti-diagonals* of the lattice (``t + u = n``),
each step vectorised over the batch and the U+1 cells of the diagonal, so the
Python loop has T + U iterations and builds no autograd graph. The gradient of
``log P`` w.r.t. a transition log-prob is the posterior occupancy of that
transition, ``exp(alpha + logp + beta - logZ)``. With the (default) fused
log-softmax the gradient w.r.t. the logits is then written in a single pass
(softmax times the cell occupancy, plus the occupancies at the blank and label
entries), which avoids the several full-size (B, T, U+1, V) temporaries that
autograd through gather + logsumexp would allocate.

Variable lengths are handled by masking every transition outside a sequence's
own (T_b, U_b) lattice with -inf and appending a virtual final row t = T_b,
whose cell (T_b, U_b) is the end state (``beta = 0``).
"""

from __future__ import annotations

import torch

NEG_INF = float("-inf")


def _skew(x: torch.Tensor, fill: float = NEG_INF) -> torch.Tensor:
    """(B, R, C) grid -> (R + C - 1, B, C) anti-diagonals: ``out[n, b, c] = x[b, n - c, c]``.

    Cells with ``n - c`` outside ``[0, R)`` are ``fill``.
    """
    B, R, C = x.shape
    n = torch.arange(R + C - 1, device=x.device).unsqueeze(1)  # (N, 1)
    c = torch.arange(C, device=x.device).unsqueeze(0)  # (1, C)
    r = n - c  # (N, C)
    valid = (r >= 0) & (r < R)
    idx = r.clamp(0, R - 1).unsqueeze(0).expand(B, -1, -1)  # (B, N, C)
    out = x.gather(1, idx).masked_fill(~valid, fill)
    return out.permute(1, 0, 2)


def _unskew(s: torch.Tensor, rows: int) -> torch.Tensor:
    """Inverse of :func:`_skew`: (N, B, C) diagonals -> (B, rows, C) grid."""
    N, B, C = s.shape
    r = torch.arange(rows, device=s.device).unsqueeze(1)
    c = torch.arange(C, device=s.device).unsqueeze(0)
    idx = (r + c).unsqueeze(0).expand(B, -1, -1)  # (B, rows, C)
    return s.permute(1, 0, 2).gather(1, idx)


def _shift_right(x: torch.Tensor) -> torch.Tensor:
    """(..., C) -> (..., C) with ``out[..., c] = x[..., c - 1]`` and -inf at c = 0."""
    return torch.nn.functional.pad(x[..., :-1], (1, 0), value=NEG_INF)


def _shift_left(x: torch.Tensor) -> torch.Tensor:
    """(..., C) -> (..., C) with ``out[..., c] = x[..., c + 1]`` and -inf at the end."""
    return torch.nn.functional.pad(x[..., 1:], (0, 1), value=NEG_INF)


def _masked_tables(blank_lp, label_lp, logit_lengths, target_lengths):
    """Mask transitions outside each sequence's lattice; add the virtual row t = T.

    blank_lp, label_lp: (B, T, U+1). Returns two (B, T+1, U+1) tables.
    """
    B, T, U1 = blank_lp.shape
    t = torch.arange(T + 1, device=blank_lp.device).view(1, -1, 1)
    u = torch.arange(U1, device=blank_lp.device).view(1, 1, -1)
    T_b = logit_lengths.view(-1, 1, 1)
    U_b = target_lengths.view(-1, 1, 1)
    pad = (0, 0, 0, 1)
    blank = torch.nn.functional.pad(blank_lp, pad, value=NEG_INF)
    label = torch.nn.functional.pad(label_lp, pad, value=NEG_INF)
    blank = blank.masked_fill(~((t < T_b) & (u <= U_b)), NEG_INF)
    label = label.masked_fill(~((t < T_b) & (u < U_b)), NEG_INF)
    return blank, label


def _lattice_posteriors(blank_lp, label_lp, logit_lengths, target_lengths):
    """Forward-backward over anti-diagonals (no autograd graph).

    blank_lp, label_lp: (B, T, U+1) log-probs. Returns ``log_z`` (B,) = log P(y|x)
    and the posterior occupancies ``post_blank``, ``post_label`` (B, T, U+1) of every
    transition, which are d log_z / d blank_lp and d log_z / d label_lp.
    """
    B, T, U1 = blank_lp.shape
    blank, label = _masked_tables(blank_lp, label_lp, logit_lengths, target_lengths)
    bs = _skew(blank)  # (T+U+1, B, U+1)
    ls = _skew(label)
    N = bs.shape[0]

    alpha = torch.full_like(bs, NEG_INF)
    alpha[0, :, 0] = 0.0
    for n in range(1, N):
        prev = alpha[n - 1]
        alpha[n] = torch.logaddexp(prev + bs[n - 1], _shift_right(prev + ls[n - 1]))

    # End state (T_b, U_b) lies on diagonal T_b + U_b at column U_b.
    end_mask = torch.zeros_like(bs, dtype=torch.bool)
    end_diag = (logit_lengths + target_lengths).long()
    end_mask[end_diag, torch.arange(B, device=bs.device), target_lengths.long()] = True
    beta = torch.full_like(bs, NEG_INF)
    beta[N - 1] = beta[N - 1].masked_fill(end_mask[N - 1], 0.0)
    for n in range(N - 2, -1, -1):
        nxt = beta[n + 1]
        cur = torch.logaddexp(bs[n] + nxt, ls[n] + _shift_left(nxt))
        beta[n] = cur.masked_fill(end_mask[n], 0.0)

    log_z = beta[0, :, 0].clone()
    lz = log_z.view(1, -1, 1)
    # Blank leaving (t, u) reaches (t+1, u): diagonal n+1, column u.
    beta_next = torch.cat([beta[1:], torch.full_like(beta[:1], NEG_INF)], 0)
    post_blank = torch.exp(alpha + bs + beta_next - lz)
    # Label leaving (t, u) reaches (t, u+1): diagonal n+1, column u+1.
    post_label = torch.exp(alpha + ls + _shift_left(beta_next) - lz)
    return log_z, _unskew(post_blank, T + 1)[:, :T], _unskew(post_label, T + 1)[:, :T]


class _LogZFromTables(torch.autograd.Function):
    """log P(y|x) (B,) from blank / label log-prob tables (B, T, U+1), and the posterior
    occupancies of both tables (returned too, not differentiable)."""

    @staticmethod
    def forward(ctx, blank_lp, label_lp, logit_lengths, target_lengths):
        with torch.no_grad():
            log_z, pb, pl = _lattice_posteriors(blank_lp, label_lp, logit_lengths, target_lengths)
        ctx.save_for_backward(pb, pl)
        ctx.mark_non_differentiable(pb, pl)
        return log_z, pb, pl

    @staticmethod
    def backward(ctx, grad_out, _gb=None, _gl=None):
        pb, pl = ctx.saved_tensors
        g = grad_out.view(-1, 1, 1)
        return pb * g, pl * g, None, None


def lattice_log_prob(blank_lp, label_lp, logit_lengths, target_lengths):
    """``(log P (B,), post_blank, post_label)`` of the transducer lattice given its transition
    log-probs ``blank_lp``, ``label_lp`` (B, T, U+1) (``label_lp[..., U]`` unused) and the
    lengths (B,). ``log P`` is differentiable w.r.t. both tables; the posteriors (B, T, U+1),
    its gradients, come detached (k2's ``return_grad``)."""
    return _LogZFromTables.apply(blank_lp, label_lp, logit_lengths, target_lengths)


class _LogZFromLogits(torch.autograd.Function):
    """log P(y|x) (B,) from raw logits (B, T, U+1, V), log-softmax fused.

    The gradient is written in one pass over the logits:
    ``d/d logit_v = post_blank * [v = blank] + post_label * [v = y_u] - (post_blank + post_label) * softmax_v``.
    """

    @staticmethod
    def forward(ctx, logits, targets, logit_lengths, target_lengths, blank):
        with torch.no_grad():
            idx = _label_index(logits, targets, blank)
            lse = torch.logsumexp(logits, dim=-1)  # (B, T, U+1)
            blank_lp = logits[..., blank] - lse
            label_lp = logits.gather(-1, idx).squeeze(-1) - lse
            log_z, pb, pl = _lattice_posteriors(blank_lp, label_lp, logit_lengths, target_lengths)
        ctx.save_for_backward(logits, lse, idx, pb, pl)
        ctx.blank = blank
        return log_z

    @staticmethod
    def backward(ctx, grad_out):
        logits, lse, idx, pb, pl = ctx.saved_tensors
        g = grad_out.view(-1, 1, 1)
        pb, pl = pb * g, pl * g
        grad = torch.exp(logits - lse.unsqueeze(-1))
        grad.mul_(-(pb + pl).unsqueeze(-1))
        grad[..., ctx.blank] += pb
        grad.scatter_add_(-1, idx, pl.unsqueeze(-1))
        return grad, None, None, None, None


def check_inputs(logits, targets, logit_lengths, target_lengths, blank):
    if logits.dim() != 4:
        raise ValueError(f"logits must be (B, T, U+1, V), got shape {tuple(logits.shape)}")
    B, T, U1, V = logits.shape
    if targets.dim() != 2 or targets.shape[0] != B or targets.shape[1] != U1 - 1:
        raise ValueError(
            f"targets must be (B, U) = ({B}, {U1 - 1}) to match logits {tuple(logits.shape)}, "
            f"got {tuple(targets.shape)}"
        )
    for name, x in (("logit_lengths", logit_lengths), ("target_lengths", target_lengths)):
        if x.shape != (B,):
            raise ValueError(f"{name} must have shape ({B},), got {tuple(x.shape)}")
        if x.dtype.is_floating_point:
            raise ValueError(f"{name} must be an integer tensor, got {x.dtype}")
    if B == 0:
        return
    if int(logit_lengths.min()) < 1 or int(logit_lengths.max()) > T:
        raise ValueError(f"logit_lengths must lie in [1, {T}], got {logit_lengths.tolist()}")
    if int(target_lengths.min()) < 0 or int(target_lengths.max()) > U1 - 1:
        raise ValueError(f"target_lengths must lie in [0, {U1 - 1}], got {target_lengths.tolist()}")
    if not 0 <= blank < V:
        raise ValueError(f"blank={blank} is outside the vocabulary [0, {V})")
    valid = torch.arange(U1 - 1, device=targets.device).unsqueeze(0) < target_lengths.unsqueeze(1)
    if valid.any():
        tv = targets[valid]
        if int(tv.min()) < 0 or int(tv.max()) >= V:
            raise ValueError(f"targets contain ids outside [0, {V}): min {int(tv.min())}, max {int(tv.max())}")


def reduce_losses(losses: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    if reduction == "none":
        return losses
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _label_index(logits, targets, blank):
    """(B, T, U+1, 1) long index of the label leaving each cell (dummy ``blank`` at u = U)."""
    B, T, U1, V = logits.shape
    tgt = torch.nn.functional.pad(targets.long().clamp(0, V - 1), (0, 1), value=blank)  # (B, U+1)
    return tgt.view(B, 1, U1, 1).expand(B, T, U1, 1)


def gather_log_probs(logits, targets, blank=0, fused_log_softmax=True):
    """Blank and label log-probs of every lattice cell (differentiable via autograd).

    logits: (B, T, U+1, V); targets: (B, U). Returns ``(blank_lp, label_lp)``,
    each (B, T, U+1); ``label_lp[..., U]`` is a dummy (no label leaves row U).
    With ``fused_log_softmax=False`` the logits are taken to be log-probs already.
    """
    blank_lp = logits[..., blank]
    label_lp = logits.gather(-1, _label_index(logits, targets, blank)).squeeze(-1)
    if fused_log_softmax:
        lse = torch.logsumexp(logits, dim=-1)
        blank_lp = blank_lp - lse
        label_lp = label_lp - lse
    return blank_lp, label_lp


def rnnt_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank: int = 0,
    reduction: str = "mean",
    fused_log_softmax: bool = True,
) -> torch.Tensor:
    """RNN-T loss, same signature and semantics as ``torchaudio.functional.rnnt_loss``.

    Args:
      logits: (B, T, U+1, V) float joiner outputs (unnormalised).
      targets: (B, U) int label ids; entries past ``target_lengths[b]`` are ignored.
      logit_lengths: (B,) int, frames per sequence, 1 <= T_b <= T.
      target_lengths: (B,) int, labels per sequence, 0 <= U_b <= U.
      blank: blank id.
      reduction: "mean" (over the batch), "sum" or "none" (returns (B,)).
      fused_log_softmax: if False, ``logits`` are already log-probs.

    Returns:
      the negative log-likelihood, reduced as asked. Differentiable w.r.t. logits.
    """
    check_inputs(logits, targets, logit_lengths, target_lengths, blank)
    tl = logit_lengths.to(logits.device)
    ul = target_lengths.to(logits.device)
    if fused_log_softmax:
        log_z = _LogZFromLogits.apply(logits, targets, tl, ul, blank)
    else:
        blank_lp, label_lp = gather_log_probs(logits, targets, blank, fused_log_softmax=False)
        log_z = _LogZFromTables.apply(blank_lp, label_lp, tl, ul)[0]
    return reduce_losses(-log_z, reduction)
