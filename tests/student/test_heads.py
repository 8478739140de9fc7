"""Distillation heads: 50 -> 25 Hz pairing, codebook CE, joint head, KD regression."""

import pytest
import torch

from mvqkd.student.heads import (CodebookHead, KDHead, align_embeddings_to_student,
                                 align_teacher_to_student)

P = -100


def test_align_exact_odd_padded_and_truncated():
    # teacher (B=3, T50=7, N=2); entry value 10 * frame + codebook, -100 = padding
    def frames(n, total=7):
        return [[10 * f, 10 * f + 1] if f < n else [P, P] for f in range(total)]

    idx = torch.tensor([frames(7), frames(5), frames(2)])
    got = align_teacher_to_student(idx, 3, student_lens=torch.tensor([3, 3, 2]))
    expected = torch.tensor([
        # 7 frames: frames 0..5 paired, frame 6 has no student frame (dropped)
        [[0, 1, 10, 11], [20, 21, 30, 31], [40, 41, 50, 51]],
        # 5 frames (odd): the last student frame keeps frame 4 and ignores its second half
        [[0, 1, 10, 11], [20, 21, 30, 31], [40, 41, P, P]],
        # 2 frames, student length 2: frames 2.. missing, student frame 2 is padding
        [[0, 1, 10, 11], [P, P, P, P], [P, P, P, P]],
    ])
    assert got.dtype == torch.long
    assert torch.equal(got, expected)


def test_align_short_teacher_is_padded_and_student_padding_is_ignored():
    idx = torch.tensor([[[1], [2], [3]]], dtype=torch.uint8)  # T50 = 3 < 2 * T25 = 8
    got = align_teacher_to_student(idx, 4)
    assert torch.equal(got, torch.tensor([[[1, 2], [3, P], [P, P], [P, P]]]))
    got = align_teacher_to_student(idx, 4, student_lens=torch.tensor([1]))
    assert torch.equal(got, torch.tensor([[[1, 2], [P, P], [P, P], [P, P]]]))


def test_align_embeddings_same_rule():
    emb = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    pairs, valid = align_embeddings_to_student(emb, torch.tensor([5, 3]), 3,
                                               student_lens=torch.tensor([3, 3]))
    assert pairs.shape == (2, 3, 2, 3)
    assert torch.equal(pairs[0, 1, 1], emb[0, 3]) and torch.equal(pairs[1, 0, 0], emb[1, 0])
    assert valid.tolist() == [[[True, True], [True, True], [True, False]],
                              [[True, True], [True, False], [False, False]]]


def _manual_ce(logits, targets):
    """Sum over valid (frame, codebook) entries of -log softmax, by explicit loops."""
    total = 0.0
    logp = torch.log_softmax(logits.detach().double(), dim=-1)
    for b in range(targets.shape[0]):
        for t in range(targets.shape[1]):
            for c in range(targets.shape[2]):
                k = int(targets[b, t, c])
                if k != P:
                    total -= float(logp[b, t, c, k])
    return total


def test_independent_ce_matches_manual_and_ignores_padding():
    torch.manual_seed(0)
    head = CodebookHead(8, num_codebooks=4, codebook_size=5)
    x = torch.randn(2, 6, 8)
    targets = torch.randint(0, 5, (2, 6, 4))
    targets[1, 4:] = P  # padded student frames
    targets[0, 5, 2:] = P  # odd trailing teacher frame
    loss = head(x, targets)
    assert loss.item() == pytest.approx(_manual_ce(head.logits(x), targets), rel=1e-5)
    x2 = x.clone()
    x2[1, 4:] = torch.randn(2, 8) * 100  # activity in padded frames
    assert head(x2, targets).item() == pytest.approx(loss.item(), rel=1e-6)


