"""The training options for the demo's levers, each against an independent computation:
SortaGrad's first epoch is sorted by duration, label-smoothed codebook CE (uniform and over
codeword neighbours) equals the hand-written formula, and the decoded-regression head
regresses the quantizer's reconstruction of the stored indexes (standardised with numpy's
statistics)."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from lhotse import CutSet

from mvqkd.data.synthetic import WORDS, make_synthetic_cuts, train_tiny_bpe
from mvqkd.quantizer import Quantizer, codeword_neighbours
from mvqkd.student.heads import CodebookHead
from mvqkd.training.student import train


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("optdata")
    g = torch.Generator().manual_seed(0)
    q = Quantizer(torch.randn(4, 16, 6, generator=g), torch.randn(6, generator=g), 2.0, id="q-test")
    q.save(d / "q.pt")
    make_synthetic_cuts(d, num_cuts=10, min_duration=0.6, max_duration=1.8, num_codebooks=4,
                        codebook_size=16, quantizer_id="q-test")
    train_tiny_bpe([" ".join(WORDS)] * 3, d / "bpe", 30)
    return d


def _cfg(d, exp, **kw):
    cfg = dict(train_cuts=str(d / "cuts.jsonl.gz"), bpe_model=str(d / "bpe" / "bpe.model"),
               exp_dir=str(exp), kd="mvq", model_size="tiny", num_epochs=2, max_duration=3.0,
               num_workers=0, save_every_n=0, warmup_steps=2, lr=3e-3, tensorboard=False,
               device="cpu")
    return {**cfg, **kw}


def test_sorta_grad_first_epoch_goes_from_short_to_long(data, tmp_path):
    dur = {c.id: c.duration for c in CutSet.from_file(data / "cuts.jsonl.gz")}
    hist = train(_cfg(data, tmp_path / "sg", sorta_grad=True))["history"]
    first = [c for h in hist if h["epoch"] == 1 for c in sorted(h["cut_ids"], key=dur.get)]
    assert sorted(first) == sorted(dur)  # every cut once
    assert [dur[c] for c in first] == sorted(dur.values())  # ascending over the whole epoch
    second = [c for h in hist if h["epoch"] == 2 for c in h["cut_ids"]]
    assert [dur[c] for c in second] != sorted(dur.values())  # later epochs are shuffled
    plain = train(_cfg(data, tmp_path / "plain"))["history"]
    assert [h["cut_ids"] for h in plain if h["epoch"] == 1] != [h["cut_ids"] for h in hist if h["epoch"] == 1]


def test_sorta_grad_resumes_inside_the_first_epoch(data, tmp_path):
    full = train(_cfg(data, tmp_path / "full", sorta_grad=True, num_epochs=1))["history"]
    train(_cfg(data, tmp_path / "part", sorta_grad=True, num_epochs=1, max_steps=2, save_every_n=1))
    rest = train(_cfg(data, tmp_path / "part", sorta_grad=True, num_epochs=1))["history"]
    assert [h["cut_ids"] for h in full[2:]] == [h["cut_ids"] for h in rest]


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_label_smoothing_equals_the_formula(eps):
    torch.manual_seed(0)
    head = CodebookHead(8, 3, 5, label_smoothing=eps)
    x = torch.randn(2, 4, 8)
    targets = torch.randint(0, 5, (2, 4, 3))
    targets[1, 3] = -100  # padding is ignored
    got = head(x, targets)
    logp = head.logits(x).log_softmax(-1)
    want = 0.0
    for b in range(2):
        for t in range(4):
            for c in range(3):
                y = int(targets[b, t, c])
                if y < 0:
                    continue
                lp = logp[b, t, c]
                want += (1 - eps) * -float(lp[y]) + eps * -float(lp.mean())
    assert float(got) == pytest.approx(want, rel=1e-5)


def _brute_neighbours(codebooks: np.ndarray, temperature: float) -> np.ndarray:
    """codeword_neighbours with loops: weights exp(-d^2 / (T mean d^2 of distinct pairs))."""
    n_books, k, _ = codebooks.shape
    out = np.zeros((n_books, k, k))
    for m in range(n_books):
        d2 = np.array([[np.sum((codebooks[m, a] - codebooks[m, b]) ** 2) for b in range(k)]
                       for a in range(k)])
        mean = d2.sum() / (k * (k - 1))
        for a in range(k):
            w = np.array([0.0 if b == a else np.exp(-d2[a, b] / (temperature * mean)) for b in range(k)])
            out[m, a] = w / w.sum()
    return out


@pytest.mark.parametrize("temperature", [0.05, 0.3, 2.0])
def test_codeword_neighbours_equal_the_brute_force_weights(temperature):
    books = torch.randn(3, 7, 5, generator=torch.Generator().manual_seed(1))
    got = codeword_neighbours(books, temperature).numpy()
    np.testing.assert_allclose(got, _brute_neighbours(books.double().numpy(), temperature), rtol=1e-5, atol=1e-7)


def test_codeword_neighbours_limits():
    books = torch.randn(2, 9, 4, generator=torch.Generator().manual_seed(2))
    flat = codeword_neighbours(books, 1e6)  # T -> inf: even over the K - 1 others
    off = ~torch.eye(9, dtype=torch.bool)
    assert torch.allclose(flat[:, off], torch.full_like(flat[:, off], 1 / 8), atol=1e-5)
    assert float(flat.diagonal(dim1=1, dim2=2).abs().max()) == 0.0
    sharp = codeword_neighbours(books, 1e-4)  # T -> 0: all on the nearest other codeword
    d2 = torch.cdist(books, books) ** 2 + torch.eye(9) * 1e9
    assert torch.equal(sharp.argmax(-1), d2.argmin(-1)) and float(sharp.max(-1).values.min()) > 0.999
    with pytest.raises(ValueError, match="temperature must be > 0"):
        codeword_neighbours(books, 0.0)


@pytest.mark.parametrize("eps", [0.1, 0.4])
def test_neighbour_smoothing_equals_the_formula(eps):
    """Head codebook c = j N + n (two teacher frames per student frame) reads teacher codebook
    n's table; the loss is -sum_k target(k) log p(k) with the explicit soft target."""
    torch.manual_seed(0)
    n_teacher, k = 3, 5
    head = CodebookHead(8, 2 * n_teacher, k, label_smoothing=eps, neighbour_codebooks=n_teacher)
    table = codeword_neighbours(torch.randn(n_teacher, k, 4), 0.5)
    head.set_neighbours(table)
    x = torch.randn(2, 4, 8)
    targets = torch.randint(0, k, (2, 4, 2 * n_teacher))
    targets[1, 3] = -100
    targets[0, 1, 4] = -100
    got = head(x, targets)
    logp = head.logits(x).log_softmax(-1)
    want = 0.0
    for b in range(2):
        for t in range(4):
            for c in range(2 * n_teacher):
                y = int(targets[b, t, c])
                if y < 0:
                    continue
                soft = [(1 - eps) * (kk == y) + eps * float(table[c % n_teacher, y, kk]) for kk in range(k)]
                want += -sum(soft[kk] * float(logp[b, t, c, kk]) for kk in range(k))
    assert float(got) == pytest.approx(want, rel=1e-5)
    fresh = CodebookHead(8, 2 * n_teacher, k, label_smoothing=eps, neighbour_codebooks=n_teacher)
    with pytest.raises(RuntimeError, match="call set_neighbours"):
        fresh(x, targets)
    # a state dict carries the table (checked once, at load): the loaded head gives the same loss,
    # one loaded from an empty table refuses as the fresh one does
    wrapper = torch.nn.Sequential(fresh)
    wrapper.load_state_dict(torch.nn.Sequential(head).state_dict())
    assert fresh.neighbours_ready and float(fresh(x, targets)) == pytest.approx(float(got), rel=1e-6)
    empty = CodebookHead(8, 2 * n_teacher, k, label_smoothing=eps, neighbour_codebooks=n_teacher)
    fresh.load_state_dict(empty.state_dict())
    with pytest.raises(RuntimeError, match="call set_neighbours"):
        fresh(x, targets)


