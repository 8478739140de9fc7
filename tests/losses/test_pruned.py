"""The pruned RNN-T loss under k2's names: the simple / smoothed losses against brute-force
enumeration of alignments, the pruned loss against the full one when nothing is pruned
(values and gradients), float64 gradcheck, and the pruning ranges' invariants for every
length combination (U = 0 and T = 1 included)."""

from __future__ import annotations

import pytest
import torch

import mvqkd.losses as losses
from mvqkd.losses import (
    do_rnnt_pruning,
    get_rnnt_prune_ranges,
    rnnt_loss_pruned,
    rnnt_loss_simple,
    rnnt_loss_smoothed,
)
from mvqkd.losses.pruned import rnnt_loss as k2_style_full_loss
from tests.losses.brute import path_sum


def case(seed, C=5, blank=0):
    g = torch.Generator().manual_seed(seed)
    B = 3
    T = int(torch.randint(1, 5, (1,), generator=g))
    S = int(torch.randint(0, 4, (1,), generator=g))
    am = torch.randn(B, T, C, generator=g, dtype=torch.float64) * 2
    lm = torch.randn(B, S + 1, C, generator=g, dtype=torch.float64) * 2
    symbols = torch.randint(1, C, (B, S), generator=g)
    if blank != 0:
        symbols = torch.where(symbols == blank, torch.zeros_like(symbols), symbols)
    t_b = torch.randint(1, T + 1, (B,), generator=g)
    s_b = torch.randint(0, S + 1, (B,), generator=g)
    t_b[0], s_b[0] = T, S
    boundary = torch.stack([torch.zeros(B, dtype=torch.long), torch.zeros(B, dtype=torch.long), s_b, t_b], 1)
    return am, lm, symbols, boundary


def reference(am, lm, symbols, boundary, blank, lm_scale=0.0, am_scale=0.0):
    """Per-utterance -log P by enumeration with the trivial joiner (smoothing written out)."""
    out = []
    for b in range(am.shape[0]):
        T_b, S_b = int(boundary[b, 3]), int(boundary[b, 2])
        joint = torch.log_softmax(am[b][:, None, :] + lm[b][None, :, :], -1)  # (T, S+1, C)
        lm_lp, am_lp = torch.log_softmax(lm[b], -1), torch.log_softmax(am[b], -1)
        mix = lambda t, s, c: float((1 - lm_scale - am_scale) * joint[t, s, c] + lm_scale * lm_lp[s, c]  # noqa: E731
                                    + am_scale * am_lp[t, c])
        blank_t = [[mix(t, s, blank) for s in range(S_b + 1)] for t in range(T_b)]
        label_t = [[mix(t, s, int(symbols[b, s])) if s < S_b else 0.0 for s in range(S_b + 1)]
                   for t in range(T_b)]
        out.append(path_sum(blank_t, label_t, T_b, S_b))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("seed", range(10))