@pytest.mark.parametrize("with_padding", [False, True])
def test_joint_head_matches_multi_quantization(with_padding):
    mq = pytest.importorskip("multi_quantization.prediction")
    torch.manual_seed(1)
    c, k, e, h = 4, 6, 8, 10
    head = CodebookHead(e, c, k, joint=True, hidden_dim=h)
    x = torch.randn(3, 5, e)
    targets = torch.randint(0, k, (3, 5, c))
    if with_padding:  # whole padded frames (the reference's assumption)
        targets[2, 3:] = P
    ref = mq.joint_codebook_loss(
        x, targets, head.linear1.weight, head.linear1.bias, head.codebook_embedding,
        head.hidden_weight, head.weight, head.bias, P, True, "sum")
    assert head(x, targets).item() == pytest.approx(ref.item(), rel=1e-5)


def test_joint_head_is_autoregressive():
    torch.manual_seed(2)
    head = CodebookHead(8, 4, 6, joint=True, hidden_dim=10)
    x = torch.randn(1, 3, 8)
    targets = torch.randint(0, 6, (1, 3, 4))
    changed = targets.clone()
    changed[..., 2] = (changed[..., 2] + 1) % 6
    a, b = head.logits(x, targets), head.logits(x, changed)
    assert torch.equal(a[..., :3, :], b[..., :3, :])  # codebooks <= 2 do not see target 2
    assert not torch.allclose(a[..., 3, :], b[..., 3, :])  # codebook 3 does


@pytest.mark.parametrize("mode", ["l1", "l2", "cosine"])
def test_kd_head_matches_manual(mode):
    torch.manual_seed(3)
    head = KDHead(8, 5, mode)
    x = torch.randn(2, 3, 8)
    target = torch.randn(2, 3, 2, 5)
    valid = torch.tensor([[[1, 1], [1, 1], [1, 0]], [[1, 1], [0, 0], [0, 0]]], dtype=torch.bool)
    pred = head.proj(x).reshape(2, 3, 2, 5)
    expected = 0.0
    for i in valid.nonzero().tolist():
        p, t = pred[tuple(i)], target[tuple(i)]
        if mode == "l1":
            expected += (p - t).abs().mean().item()
        elif mode == "l2":
            expected += ((p - t) ** 2).mean().item()
        else:
            expected += 1 - (p @ t / (p.norm() * t.norm())).item()
    assert head(x, target, valid).item() == pytest.approx(expected, rel=1e-5)
    garbage = target.clone()
    garbage[~valid] = 1e4
    assert head(x, garbage, valid).item() == pytest.approx(expected, rel=1e-5)


def test_head_rejects_wrong_number_of_codebooks():
    head = CodebookHead(8, 4, 5)
    with pytest.raises(ValueError, match="codebooks"):
        head(torch.randn(1, 2, 8), torch.zeros(1, 2, 3, dtype=torch.long))


@pytest.mark.parametrize("mode", ["l1", "l2", "cosine"])
def test_kd_head_normalize_equals_regressing_standardised_targets(mode):
    torch.manual_seed(4)
    plain, norm = KDHead(8, 5, mode), KDHead(8, 5, mode, normalize=True)
    norm.proj.load_state_dict(plain.proj.state_dict())
    mean, std = torch.randn(5) * 10, torch.rand(5) * 5 + 0.5
    norm.set_target_stats(mean, std)
    x, target = torch.randn(2, 3, 8), torch.randn(2, 3, 2, 5) * std + mean
    valid = torch.ones(2, 3, 2, dtype=torch.bool)
    want = plain(x, (target - mean) / std, valid)
    assert norm(x, target, valid).item() == pytest.approx(want.item(), rel=1e-5)
    assert set(norm.state_dict()) == {"proj.weight", "proj.bias", "target_mean", "target_std"}
    with pytest.raises(ValueError, match="std must be > 0"):
        norm.set_target_stats(mean, torch.zeros(5))
    with pytest.raises(ValueError, match=r"shape \(5,\)"):
        norm.set_target_stats(torch.zeros(4), torch.ones(4))
    with pytest.raises(RuntimeError, match="normalize=True"):
        plain.set_target_stats(mean, std)