def test_neighbour_smoothing_training_takes_the_quantizers_table(data, tmp_path):
    from mvqkd.quantizer import load_quantizer
    from mvqkd.student.checkpoint import load_checkpoint_file

    q = load_quantizer(data / "q.pt")
    res = train(_cfg(data, tmp_path / "nb", quantizer=str(data / "q.pt"), kd_loss_scale=0.0,
                     codebook_label_smoothing=0.2, codebook_smoothing_temperature=0.3, num_epochs=1))
    model = res["model"]
    assert model.kd_head is None  # --kd-loss-scale 0: no decoded regression
    assert torch.allclose(model.codebook_head.neighbours, codeword_neighbours(q.codebooks, 0.3))
    assert all(h["codebook"] > 0 and h["kd"] == 0 for h in res["history"])
    saved = load_checkpoint_file(tmp_path / "nb" / "epoch-1.pt")["model"]
    assert torch.equal(saved["codebook_head.neighbours"], model.codebook_head.neighbours)
    with pytest.raises(ValueError, match="--codebook-smoothing-temperature needs --quantizer"):
        train(_cfg(data, tmp_path / "x1", codebook_label_smoothing=0.2, codebook_smoothing_temperature=0.3))
    with pytest.raises(ValueError, match="set --codebook-label-smoothing > 0"):
        train(_cfg(data, tmp_path / "x2", quantizer=str(data / "q.pt"), codebook_smoothing_temperature=0.3))
    with pytest.raises(ValueError, match="is not used; drop it"):
        train(_cfg(data, tmp_path / "x3", quantizer=str(data / "q.pt"), kd_loss_scale=0.0))


