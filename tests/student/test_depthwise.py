"""mvqkd.student.depthwise: the tap loop of the student's depthwise convolutions equals
``nn.Conv1d`` where it replaces its forward (CPU, oneDNN off), bit for bit under
``MVQKD_PORTABLE_KERNELS=1`` (MKL at AVX2 sums the per-channel GEMM in kernel order with fused
multiply-adds, as the loop does; MKL's AVX-512 kernels, and its AUTO branch on an AMD processor,
round a few sums differently); its gradients are the convolution's bit for bit, so a student
trains to the same weights; and it is not used where it would change an export."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from mvqkd.student.decoder import Decoder
from mvqkd.student.depthwise import _uses_loop, depthwise_conv1d

SHAPES = [  # (N, C, L, K, padding, bias): the predictor's step, the Conformer module's, edge cases
    (64, 144, 2, 2, 0, False), (4, 144, 125, 15, 7, True), (3, 8, 1, 15, 7, True), (2, 5, 9, 3, 0, True)]


@pytest.fixture
def onednn_off():
    with torch.backends.mkldnn.flags(enabled=False), torch.backends.nnpack.flags(enabled=False):
        yield


@pytest.mark.parametrize("N,C,L,K,pad,bias", SHAPES)
def test_loop_equals_conv1d(onednn_off, N, C, L, K, pad, bias):
    torch.manual_seed(0)
    conv = nn.Conv1d(C, C, K, groups=C, padding=pad, bias=bias)
    x = torch.randn(N, C, L)
    with torch.no_grad():
        assert _uses_loop(conv, x)
        y = depthwise_conv1d(conv, x)
        ref = conv(x)
    assert y.shape == ref.shape == (N, C, L + 2 * pad - K + 1)
    torch.testing.assert_close(y, ref, rtol=0, atol=1e-6)


def test_against_a_hand_computed_sum(onednn_off):
    conv = nn.Conv1d(2, 2, 3, groups=2, padding=1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[1.0, 2.0, 3.0]], [[0.5, 0.0, -1.0]]]))
        conv.bias.copy_(torch.tensor([10.0, 0.0]))
        x = torch.tensor([[[1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 2.0, 2.0]]])
        y = depthwise_conv1d(conv, x)
    # channel 0: 10 + 1 x[t-1] + 2 x[t] + 3 x[t+1]; channel 1: 0.5 x[t-1] - x[t+1] (zeros outside)
    expected = torch.tensor([[[10 + 2 + 6, 10 + 1 + 4 + 9, 10 + 2 + 6 + 12, 10 + 3 + 8],
                              [-1.0, 0.5 - 2, 0.5 - 2, 1.0]]])
    assert torch.equal(y, expected)


@pytest.mark.parametrize("N,C,L,K,pad,bias", SHAPES)
def test_gradients_are_the_convolutions(onednn_off, N, C, L, K, pad, bias):
    """In training the loop's backward is torch's convolution backward with the same arguments:
    for the same upstream gradient, the same input, weight and bias gradients, bit for bit."""
    torch.manual_seed(0)
    conv = nn.Conv1d(C, C, K, groups=C, padding=pad, bias=bias)
    x = torch.randn(N, C, L, requires_grad=True)
    r = torch.randn(N, C, L + 2 * pad - K + 1)
    grads = []
    for forward in (conv, lambda x: depthwise_conv1d(conv, x)):
        conv.zero_grad()
        x.grad = None
        (forward(x).transpose(1, 2) * r.transpose(1, 2)).sum().backward()  # the encoder's layout
        grads.append([x.grad, conv.weight.grad] + ([conv.bias.grad] if bias else []))
    assert all(torch.equal(a, b) for a, b in zip(*grads))
    x.grad = None  # a weight that needs no gradient: the input's alone, as the conv's
    frozen = nn.Conv1d(C, C, K, groups=C, padding=pad, bias=False).requires_grad_(False)
    depthwise_conv1d(frozen, x).sum().backward()
    assert x.grad is not None and frozen.weight.grad is None


def test_autocast_keeps_conv1d(onednn_off):
    """Under --amp the convolution runs in bfloat16 as autocast decides, and trains."""
    conv = nn.Conv1d(8, 8, 3, groups=8, padding=1)
    x = torch.randn(2, 8, 10, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not _uses_loop(conv, x)
        y = depthwise_conv1d(conv, x.to(torch.bfloat16))
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert x.grad is not None and conv.weight.grad is not None


def test_tracing_and_other_convolutions_keep_conv1d(onednn_off):
    depthwise = nn.Conv1d(4, 4, 3, groups=4)
    x = torch.randn(2, 4, 6)
    assert _uses_loop(depthwise, x)  # with autograd too: the loop's forward, the conv's backward
    with torch.no_grad():
        assert _uses_loop(depthwise, x)
        assert not _uses_loop(nn.Conv1d(4, 4, 3, groups=2), x)
        assert not _uses_loop(nn.Conv1d(4, 4, 3, groups=4, stride=2), x)
        assert not _uses_loop(nn.Conv1d(4, 4, 3, groups=4, dilation=2), x)
        assert not _uses_loop(nn.Conv1d(4, 4, 3, groups=4, padding=1, padding_mode="reflect"), x)
        with torch.backends.mkldnn.flags(enabled=True):
            assert not _uses_loop(depthwise, x)  # oneDNN's own depthwise kernel is fast
        traced = torch.jit.trace(_Wrap(depthwise), x)
    assert any(n.kind() == "aten::_convolution" for n in traced.inlined_graph.nodes())


class _Wrap(nn.Module):
    def __init__(self, conv):
        super().__init__()
        self.conv = conv

    def forward(self, x):
        return depthwise_conv1d(self.conv, x)


#: the predictor's output over a batch of contexts, with autograd and without (both processes)
PREDICTOR_RUN = """
torch.manual_seed(0)
dec = Decoder(vocab_size=50, decoder_dim=16, blank_id=0, context_size=2)
y = torch.randint(0, 50, (7, 5))
with_grad = dec(y)
with torch.no_grad():
    without = dec(y)