def test_simple_loss_equals_enumeration_with_the_trivial_joiner(seed):
    blank = seed % 2
    am, lm, symbols, boundary = case(seed, blank=blank)
    got = rnnt_loss_simple(lm, am, symbols, blank, boundary=boundary, reduction="none")
    torch.testing.assert_close(got, reference(am, lm, symbols, boundary, blank), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("seed", range(6))
def test_smoothed_loss_equals_enumeration(seed):
    am, lm, symbols, boundary = case(seed + 20)
    got = rnnt_loss_smoothed(lm, am, symbols, 0, lm_only_scale=0.25, am_only_scale=0.1,
                             boundary=boundary, reduction="none")
    want = reference(am, lm, symbols, boundary, 0, lm_scale=0.25, am_scale=0.1)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_returned_grads_are_the_occupancies():
    """(px_grad, py_grad) equal autograd's gradient of sum log P w.r.t. the transition tables."""
    am, lm, symbols, boundary = case(3)
    loss, (px_grad, py_grad) = rnnt_loss_smoothed(lm, am, symbols, 0, 0.25, 0.0, boundary=boundary,
                                                  reduction="sum", return_grad=True)
    from mvqkd.losses.pruned import get_rnnt_logprobs_smoothed
    from mvqkd.losses.rnnt import lattice_log_prob

    blank, label = get_rnnt_logprobs_smoothed(lm, am, symbols, 0, 0.25, 0.0)
    blank, label = blank.detach().requires_grad_(True), label.detach().requires_grad_(True)
    lattice_log_prob(blank, label, boundary[:, 3], boundary[:, 2])[0].sum().backward()
    B, T, S1 = blank.shape
    torch.testing.assert_close(py_grad, blank.grad.transpose(1, 2))
    torch.testing.assert_close(px_grad[:, :, :T], label.grad[:, :, :-1].transpose(1, 2))
    assert px_grad.shape == (B, S1 - 1, T + 1) and torch.all(px_grad[:, :, T] == 0)


def joiner(w):
    return lambda enc, dec: torch.tanh(enc + dec) @ w


@pytest.mark.parametrize("seed", range(5))
def test_pruned_equals_full_when_nothing_is_pruned(seed):
    am, lm, symbols, boundary = case(seed + 40, C=6)
    S = symbols.shape[1]
    w = torch.randn(6, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    grads = []
    for pruned in (False, True):
        a, l_, ww = (x.clone().requires_grad_(True) for x in (am, lm, w))
        if pruned:
            _, (px_grad, py_grad) = rnnt_loss_simple(l_ @ torch.eye(6, 7, dtype=torch.float64),
                                                      a @ torch.eye(6, 7, dtype=torch.float64), symbols,
                                                      0, boundary=boundary, return_grad=True)
            ranges = get_rnnt_prune_ranges(px_grad, py_grad, boundary, s_range=S + 1)
            ap, lp = do_rnnt_pruning(a, l_, ranges)
            loss = rnnt_loss_pruned(joiner(ww)(ap, lp), symbols, ranges, 0, boundary=boundary,
                                    reduction="sum")
        else:
            logits = joiner(ww)(a[:, :, None, :], l_[:, None, :, :])
            loss = k2_style_full_loss(logits, symbols, 0, boundary=boundary, reduction="sum")
        loss.backward()
        grads.append((loss.detach(), a.grad, l_.grad, ww.grad))
    for x, y in zip(*grads):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)


def test_gradcheck_float64():
    am, lm, symbols, boundary = case(7, C=4)
    am.requires_grad_(True)
    lm.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a, l_: rnnt_loss_smoothed(l_, a, symbols, 0, 0.25, 0.1, boundary=boundary, reduction="none"),
        (am, lm), eps=1e-6, atol=1e-6)
    B, T, _ = am.shape
    S = symbols.shape[1]
    ranges = get_rnnt_prune_ranges(torch.rand(B, S, T + 1, dtype=torch.float64),
                                   torch.rand(B, S + 1, T, dtype=torch.float64), boundary, 2)
    logits = torch.randn(B, T, ranges.shape[2], 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x: rnnt_loss_pruned(x, symbols, ranges, 0, boundary=boundary, reduction="none"),
        (logits,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("T,S", [(1, 0), (1, 3), (4, 0), (2, 5), (7, 3), (9, 9), (3, 12)])
@pytest.mark.parametrize("s_range", [2, 3, 5])
def test_ranges_are_monotone_in_bounds_and_keep_a_path(T, S, s_range):
    g = torch.Generator().manual_seed(T * 100 + S * 10 + s_range)
    B, C = 4, 6
    am, lm = torch.randn(B, T, C, generator=g), torch.randn(B, S + 1, C, generator=g)
    symbols = torch.randint(1, C, (B, S), generator=g)
    t_b = torch.randint(1, T + 1, (B,), generator=g)
    s_b = torch.randint(0, S + 1, (B,), generator=g)
    t_b[0], s_b[0] = T, S
    boundary = torch.stack([torch.zeros_like(t_b), torch.zeros_like(t_b), s_b, t_b], 1)
    _, (px_grad, py_grad) = rnnt_loss_simple(lm, am, symbols, 0, boundary=boundary, return_grad=True)
    ranges = get_rnnt_prune_ranges(px_grad, py_grad, boundary, s_range)
    r = ranges.shape[2]
    assert r == min(s_range, S + 1) and ranges.shape[:2] == (B, T)
    assert torch.all(ranges[:, :, 1:] - ranges[:, :, :-1] == 1)  # consecutive positions
    start = ranges[:, :, 0]
    assert torch.all(start[:, 0] == 0) and torch.all(ranges >= 0) and torch.all(ranges <= S)
    assert torch.all(start[:, 1:] >= start[:, :-1])  # monotone
    assert torch.all(start[:, 1:] - start[:, :-1] <= r - 1)  # no symbol skipped
    logits = torch.randn(B, T, r, C, generator=g)
    loss = rnnt_loss_pruned(logits, symbols, ranges, 0, boundary=boundary, reduction="none")
    # a path exists inside the bands whenever the utterance can be aligned at all
    feasible = s_b <= t_b * (r - 1)
    assert torch.all(torch.isfinite(loss[feasible]))


def test_mixed_precision_inputs():
    am, lm, symbols, boundary = case(5, C=6)
    want = rnnt_loss_simple(lm.float(), am.float(), symbols, 0, boundary=boundary)
    a = am.bfloat16().requires_grad_(True)
    got = rnnt_loss_simple(lm.bfloat16(), a, symbols, 0, boundary=boundary)
    assert got.dtype == torch.float32 and abs(float(got) - float(want)) < 0.05 * abs(float(want)) + 0.05
    got.backward()
    assert a.grad.dtype == torch.bfloat16 and torch.isfinite(a.grad.float()).all()


def test_k2_names_are_exported_and_unsupported_options_refused():
    for name in ("rnnt_loss_simple", "rnnt_loss_smoothed", "get_rnnt_prune_ranges", "do_rnnt_pruning",
                 "rnnt_loss_pruned"):
        assert callable(getattr(losses, name))
    am, lm, symbols, boundary = case(1)
    with pytest.raises(NotImplementedError, match="rnnt_type"):
        rnnt_loss_simple(lm, am, symbols, 0, rnnt_type="modified")
    with pytest.raises(NotImplementedError, match="delay_penalty"):
        rnnt_loss_simple(lm, am, symbols, 0, delay_penalty=0.1)
    # default boundary = full sizes
    full = torch.tensor([[0, 0, symbols.shape[1], am.shape[1]]] * am.shape[0])
    torch.testing.assert_close(rnnt_loss_simple(lm, am, symbols, 0),
                               rnnt_loss_simple(lm, am, symbols, 0, boundary=full))