def test_decoded_regression_regresses_the_reconstruction(data, tmp_path):
    from mvqkd.quantizer import load_quantizer

    q = load_quantizer(data / "q.pt")
    cuts = CutSet.from_file(data / "cuts.jsonl.gz")
    frames = np.concatenate([q.decode(c.load_codebook_indexes()).numpy() for c in cuts]).astype(np.float64)
    res = train(_cfg(data, tmp_path / "dec", quantizer=str(data / "q.pt"), num_epochs=1))
    model = res["model"]
    assert model.cfg.kd_mode == "l2" and model.cfg.kd_dim == 6 and model.cfg.num_codebooks == 4
    np.testing.assert_allclose(model.kd_head.target_mean.numpy(), frames.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.kd_head.target_std.numpy(), frames.std(0), rtol=1e-4)
    assert all(h["kd"] > 0 and h["codebook"] > 0 for h in res["history"])
    alone = train(_cfg(data, tmp_path / "alone", quantizer=str(data / "q.pt"), num_epochs=1,
                       codebook_loss_scale=0.0, rnnt_loss="full"))["history"]
    for h in alone:  # the codebook CE is still measured but no longer in the loss
        assert h["loss"] == pytest.approx(h["rnnt"] + h["kd"], rel=1e-5)


def test_decoded_regression_refuses_another_quantizer(data, tmp_path):
    other = Quantizer(torch.randn(4, 16, 6), torch.zeros(6), 1.0, id="q-other")
    other.save(tmp_path / "other.pt")
    with pytest.raises(ValueError, match="has id q-other but the indexes were extracted with quantizer q-test"):
        train(_cfg(data, tmp_path / "x", quantizer=str(tmp_path / "other.pt")))


def test_bf16_autocast_training_on_cpu(data, tmp_path):
    """--amp bf16: the first step's losses are those of float32 to bf16 precision, and the
    run trains (finite, falling loss); the losses themselves are computed in float32."""
    fp32 = train(_cfg(data, tmp_path / "fp32", num_epochs=1, max_steps=1))["history"][0]
    res = train(_cfg(data, tmp_path / "bf16", num_epochs=3, amp="bf16"))
    first, hist = res["history"][0], res["history"]
    for k in ("rnnt", "codebook"):
        assert first[k] == pytest.approx(fp32[k], rel=0.03), k
    assert all(np.isfinite(h["loss"]) for h in hist)
    assert np.mean([h["loss"] for h in hist[-3:]]) < np.mean([h["loss"] for h in hist[:3]])


