import numpy as np
import pytest
import torch

from mvqkd.quantizer import train_quantizer
from mvqkd.quantizer.estimators import quantize_with_estimator
from mvqkd.quantizer.metrics import relative_error, usage_counts
from mvqkd.quantizer.search import encode_normalized, reconstruct
from mvqkd.quantizer.train import lsq_update, reseed_dead


def _clusters(n=2000, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(16, d, generator=g) * 4
    return centers[torch.randint(16, (n,), generator=g)] + 0.1 * torch.randn(n, d, generator=g)


def _train_lsq(z, books, rounds, reseed, gen):
    for _ in range(rounds):
        codes = encode_normalized(z, books, beam=1, icm_iters=0)
        if reseed:
            books, _ = reseed_dead(z, codes, books, min_count=1, gen=gen)
            codes = encode_normalized(z, books, beam=1, icm_iters=0)
        books = lsq_update(z, codes, books)
    codes = encode_normalized(z, books, beam=1, icm_iters=0)
    return codes, float(((z - reconstruct(codes, books)) ** 2).sum())


def test_reseeding_revives_dead_codewords():
    """A deliberately bad initialisation: 12 of 16 codewords sit far away from all data,
    so they are never chosen. Without re-seeding they stay dead; with it every codeword
    comes back into use and the error drops far below the control's."""
    z = _clusters()
    books = torch.cat([z[:4], torch.full((12, 8), 1e3)]).unsqueeze(0)  # (1, 16, 8)
    codes = encode_normalized(z, books, beam=1, icm_iters=0)
    assert int((usage_counts(codes, 16) == 0).sum()) == 12
    g = torch.Generator().manual_seed(0)
    ctrl_codes, ctrl_err = _train_lsq(z, books, 4, reseed=False, gen=g)
    assert int((usage_counts(ctrl_codes, 16) == 0).sum()) == 12
    codes, err = _train_lsq(z, books, 4, reseed=True, gen=g)
    assert int((usage_counts(codes, 16) == 0).sum()) == 0
    assert err < 0.25 * ctrl_err


def test_lsq_update_matches_lstsq():
    """The joint solve equals numpy/torch least squares on the explicit one-hot matrix."""
    g = torch.Generator().manual_seed(0)
    N, K, D, n = 3, 4, 5, 200
    z = torch.randn(n, D, generator=g)
    codes = torch.randint(K, (n, N), generator=g)
    old = torch.randn(N, K, D, generator=g)
    ridge = 1e-3
    B = torch.zeros(n, N * K, dtype=torch.float64)
    B[torch.arange(n).unsqueeze(1), codes + torch.arange(N) * K] = 1.0
    A = torch.cat([B, ridge**0.5 * torch.eye(N * K, dtype=torch.float64)])
    rhs = torch.cat([z.double(), ridge**0.5 * old.reshape(N * K, D).double()])
    want = torch.linalg.lstsq(A, rhs).solution.view(N, K, D).float()
    got = lsq_update(z, codes, old, ridge=ridge)
    assert torch.allclose(got, want, atol=1e-4)


def test_nsvq_passes_gradient_to_codebooks():
    g = torch.Generator().manual_seed(0)
    books = torch.randn(2, 8, 6, generator=g, requires_grad=True)
    z = torch.randn(50, 6, generator=g)
    codes = encode_normalized(z, books.detach(), beam=2, icm_iters=0)
    z_tilde, aux = quantize_with_estimator(z, codes, books, "nsvq", gen=g)
    # the simulated error has exactly the norm of the true quantization error
    true_err = (z - reconstruct(codes, books.detach())).norm(dim=1)
    assert torch.allclose((z_tilde - z).norm(dim=1), true_err, atol=1e-5)
    ((z_tilde - z) ** 2).sum().backward()
    grad = books.grad
    used = usage_counts(codes, 8) > 0
    assert grad.abs().sum(-1)[used].min() > 0  # every used codeword gets gradient
    assert grad.abs().sum(-1)[~used].max() == 0 if (~used).any() else True
    # the gradient equals that of the plain quantization error sum ||z - z_q||^2
    b2 = books.detach().clone().requires_grad_(True)
    ((z - reconstruct(codes, b2)) ** 2).sum().backward()
    assert torch.allclose(grad, b2.grad, atol=1e-4)


def test_ste_needs_codebook_loss():
    g = torch.Generator().manual_seed(0)
    books = torch.randn(2, 8, 6, generator=g, requires_grad=True)
    z = torch.randn(50, 6, generator=g, requires_grad=True)
    codes = encode_normalized(z.detach(), books.detach(), beam=1, icm_iters=0)
    z_tilde, aux = quantize_with_estimator(z, codes, books, "ste")
    assert torch.allclose(z_tilde, reconstruct(codes, books.detach()), atol=1e-6)
    (z_tilde.sum() + aux).backward()
    assert torch.allclose(z.grad, torch.ones_like(z))  # straight through
    assert books.grad.abs().sum() > 0  # only through the codebook loss
    with pytest.raises(ValueError, match="estimator"):
        quantize_with_estimator(z, codes, books, "gumbel")


@pytest.mark.parametrize("estimator", ["nsvq", "ste"])
def test_sgd_method_improves_on_init(gauss, estimator):
    q = train_quantizer(gauss, 2, 16, iters=3, method="sgd", estimator=estimator, lr=3e-3,
                        steps_per_iter=20, batch_size=256, progress=False)
    curve = [c["heldout_rel_err"] for c in q.history["curve"]]
    assert min(curve[1:]) < curve[0]
    assert q.history["heldout_rel_err"] == min(curve)


def test_lsq_training_curve_and_usage_stored(small_q):
    h = small_q.history
    curve = [c["heldout_rel_err"] for c in h["curve"]]
    assert len(curve) == 4 and h["heldout_rel_err"] == min(curve) and curve[-1] < curve[0]
    assert torch.tensor(h["usage"]).sum(1).tolist() == [h["train_frames"]] * 4


def test_time_budget_returns_best_so_far(gauss):
    q = train_quantizer(gauss, 2, 16, time_budget=0.0, progress=False)
    assert q.history["args"]["iters_done"] == 0  # budget spent: the initialisation is kept
    x = torch.from_numpy(gauss)
    assert relative_error(x, q.decode(q.encode(x))) < 1.0


def _skewed(frames: int = 3000, dim: int = 16, seed: int = 0) -> np.ndarray:
    """Independent Gaussian dims with offsets; dimension 0 has 30x the std of the rest."""
    rng = np.random.default_rng(seed)
    std = np.ones(dim)
    std[0] = 30.0
    return (rng.standard_normal((frames, dim)) * std + rng.standard_normal(dim) * 5).astype(np.float32)


def test_per_dim_normalisation_matches_numpy():
    from mvqkd.quantizer.train import input_normalisation

    x = _skewed()
    x[:, 3] = 7.0  # a constant dimension
    mean, scale = input_normalisation(torch.from_numpy(x), "per-dim")
    std = x.astype(np.float64).std(0)
    np.testing.assert_allclose(mean.numpy(), x.mean(0), rtol=1e-5, atol=1e-4)
    keep = np.arange(16) != 3
    np.testing.assert_allclose(scale.numpy()[keep], std[keep] * 4.0, rtol=1e-4)  # sqrt(16) = 4
    assert np.isfinite(scale.numpy()).all() and scale[3] > 0
    z = (torch.from_numpy(x) - mean) / scale
    assert abs(float((z ** 2).sum(1).mean()) - 15 / 16) < 1e-3  # 15 unit-variance dims / D
    g_mean, g_scale = input_normalisation(torch.from_numpy(x), "global")
    assert g_scale.dim() == 0
    assert abs(float(g_scale) - np.sqrt(((x - x.mean(0)) ** 2).sum(1).mean())) < 1e-2 * float(g_scale)


def test_per_dim_quantizer_spreads_error_over_dimensions(tmp_path):
    """With one dominant dimension, the global quantizer spends its bits on it (lowest raw
    error) and the per-dim one codes every dimension alike (lowest standardised error)."""
    from mvqkd.quantizer import load_quantizer

    x = _skewed()
    xt = torch.from_numpy(x)
    kw = dict(num_codebooks=2, codebook_size=16, iters=4, seed=0, progress=False)
    qg = train_quantizer(x, normalize="global", **kw)
    qp = train_quantizer(x, normalize="per-dim", **kw)
    assert qp.scale.shape == (16,) and qg.scale.shape == ()
    x64 = x.astype(np.float64)
    mu, sd = x64.mean(0), x64.std(0)

    def errors(q):
        err = q.decode(q.encode(xt)).numpy().astype(np.float64) - x64
        raw = (err ** 2).sum() / ((x64 - mu) ** 2).sum()
        std_err = ((err / sd) ** 2).sum() / (((x64 - mu) / sd) ** 2).sum()
        return raw, std_err

    (raw_g, std_g), (raw_p, std_p) = errors(qg), errors(qp)
    assert raw_g < raw_p and std_p < std_g, (raw_g, raw_p, std_g, std_p)
    # the stored held-out error of the per-dim quantizer is the standardised one
    assert abs(qp.history["heldout_rel_err"] - std_p) < 0.1
    assert qp.history["args"]["normalize"] == "per-dim"
    qp.save(tmp_path / "q.pt")
    q2 = load_quantizer(tmp_path / "q.pt")
    assert torch.equal(q2.scale, qp.scale)
    assert torch.equal(q2.decode(q2.encode(xt)), qp.decode(qp.encode(xt)))


def test_bad_normalize_and_scale_are_refused():
    from mvqkd.quantizer import Quantizer

    with pytest.raises(ValueError, match="normalize must be one of"):
        train_quantizer(_skewed(), num_codebooks=2, codebook_size=16, iters=1, normalize="l2",
                        progress=False)
    with pytest.raises(ValueError, match="scale must be a scalar or have 8 entries"):
        Quantizer(torch.randn(2, 4, 8), torch.zeros(8), torch.ones(3))


def test_product_quantizer_codes_are_per_block_nearest_neighbours(tmp_path):
    """method="product": block-sparse codebooks; each code is the brute-force nearest
    codeword of its block; the stored held-out error is what its decode gives."""
    from mvqkd.quantizer import load_quantizer
    from mvqkd.quantizer.product import block_bounds

    g = torch.Generator().manual_seed(0)
    x = torch.randn(6000, 18, generator=g) @ torch.randn(18, 18, generator=g)
    q = train_quantizer(x, 4, 32, iters=4, method="product", progress=False, seed=1)
    blocks = block_bounds(18, 4)  # uneven: 4 or 5 dims per block
    for m, (a, b) in enumerate(blocks):
        outside = torch.cat([q.codebooks[m, :, :a], q.codebooks[m, :, b:]], dim=1)
        assert torch.count_nonzero(outside) == 0
    codes = q.encode(x)
    z = (x - q.mean) / q.scale
    for m, (a, b) in enumerate(blocks):
        d = ((z[:, None, a:b] - q.codebooks[m][None, :, a:b]) ** 2).sum(-1)
        assert torch.equal(d.argmin(1), codes[:, m].long())
    rec = q.decode(codes)
    err = float(((x - rec) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())
    assert abs(err - q.history["heldout_rel_err"]) < 0.03  # held-out vs all frames
    q.save(tmp_path / "pq.pt")
    assert torch.equal(load_quantizer(tmp_path / "pq.pt").encode(x), codes)
    assert q.beam == 1 and q.icm_iters == 0