"""
PREDICTOR = ("from mvqkd.cli import portable_kernels\nassert portable_kernels()\nimport torch\n"
             "from mvqkd.student.decoder import Decoder\n" + PREDICTOR_RUN
             + "print(torch.equal(with_grad.detach(), without))\n")


def test_predictor_gives_the_same_output_with_and_without_autograd(onednn_off):
    run = {"torch": torch, "Decoder": Decoder}
    exec(PREDICTOR_RUN, run)
    with torch.no_grad():
        step = run["dec"](run["y"][:, -2:], need_pad=False)
    # the processor's own MKL path: equal up to its summation order (on an AMD EPYC MKL's AUTO
    # branch does not sum the per-channel GEMM in kernel order); bit for bit in the portable
    # setting, the recipe's, on every processor
    torch.testing.assert_close(run["with_grad"].detach(), run["without"], rtol=0, atol=1e-6)
    assert torch.equal(step[:, 0], run["without"][:, -1])
    env = dict(os.environ, MVQKD_PORTABLE_KERNELS="1")
    out = subprocess.run([sys.executable, "-c", PREDICTOR], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


PORTABLE = r"""
from mvqkd.cli import portable_kernels
assert portable_kernels()
import torch
from mvqkd.student.depthwise import _uses_loop, depthwise_conv1d
torch.manual_seed(0)
conv = torch.nn.Conv1d(144, 144, 15, groups=144, padding=7)
x = torch.randn(20, 144, 300)
pred = torch.nn.Conv1d(144, 144, 2, groups=144, bias=False)  # the predictor's, one beam-search step
h = torch.randn(64, 144, 2)
with torch.no_grad():
    print(_uses_loop(conv, x), torch.equal(depthwise_conv1d(conv, x), conv(x)),
          torch.equal(depthwise_conv1d(pred, h), pred(h)))
"""


def test_the_portable_setting_takes_the_loop_with_the_same_floats():
    env = dict(os.environ, MVQKD_PORTABLE_KERNELS="1")
    out = subprocess.run([sys.executable, "-c", PORTABLE], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True", "True"]


#: three AdamW steps of a tiny student, with the loop and with ``nn.Conv1d`` (the portable setting)
TRAINING = r"""
from mvqkd.cli import portable_kernels
assert portable_kernels()
import torch
import mvqkd.student.decoder, mvqkd.student.encoder
from mvqkd.student import build_model, preset_config

def train(conv_only):
    if conv_only:
        for module in (mvqkd.student.encoder, mvqkd.student.decoder):
            module.depthwise_conv1d = lambda conv, x: conv(x)
    torch.manual_seed(0)
    model = build_model(preset_config("tiny", 16, dropout=0.0))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)
    feats, lens = torch.randn(3, 60, 80, generator=g), torch.tensor([60, 47, 33])
    for _ in range(3):
        opt.zero_grad()
        model(feats, lens, [[3, 4, 5, 6], [7, 8], [9]])["loss"].backward()
        opt.step()
    return model.state_dict()

loop, conv = train(False), train(True)
print(len(loop), sum(torch.equal(loop[k], conv[k]) for k in loop))
"""


def test_a_student_trains_to_the_same_weights_with_the_loop():
    env = dict(os.environ, MVQKD_PORTABLE_KERNELS="1")
    out = subprocess.run([sys.executable, "-c", TRAINING], env=env, capture_output=True, text=True, check=True)
    total, equal = map(int, out.stdout.split())
    assert total > 50 and equal == total