def test_geometry_head_scores_squared_distances_to_the_codewords():
    """logits[c = j N + n, k] = -s_c ||y_j - C[n, k]||^2 + s_c ||y_j||^2 + b[c, k] (brute force),
    with s_c started at 1 / mean_k ||C[n, k]||^2; the head refuses codebooks of another shape."""
    torch.manual_seed(0)
    n_teacher, k, dim = 3, 5, 4
    head = CodebookHead(16, 2 * n_teacher, k, geometry_dim=dim)
    books = torch.randn(n_teacher, k, dim)
    head.set_codewords(books)
    for c in range(2 * n_teacher):
        mean_sq = sum(float(books[c % n_teacher, kk].square().sum()) for kk in range(k)) / k
        assert float(head.log_scale.detach().exp()[c]) == pytest.approx(1.0 / mean_sq, rel=1e-5)
    with torch.no_grad():
        head.bias.normal_()
        head.log_scale.add_(torch.randn(2 * n_teacher))
    x = torch.randn(2, 7, 16)
    got = head.logits(x)
    y = head.embed(x).reshape(2, 7, 2, dim)
    s = head.log_scale.exp()
    for j in range(2):
        for n in range(n_teacher):
            c = j * n_teacher + n
            for kk in range(k):
                want = (-s[c] * (y[:, :, j] - books[n, kk]).square().sum(-1)
                        + s[c] * y[:, :, j].square().sum(-1) + head.bias[c, kk])
                torch.testing.assert_close(got[:, :, c, kk], want, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match=r"head needs \(3, 5, 4\)"):
        head.set_codewords(torch.randn(3, 5, 6))
    fresh = CodebookHead(16, 2 * n_teacher, k, geometry_dim=dim)
    with pytest.raises(RuntimeError, match="call set_codewords"):
        fresh.logits(x)
    fresh.load_state_dict(head.state_dict())  # a state dict carries the codewords
    torch.testing.assert_close(fresh.logits(x), got)
    with pytest.raises(RuntimeError, match="built without geometry_dim"):
        CodebookHead(16, 2 * n_teacher, k).set_codewords(books)
    with pytest.raises(ValueError, match="needs independent codebooks"):
        CodebookHead(16, 2 * n_teacher, k, joint=True, geometry_dim=dim)


def test_geometry_head_picks_the_product_quantizers_codes():
    """With a product quantizer (block-sparse codebooks, independent codes) and the head's
    embedding set to the normalised teacher frames, the highest logit of every codebook is
    the code the quantizer's own encoder writes, for both teacher frames of a student frame."""
    from mvqkd.quantizer.train import train_quantizer

    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 12, generator=g) @ torch.randn(12, 12, generator=g)
    q = train_quantizer(x, 4, 16, iters=3, method="product", progress=False, seed=1)
    head = CodebookHead(24, 8, 16, geometry_dim=12)
    head.set_codewords(q.codebooks)
    with torch.no_grad():  # y_j = the j-th normalised teacher frame of the pair
        head.embed.weight.copy_(torch.eye(24))
        head.embed.bias.zero_()
    frames = x[:600]
    z = ((frames - q.mean) / q.scale).reshape(1, 300, 24)  # 300 student frames of 2 teacher frames
    picked = head.logits(z).argmax(-1)  # (1, 300, 8)
    codes = q.encode(frames).long().reshape(1, 300, 8)  # c = j N + n: frame 2t + j, codebook n
    assert torch.equal(picked, codes)


def test_residual_geometry_head_scores_what_the_other_codewords_leave():
    """Residual head: logits[c = j N + n, k] = -s_c ||y_j - sum_{m != n} C[m, t_jm] - C[n, k]||^2
    + (a term constant in k) + b[c, k] (brute force, loops), ignored targets (-100) adding no
    codeword; it needs the targets and a geometry head."""
    torch.manual_seed(0)
    n_teacher, k, dim = 3, 5, 4
    head = CodebookHead(16, 2 * n_teacher, k, geometry_dim=dim, geometry_residual=True)
    books = torch.randn(n_teacher, k, dim)
    head.set_codewords(books)
    with torch.no_grad():
        head.bias.normal_()
        head.log_scale.add_(torch.randn(2 * n_teacher))
    x = torch.randn(2, 7, 16)
    targets = torch.randint(0, k, (2, 7, 2 * n_teacher))
    targets[0, 3, 1] = -100
    targets[1, 6, :n_teacher] = -100
    got = head.logits(x, targets).log_softmax(-1)
    y = head.embed(x).reshape(2, 7, 2, dim).detach()
    s = head.log_scale.detach().exp()
    for b in range(2):
        for t in range(7):
            for j in range(2):
                for n in range(n_teacher):
                    u = y[b, t, j].clone()
                    for m in range(n_teacher):
                        tm = int(targets[b, t, j * n_teacher + m])
                        if m != n and tm >= 0:
                            u -= books[m, tm]
                    c = j * n_teacher + n
                    want = torch.stack([-s[c] * (u - books[n, kk]).square().sum() + head.bias[c, kk]
                                        for kk in range(k)]).log_softmax(-1)
                    torch.testing.assert_close(got[b, t, c], want.detach(), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="needs the targets"):
        head.logits(x)
    with pytest.raises(ValueError, match="needs geometry_dim"):
        CodebookHead(16, 2 * n_teacher, k, geometry_residual=True)


