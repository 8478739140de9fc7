"""mvqkd.losses.rnnt_loss against brute-force enumeration of alignments."""


import pytest
import torch

from mvqkd.losses import rnnt_loss, transducer_loss
from tests.losses.brute import path_sum


def brute_force_nll(logits, targets, T_b, U_b, blank):
    """-log P(y|x) by summing over every alignment explicitly.

    An alignment is an ordering of T_b blanks and U_b labels whose last symbol is a
    blank; it visits cells (t, u) starting at (0, 0).
    logits: (T, U+1, V) float64 for one sequence.
    """
    logp = torch.log_softmax(logits.double(), dim=-1)
    blank_lp = [[float(logp[t, u, blank]) for u in range(U_b + 1)] for t in range(T_b)]
    label_lp = [[float(logp[t, u, targets[u]]) if u < U_b else 0.0 for u in range(U_b + 1)] for t in range(T_b)]
    return path_sum(blank_lp, label_lp, T_b, U_b)


def random_case(seed, blank=0):
    g = torch.Generator().manual_seed(seed)
    B = int(torch.randint(2, 4, (1,), generator=g))
    T = int(torch.randint(1, 5, (1,), generator=g))
    U = int(torch.randint(1, 4, (1,), generator=g))
    V = int(torch.randint(2, 5, (1,), generator=g))
    logits = torch.randn(B, T, U + 1, V, generator=g, dtype=torch.float64) * 2
    # labels are never blank (as in real data); padding is -1 to check it is ignored
    non_blank = [v for v in range(V) if v != blank]
    targets = torch.tensor(non_blank)[torch.randint(0, len(non_blank), (B, U), generator=g)]
    logit_lengths = torch.randint(1, T + 1, (B,), generator=g)
    target_lengths = torch.randint(0, U + 1, (B,), generator=g)
    logit_lengths[0] = T  # at least one full-length sequence
    for b in range(B):
        targets[b, target_lengths[b]:] = -1
    return logits, targets, logit_lengths, target_lengths


@pytest.mark.parametrize("seed", range(12))
def test_matches_brute_force(seed):
    blank = seed % 2  # also a non-zero blank id
    logits, targets, tl, ul = random_case(seed, blank)
    got = rnnt_loss(logits, targets, tl, ul, blank=blank, reduction="none")
    want = [
        brute_force_nll(logits[b], targets[b].tolist(), int(tl[b]), int(ul[b]), blank)
        for b in range(logits.shape[0])
    ]
    assert got.shape == (logits.shape[0],)
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=1e-10, atol=1e-10)


def test_float32_close_to_float64():
    logits, targets, tl, ul = random_case(3)
    a = rnnt_loss(logits.float(), targets, tl, ul, reduction="none")
    b = rnnt_loss(logits, targets, tl, ul, reduction="none")
    torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-5)


def test_reductions():
    logits, targets, tl, ul = random_case(5)
    per = rnnt_loss(logits, targets, tl, ul, reduction="none")
    torch.testing.assert_close(rnnt_loss(logits, targets, tl, ul, reduction="sum"), per.sum())
    torch.testing.assert_close(rnnt_loss(logits, targets, tl, ul), per.mean())
    with pytest.raises(ValueError, match="reduction"):
        rnnt_loss(logits, targets, tl, ul, reduction="avg")


@pytest.mark.parametrize("seed", range(4))
def test_gradcheck(seed):
    logits, targets, tl, ul = random_case(seed + 100)
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda x: rnnt_loss(x, targets, tl, ul, reduction="none"), (logits,), eps=1e-6, atol=1e-6
    )


def test_gradient_matches_autograd_of_brute_force():
    """Our custom backward agrees with autograd through an independent DP written per cell."""
    logits, targets, tl, ul = random_case(7)
    x = logits.clone().requires_grad_(True)
    rnnt_loss(x, targets, tl, ul, reduction="sum").backward()
    y = logits.clone().requires_grad_(True)
    logp = torch.log_softmax(y, -1)
    total = 0
    for b in range(y.shape[0]):
        T_b, U_b = int(tl[b]), int(ul[b])
        a = {}
        for t in range(T_b):
            for u in range(U_b + 1):
                terms = []
                if t == 0 and u == 0:
                    terms.append(torch.zeros((), dtype=y.dtype))
                if t > 0:
                    terms.append(a[t - 1, u] + logp[b, t - 1, u, 0])
                if u > 0:
                    terms.append(a[t, u - 1] + logp[b, t, u - 1, targets[b, u - 1]])
                a[t, u] = torch.logsumexp(torch.stack(terms), 0)
        total = total - (a[T_b - 1, U_b] + logp[b, T_b - 1, U_b, 0])
    total.backward()
    torch.testing.assert_close(x.grad, y.grad)


def test_gradient_zero_outside_lattice():
    logits, targets, tl, ul = random_case(11)
    logits.requires_grad_(True)
    rnnt_loss(logits, targets, tl, ul).backward()
    for b in range(logits.shape[0]):
        assert torch.all(logits.grad[b, int(tl[b]):] == 0)
        assert torch.all(logits.grad[b, :, int(ul[b]) + 1:] == 0)


def test_bad_input_names_argument():
    logits, targets, tl, ul = random_case(1)
    with pytest.raises(ValueError, match="targets"):
        rnnt_loss(logits, targets[:, :-1], tl, ul)
    with pytest.raises(ValueError, match="logit_lengths"):
        rnnt_loss(logits, targets, tl + 10, ul)
    bad = targets.clone()
    bad[0, 0] = 99
    ul2 = ul.clone()
    ul2[0] = targets.shape[1]
    with pytest.raises(ValueError, match="targets contain ids"):
        rnnt_loss(logits, bad.clamp(min=0), tl, ul2)


def test_transducer_loss_torch_backend_equals_rnnt_loss():
    logits, targets, tl, ul = random_case(2)
    want = rnnt_loss(logits, targets, tl, ul, reduction="none")
    got = transducer_loss(logits, targets, tl, ul, reduction="none", backend="torch")
    torch.testing.assert_close(got, want)
    got = transducer_loss(logits, targets, tl, ul, reduction="none", backend="auto")
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="backend"):
        transducer_loss(logits, targets, tl, ul, backend="nope")


def test_unfused_log_probs_path_matches_fused():
    logits, targets, tl, ul = random_case(9)
    x1 = logits.clone().requires_grad_(True)
    x2 = logits.clone().requires_grad_(True)
    a = rnnt_loss(x1, targets, tl, ul, reduction="sum")
    b = rnnt_loss(torch.log_softmax(x2, -1), targets, tl, ul, reduction="sum", fused_log_softmax=False)
    torch.testing.assert_close(a, b)
    a.backward()
    b.backward()
    torch.testing.assert_close(x1.grad, x2.grad)
