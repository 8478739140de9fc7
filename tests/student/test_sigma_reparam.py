"""sigma-Reparam linear layers and their use in the encoder."""

import pytest
import torch
from torch import nn
from torch.func import functional_call

from mvqkd.student import build_model, preset_config
from mvqkd.student.sigma_reparam import SigmaReparamLinear


def test_initial_weight_is_unchanged():
    torch.manual_seed(0)
    lin = SigmaReparamLinear(12, 7)
    sigma = torch.linalg.matrix_norm(lin.weight.detach(), 2)
    assert lin.gamma.item() == pytest.approx(sigma.item(), rel=1e-4)
    x = torch.randn(5, 12)
    expected = x @ lin.weight.detach().t() + lin.bias.detach()
    torch.testing.assert_close(lin.eval()(x), expected, rtol=1e-4, atol=1e-5)


def test_power_iteration_converges_to_spectral_norm():
    torch.manual_seed(1)
    lin = SigmaReparamLinear(30, 20)
    with torch.no_grad():  # a new weight: the estimate must track it, one step per forward
        lin.weight.copy_(torch.randn(20, 30) * 3)
    true = torch.linalg.matrix_norm(lin.weight.detach(), 2).item()
    x = torch.randn(4, 30)
    lin.train()
    for _ in range(60):
        lin(x)
    assert lin.spectral_norm().item() == pytest.approx(true, rel=1e-4)
    # the effective weight's spectral norm is gamma
    w_hat = lin.effective_weight().detach()
    assert torch.linalg.matrix_norm(w_hat, 2).item() == pytest.approx(lin.gamma.item(), rel=1e-3)


def test_eval_does_not_update_vectors_and_training_does():
    lin = SigmaReparamLinear(6, 4)
    with torch.no_grad():
        lin.weight.mul_(-2).add_(0.3)
    u = lin.u.clone()
    lin.eval()(torch.randn(2, 6))
    assert torch.equal(lin.u, u)
    lin.train()(torch.randn(2, 6))
    assert not torch.equal(lin.u, u)


def test_gradients_flow_and_are_correct():
    torch.manual_seed(2)
    lin = SigmaReparamLinear(5, 4).double().eval()
    x = torch.randn(3, 5, dtype=torch.double, requires_grad=True)
    params = {n: p.detach().clone().requires_grad_(True) for n, p in lin.named_parameters()}

    def f(x, weight, bias, gamma):
        return functional_call(lin, {"weight": weight, "bias": bias, "gamma": gamma}, (x,))

    assert torch.autograd.gradcheck(f, (x, params["weight"], params["bias"], params["gamma"]))
    lin.train()
    lin.float()(torch.randn(3, 5)).pow(2).sum().backward()
    for name in ("weight", "bias", "gamma"):
        g = getattr(lin, name).grad
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0, name


def test_every_encoder_linear_is_reparametrised():
    model = build_model(preset_config("tiny", 20, sigma_reparam=True, num_codebooks=2,
                                      codebook_size=8))
    enc_linears = [m for m in model.encoder.modules() if isinstance(m, nn.Linear)]
    assert len(enc_linears) >= 1 + 6 * model.cfg.num_layers
    assert all(isinstance(m, SigmaReparamLinear) for m in enc_linears)
    others = [m for m in model.joiner.modules() if isinstance(m, nn.Linear)]
    assert others and not any(isinstance(m, SigmaReparamLinear) for m in others)
    plain = build_model(preset_config("tiny", 20))
    assert not any(isinstance(m, SigmaReparamLinear) for m in plain.modules())
    # a training step gives every gamma a gradient
    feats, lens = torch.randn(2, 40, 80), torch.tensor([40, 31])
    out = model(feats, lens, [[3, 4], [5]], codebook_indexes=torch.randint(0, 8, (2, 20, 2)))
    out["loss"].backward()
    assert all(m.gamma.grad is not None and m.gamma.grad != 0 for m in enc_linears)


def _trained_layer(weight: torch.Tensor) -> SigmaReparamLinear:
    """A layer with ``weight`` whose u, v have tracked it for 60 training forwards."""
    lin = SigmaReparamLinear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        lin.weight.copy_(weight)
        lin.gamma.fill_(2.0)
    lin.train()
    for _ in range(60):
        lin(torch.randn(2, weight.shape[1]))
    return lin


def test_averaged_layers_divide_by_the_exact_spectral_norm_of_the_mean():
    """Two checkpoints whose top singular pairs trade places (singular values 5 and 3 on
    e1 / e2, then on e2 / e1), as between epochs of a demo student: the mean of their u is
    0.71 long and u^T W v of the means is half of ||W||_2. The averaged layer must compute
    gamma * mean(W) / ||mean(W)||_2 (torch's matrix 2-norm as the reference)."""
    from mvqkd.student.checkpoint import average_state_dicts

    torch.manual_seed(3)
    q_out, _ = torch.linalg.qr(torch.randn(6, 6))
    q_in, _ = torch.linalg.qr(torch.randn(8, 8))
    base = torch.zeros(6, 8)
    first, second = base.clone(), base.clone()
    first[0, 0], first[1, 1], second[0, 0], second[1, 1] = 5.0, 3.0, 3.0, 5.0
    first[2, 2] = second[2, 2] = 1.0
    a, b = (_trained_layer(q_out @ w @ q_in.t()).state_dict() for w in (first, second))
    assert abs(float(a["u"] @ b["u"])) < 0.1  # the pairs really traded places
    naive_u = (a["u"] + b["u"]) / 2
    assert naive_u.norm() < 0.8

    avg = average_state_dicts([a, b])
    lin = SigmaReparamLinear(8, 6)
    lin.load_state_dict(avg)
    lin.eval()
    w_mean = (a["weight"] + b["weight"]) / 2
    true_norm = torch.linalg.matrix_norm(w_mean, 2)
    assert lin.spectral_norm().item() == pytest.approx(true_norm.item(), rel=1e-5)
    x = torch.randn(4, 8)
    want = x @ (2.0 * w_mean / true_norm).t() + (a["bias"] + b["bias"]) / 2
    torch.testing.assert_close(lin(x).detach(), want, rtol=1e-5, atol=1e-5)
    # one checkpoint is "averaged" to itself, bit for bit (decoding with --avg 1)
    one = average_state_dicts([a])
    assert all(torch.equal(one[k], a[k]) for k in a)


def test_decoding_an_average_of_sigma_reparam_students(tmp_path):
    """load_model_for_decoding(--avg 2) of a sigma-Reparam student: every reparametrised
    layer's estimate equals the exact spectral norm of its averaged weight."""
    from mvqkd.student.checkpoint import load_model_for_decoding
    from mvqkd.training.checkpoint import save_checkpoint

    cfg = preset_config("tiny", 20, sigma_reparam=True, num_codebooks=2, codebook_size=8).to_dict()
    for e in (1, 2):
        torch.manual_seed(e)
        save_checkpoint(tmp_path / f"epoch-{e}.pt", model=build_model(cfg), config=cfg,
                        epoch=e, step=10 * e, epoch_done=True)
    model, _ = load_model_for_decoding(tmp_path, epoch=2, avg=2)
    layers = [m for m in model.modules() if isinstance(m, SigmaReparamLinear)]
    assert layers
    for m in layers:
        true = torch.linalg.matrix_norm(m.weight.detach(), 2).item()
        assert m.spectral_norm().item() == pytest.approx(true, rel=1e-5)