@pytest.mark.parametrize("eps,neighbours,power", [(0.0, False, 1.0), (0.1, False, 1.0),
                                                 (0.2, True, 1.0), (0.1, False, 2.0),
                                                 (0.0, False, 0.5)])
def test_energy_weighting_weighs_each_codebook_by_its_codewords_energy(eps, neighbours, power):
    """``weighting="energy"``: the head's loss is sum over valid entries of w_c x CE_c, with
    w_{j N + n} = E_n^p / (the mean of that over n), E_n = mean_k ||C[n, k]||^2 and p the
    ``weighting_power``, computed here by loops from the head's own log-probabilities, for
    plain, smoothed and neighbour-smoothed targets; uniform weighting is the plain sum; the
    option needs a geometry head, the power the energy weighting."""
    from mvqkd.quantizer import codeword_neighbours

    torch.manual_seed(0)
    n_teacher, k, dim = 3, 5, 4
    books = torch.randn(n_teacher, k, dim) * torch.tensor([1.0, 0.4, 0.1])[:, None, None]
    heads = {}
    for weighting in ("energy", "uniform"):
        torch.manual_seed(1)  # the same parameters for both heads
        heads[weighting] = CodebookHead(
            16, 2 * n_teacher, k, geometry_dim=dim, geometry_residual=True, weighting=weighting,
            weighting_power=power if weighting == "energy" else 1.0,
            label_smoothing=eps, neighbour_codebooks=n_teacher if neighbours else 0)
        heads[weighting].set_codewords(books)
        if neighbours:
            heads[weighting].set_neighbours(codeword_neighbours(books, 0.5))
    x = torch.randn(2, 6, 16)
    targets = torch.randint(0, k, (2, 6, 2 * n_teacher))
    targets[0, 2, 4] = -100
    targets[1, 5, :] = -100
    head = heads["energy"]
    logp = head.logits(x, targets).log_softmax(-1).detach()
    energy = [float(books[n].square().sum(-1).mean()) ** power for n in range(n_teacher)]
    weight = [energy[c % n_teacher] / (sum(energy) / n_teacher) for c in range(2 * n_teacher)]
    want_energy = want_uniform = 0.0
    for b in range(2):
        for t in range(6):
            for c in range(2 * n_teacher):
                i = int(targets[b, t, c])
                if i < 0:
                    continue
                if neighbours:
                    soft = head.neighbours[c % n_teacher, i]
                else:
                    soft = torch.full((k,), 1.0 / k)
                ce = -(1 - eps) * logp[b, t, c, i] - eps * (soft * logp[b, t, c]).sum()
                want_energy += weight[c] * float(ce)
                want_uniform += float(ce)
    assert abs(float(heads["energy"](x, targets)) - want_energy) < 1e-4 * abs(want_energy)
    assert abs(float(heads["uniform"](x, targets)) - want_uniform) < 1e-4 * abs(want_uniform)
    assert max(weight) > 2 * min(weight)  # the weights do differ here
    with pytest.raises(ValueError, match="needs geometry_dim"):
        CodebookHead(16, 2 * n_teacher, k, weighting="energy")
    with pytest.raises(ValueError, match="weighting must be one of"):
        CodebookHead(16, 2 * n_teacher, k, geometry_dim=dim, weighting="entropy")
    from mvqkd.student.config import preset_config

    with pytest.raises(ValueError, match="codebook_weighting='energy': needs codebook_geometry_dim"):
        preset_config("tiny", 30, num_codebooks=4, codebook_weighting="energy")
    for bad in ({"weighting": "uniform", "weighting_power": 2.0},
                {"weighting": "energy", "weighting_power": 0.0}):
        with pytest.raises(ValueError, match="weighting_power must be > 0, and 1 unless"):
            CodebookHead(16, 2 * n_teacher, k, geometry_dim=dim, **bad)
    with pytest.raises(ValueError, match="codebook_weighting_power=2.0: raises the energy weights"):
        preset_config("tiny", 30, num_codebooks=4, codebook_geometry_dim=6,
                      codebook_weighting_power=2.0)


def test_residual_geometry_head_picks_the_additive_quantizers_codes():
    """With an additive quantizer's codes refined by ICM until no codebook changes (each code
    the best given the others) and the embedding set to the normalised teacher frames, the
    residual head's best codeword is that code for every codebook of both teacher frames;
    the shared geometry head, which ignores the other codebooks, is not."""
    from mvqkd.quantizer.search import cross_table, encode_normalized, icm_refine
    from mvqkd.quantizer.search import _unary
    from mvqkd.quantizer.train import train_quantizer

    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 12, generator=g) @ torch.randn(12, 12, generator=g)
    q = train_quantizer(x, 4, 16, iters=3, progress=False, seed=1)
    z = (x[:600] - q.mean) / q.scale
    codes = encode_normalized(z, q.codebooks, beam=4, icm_iters=30)
    table = cross_table(q.codebooks)
    assert torch.equal(icm_refine(_unary(z, q.codebooks), table, codes, 1), codes)  # converged
    targets = codes.reshape(1, 300, 8)  # c = j N + n: frame 2t + j, codebook n
    picked = {}
    for residual in (True, False):
        head = CodebookHead(24, 8, 16, geometry_dim=12, geometry_residual=residual)
        head.set_codewords(q.codebooks)
        with torch.no_grad():  # y_j = the j-th normalised teacher frame of the pair
            head.embed.weight.copy_(torch.eye(24))
            head.embed.bias.zero_()
        picked[residual] = head.logits(z.reshape(1, 300, 24), targets).argmax(-1)
    assert torch.equal(picked[True], targets)
    assert (picked[False] == targets).float().mean() < 0.9


def test_geometry_head_training_takes_the_quantizers_codewords(data, tmp_path):
    from mvqkd.quantizer import load_quantizer
    from mvqkd.student.checkpoint import load_checkpoint_file

    q = load_quantizer(data / "q.pt")
    res = train(_cfg(data, tmp_path / "geo", quantizer=str(data / "q.pt"), kd_loss_scale=0.0,
                     codebook_head="geometry", num_epochs=1))
    model = res["model"]
    assert model.kd_head is None and model.cfg.codebook_geometry_dim == 6
    assert torch.equal(model.codebook_head.codewords, q.codebooks)
    assert all(h["codebook"] > 0 for h in res["history"])
    saved = load_checkpoint_file(tmp_path / "geo" / "epoch-1.pt")["model"]
    assert torch.equal(saved["codebook_head.codewords"], q.codebooks)
    with pytest.raises(ValueError, match="--codebook-head geometry needs --quantizer"):
        train(_cfg(data, tmp_path / "x1", codebook_head="geometry"))
    res = train(_cfg(data, tmp_path / "res", quantizer=str(data / "q.pt"), kd_loss_scale=0.0,
                     codebook_head="residual", num_epochs=1))
    assert res["model"].cfg.codebook_geometry_residual and res["model"].codebook_head.geometry_residual
    assert torch.equal(res["model"].codebook_head.codewords, q.codebooks)
    assert all(np.isfinite(h["codebook"]) and h["codebook"] > 0 for h in res["history"])
    with pytest.raises(ValueError, match="--codebook-head residual needs --quantizer"):
        train(_cfg(data, tmp_path / "x2", codebook_head="residual"))
    res = train(_cfg(data, tmp_path / "energy", quantizer=str(data / "q.pt"), kd_loss_scale=0.0,
                     codebook_head="residual", codebook_weighting="energy", num_epochs=1))
    assert res["model"].cfg.codebook_weighting == "energy" == res["model"].codebook_head.weighting
    assert all(np.isfinite(h["codebook"]) and h["codebook"] > 0 for h in res["history"])
    with pytest.raises(ValueError, match="--codebook-weighting energy weighs the codebooks"):
        train(_cfg(data, tmp_path / "x3", codebook_weighting="energy"))
    res = train(_cfg(data, tmp_path / "energy2", quantizer=str(data / "q.pt"), kd_loss_scale=0.0,
                     codebook_head="residual", codebook_weighting="energy",
                     codebook_weighting_power=2.0, num_epochs=1))
    assert res["model"].cfg.codebook_weighting_power == 2.0 == res["model"].codebook_head.weighting_power
    saved = load_checkpoint_file(tmp_path / "energy2" / "epoch-1.pt")
    energy = q.codebooks.square().sum(-1).mean(-1) ** 2
    from mvqkd.student import build_model

    reloaded = build_model(res["model"].cfg)
    reloaded.load_state_dict(saved["model"])
    torch.testing.assert_close(reloaded.codebook_head.codebook_weights(),
                               (energy / energy.mean()).repeat(2))
    with pytest.raises(ValueError, match="--codebook-weighting-power 2 raises the energy weights"):
        train(_cfg(data, tmp_path / "x4", quantizer=str(data / "q.pt"), kd_loss_scale=0.0,
                   codebook_head="residual", codebook_weighting_power=2.0))
