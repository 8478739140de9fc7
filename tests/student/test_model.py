"""Transducer student: encoder lengths and padding, attention entropy, predictor, joiner,
config round trip, loss assembly and a toy optimisation."""

import dataclasses
import json
import math

import pytest
import torch

from mvqkd.student import TransducerConfig, align_teacher_to_student, build_model, preset_config
from mvqkd.student.encoder import MultiHeadSelfAttention, padding_mask, rotary_tables


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread is faster than two fighting on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(**kw):
    kw.setdefault("dropout", 0.0)
    return build_model(preset_config("tiny", 16, **kw))


def conv_out(n):  # torch.nn.Conv2d docs: floor((L + 2p - k) / s) + 1, k=3, s=2, p=1
    return (n + 2 - 3) // 2 + 1


def test_encoder_lengths_follow_formula_and_padding_does_not_leak():
    torch.manual_seed(0)
    model = tiny().eval()
    lens = [37, 64, 21, 4]
    feats = torch.randn(len(lens), max(lens), 80) * 3
    out = model.encoder(feats, torch.tensor(lens))
    expected = [conv_out(conv_out(n)) for n in lens]
    assert out.lens.tolist() == expected == [(n + 3) // 4 for n in lens]
    assert out.out.shape[1] == max(expected)
    for i, n in enumerate(lens):
        alone = model.encoder(feats[i:i + 1, :n], torch.tensor([n]))
        assert alone.out.shape[1] == expected[i]
        torch.testing.assert_close(out.out[i, :expected[i]], alone.out[0], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(out.distill[i, :expected[i]], alone.distill[0],
                                   rtol=1e-4, atol=1e-4)
        assert not out.out[i, expected[i]:].any()  # padded outputs are zero
    # garbage in the padded region changes nothing
    noisy = feats.clone()
    for i, n in enumerate(lens):
        noisy[i, n:] = 1e3
    torch.testing.assert_close(model.encoder(noisy, torch.tensor(lens)).out, out.out)


def test_uniform_attention_entropy_is_log_num_valid_keys():
    att = MultiHeadSelfAttention(16, 4, dropout=0.0)
    with torch.no_grad():
        att.qkv.weight[:32].zero_()  # q = k = 0 (+ bias 0): every score is equal
        att.qkv.bias.zero_()
    lens = torch.tensor([5, 3])
    pad = padding_mask(lens, 5)
    _, ent = att(torch.randn(2, 5, 16), pad, rotary_tables(5, 4, "cpu", torch.float32))
    expected = (5 * math.log(5) + 3 * math.log(3)) / 8  # mean over the 8 valid queries
    torch.testing.assert_close(ent, torch.full((4,), expected))
    assert not ent.requires_grad


def test_model_reports_entropy_per_layer_and_head():
    model = tiny()
    out = model(torch.randn(2, 30, 80), torch.tensor([30, 17]), [[1, 2], [3]])
    assert out["attn_entropy"].shape == (2, 4)
    assert not out["attn_entropy"].requires_grad
    # attention over n <= 8 valid keys has entropy in [0, log 8]
    assert (out["attn_entropy"] >= 0).all() and (out["attn_entropy"] <= math.log(8) + 1e-5).all()


def test_decoder_need_pad_semantics():
    torch.manual_seed(1)
    dec = tiny(context_size=2).decoder
    y = torch.tensor([[0, 5, 7, 9], [0, 3, 3, 0]])
    full = dec(y, need_pad=True)
    assert full.shape == (2, 4, 64)
    padded = torch.nn.functional.pad(y, (1, 0), value=0)  # blank history on the left
    for u in range(4):
        step = dec(padded[:, u:u + 2], need_pad=False)
        assert step.shape == (2, 1, 64)
        torch.testing.assert_close(step[:, 0], full[:, u])
    # output u depends on tokens u-1 and u only
    y2 = y.clone()
    y2[:, 0] = 11
    assert torch.equal(dec(y2)[:, 2:], full[:, 2:]) and not torch.equal(dec(y2)[:, 1], full[:, 1])
    with pytest.raises(ValueError, match="context_size"):
        dec(y, need_pad=False)


def test_joiner_project_input():
    model = tiny()
    enc, dec = torch.randn(2, 5, 1, 64), torch.randn(2, 1, 3, 64)
    j = model.joiner
    logits = j(enc, dec)
    assert logits.shape == (2, 5, 3, 16)
    torch.testing.assert_close(j(j.encoder_proj(enc), j.decoder_proj(dec), project_input=False),
                               logits)


def test_config_json_round_trip_and_presets():
    cfg = preset_config("small", 500, num_codebooks=8, sigma_reparam=True)
    back = TransducerConfig.from_dict(json.loads(json.dumps(dataclasses.asdict(cfg))))
    assert back == cfg and back.resolved_distill_layer == 3
    model = build_model(dataclasses.asdict(preset_config("tiny", 16, distill_layer=1)))
    assert model.encoder.distill_layer == 1 and model.blank_id == 0 and model.vocab_size == 16
    assert preset_config("reference", 500).num_layers == 12
    assert preset_config("reference", 500).resolved_distill_layer == 6
    with pytest.raises(ValueError, match="preset"):
        preset_config("huge", 500)
    with pytest.raises(ValueError, match="distill_layer"):
        preset_config("tiny", 16, distill_layer=3)
    with pytest.raises(ValueError, match="unknown"):
        TransducerConfig.from_dict({"vocab_size": 16, "bogus": 1})


def _batch(n_cb=2, k=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor([48, 33])
    feats = torch.randn(2, 48, 80, generator=g)
    idx = torch.randint(0, k, (2, 24, n_cb), generator=g)
    idx[1, 17:] = -100  # teacher frames of the shorter cut: round(33 / 2) = 17
    return feats, lens, [[3, 4, 5], [6, 7]], idx


@pytest.mark.parametrize("norm", ["utterance", "frame"])
def test_codebook_loss_assembly(norm):
    torch.manual_seed(2)
    model = tiny(num_codebooks=2, codebook_size=8, loss_norm=norm).eval()
    feats, lens, tokens, idx = _batch()
    out = model(feats, lens, tokens, codebook_indexes=idx)
    enc = model.encoder(feats, lens)
    targets = align_teacher_to_student(idx, enc.distill.shape[1], enc.lens)
    logp = torch.log_softmax(model.codebook_head.logits(enc.distill), -1)
    valid = targets != -100
    nll = -logp.gather(-1, targets.clamp(min=0)[..., None])[..., 0][valid].sum()
    denom = 2 if norm == "utterance" else valid.sum() / 4  # 2N = 4 entries per frame
    torch.testing.assert_close(out["codebook"], nll / denom)
    torch.testing.assert_close(out["loss"], out["rnnt"] + 0.1 * out["codebook"])
    assert out["kd"].item() == 0 and out["num_frames"].item() == 12 + 9
    # values at padded teacher positions do not matter
    idx2 = idx.clone()
    idx2[1, 17:] = -1
    torch.testing.assert_close(model(feats, lens, tokens, codebook_indexes=idx2)["codebook"],
                               out["codebook"])


def test_kd_loss_assembly():
    model = tiny(kd_mode="l2", kd_dim=6, kd_loss_scale=2.0).eval()
    feats, lens, tokens, _ = _batch()
    emb = torch.randn(2, 24, 6)
    out = model(feats, lens, tokens, teacher_embeddings=emb, teacher_lens=torch.tensor([24, 17]))
    assert out["codebook"].item() == 0 and out["kd"].item() > 0
    torch.testing.assert_close(out["loss"], out["rnnt"] + 2.0 * out["kd"])
    emb2 = emb.clone()
    emb2[1, 17:] = 50.0
    out2 = model(feats, lens, tokens, teacher_embeddings=emb2, teacher_lens=torch.tensor([24, 17]))
    torch.testing.assert_close(out2["kd"], out["kd"])


def test_bad_input_is_refused_with_clear_errors():
    model = tiny(num_codebooks=2, codebook_size=8)
    feats, lens, tokens, idx = _batch()
    with pytest.raises(ValueError, match=r"\(B, T50, 2\)"):
        model(feats, lens, tokens, codebook_indexes=idx[..., :1])
    with pytest.raises(ValueError, match="blank"):
        model(feats, lens, [[0, 3], [4]])
    with pytest.raises(ValueError, match="feature_lens"):
        model(feats, torch.tensor([49, 3]), tokens)
    with pytest.raises(ValueError, match="no KD head"):
        model(feats, lens, tokens, teacher_embeddings=torch.randn(2, 24, 4))


@pytest.mark.parametrize("codebook_loss", ["independent", "joint"])
def test_a_few_steps_lower_rnnt_and_codebook_losses(codebook_loss):
    torch.manual_seed(3)
    model = tiny(num_codebooks=2, codebook_size=8, codebook_loss=codebook_loss)
    feats, lens, tokens, idx = _batch()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(15):
        out = model(feats, lens, tokens, codebook_indexes=idx)
        if first is None:
            first = {k: out[k].item() for k in ("rnnt", "codebook")}
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    out = model(feats, lens, tokens, codebook_indexes=idx)
    assert out["rnnt"].item() < 0.7 * first["rnnt"]
    assert out["codebook"].item() < 0.9 * first["codebook"]


def test_k2_backend_without_k2_is_a_clear_error():
    try:
        import k2  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="rnnt_backend='torch'"):
            tiny(rnnt_backend="k2")
    else:  # k2 present: the pruned loss must run and be finite
        model = tiny(rnnt_backend="k2")
        feats, lens, tokens, _ = _batch()
        assert torch.isfinite(model(feats, lens, tokens)["loss"])


def test_batched_losses_equal_the_mean_of_per_utterance_losses():
    """Padding leaks into no loss: with per-utterance normalisation, a batch's rnnt and
    codebook losses are the means of the losses of its utterances run alone."""
    torch.manual_seed(4)
    model = tiny(num_codebooks=2, codebook_size=8).eval()
    feats, lens, tokens, idx = _batch()
    both = model(feats, lens, tokens, codebook_indexes=idx)
    alone = [model(feats[i:i + 1, :lens[i]], lens[i:i + 1], tokens[i:i + 1],
                   codebook_indexes=idx[i:i + 1, :(int(lens[i]) + 1) // 2]) for i in range(2)]
    for key in ("rnnt", "codebook"):
        torch.testing.assert_close(both[key], (alone[0][key] + alone[1][key]) / 2,
                                   rtol=1e-4, atol=1e-4)


def _brute_force_ctc_nll(log_probs: torch.Tensor, target: list, blank: int) -> float:
    """-log sum over all V^T paths that collapse (merge repeats, drop blanks) to ``target``."""
    import itertools

    T, V = log_probs.shape
    total = -math.inf
    for path in itertools.product(range(V), repeat=T):
        collapsed = [s for i, s in enumerate(path) if s != blank and (i == 0 or s != path[i - 1])]
        if collapsed == target:
            total = float(torch.logaddexp(torch.tensor(total),
                                          log_probs[torch.arange(T), list(path)].sum()))
    return -total


def test_auxiliary_ctc_loss_equals_brute_force_path_enumeration():
    torch.manual_seed(5)
    model = build_model(preset_config("tiny", 4, dropout=0.0, ctc_loss_scale=0.3)).eval()
    feats = torch.randn(2, 20, 80)  # T' = 5 encoder frames: 4^5 = 1024 paths per utterance
    lens = torch.tensor([20, 15])  # second utterance: T' = 4
    tokens = [[1, 1, 2], [3]]  # the repeat needs a blank between the two 1s
    out = model(feats, lens, tokens)
    enc = model.encoder(feats, lens)
    logp = model.ctc_output(enc.out).log_softmax(-1).detach()
    ref = [_brute_force_ctc_nll(logp[b, : int(enc.lens[b])], tokens[b], blank=0) for b in range(2)]
    assert enc.lens.tolist() == [5, 4]
    torch.testing.assert_close(out["ctc"], torch.tensor(sum(ref) / 2))
    torch.testing.assert_close(out["loss"], out["rnnt"] + 0.3 * out["ctc"])
    # no CTC head by default, and the loss is then exactly zero
    plain = tiny()
    assert plain.ctc_output is None and plain(*_batch()[:3])["ctc"].item() == 0


def test_subsampling_channels_set_the_convolution_width_only():
    narrow = tiny(subsampling_channels=8)
    assert narrow.encoder.subsampling.conv1.out_channels == 8
    assert narrow.encoder.subsampling.conv2.weight.shape == (8, 8, 3, 3)
    assert narrow.encoder.subsampling.out.in_features == 8 * 20  # channels x ceil(80 / 4)
    feats, lens, tokens, _ = _batch()
    assert narrow.encode(feats, lens)[0].shape[-1] == 64
    with pytest.raises(ValueError, match="subsampling_channels"):
        preset_config("tiny", 16, subsampling_channels=0)


def test_pruned_transducer_loss_with_a_full_band_equals_the_full_loss():
    """rnnt_loss="pruned" with prune_range >= U + 1 prunes nothing: its ``rnnt`` is the full
    loss (same weights), and the loss weights follow icefall's warm-up."""
    from mvqkd.student.pruned import warmup_scales

    torch.manual_seed(6)
    full = tiny().eval()
    pruned = tiny(rnnt_loss="pruned", prune_range=4, simple_loss_scale=0.5, rnnt_warmup_steps=10).eval()
    pruned.load_state_dict(full.state_dict(), strict=False)  # the simple projections stay random
    feats, lens, tokens, _ = _batch()
    a, b = full(feats, lens, tokens), pruned(feats, lens, tokens)
    torch.testing.assert_close(a["rnnt"], b["rnnt"], rtol=1e-5, atol=1e-5)
    assert float(b["simple"]) > 0 and float(a["simple"]) == 0
    assert warmup_scales(0, 10, 0.5) == (1.0, 0.1) and warmup_scales(5, 10, 0.5) == (0.75, 0.55)
    assert warmup_scales(10, 10, 0.5) == (0.5, 1.0) and warmup_scales(None, 10, 0.5) == (0.5, 1.0)
    at0 = pruned(feats, lens, tokens, step=0)
    torch.testing.assert_close(at0["loss"], 1.0 * at0["simple"] + 0.1 * at0["rnnt"])
    torch.testing.assert_close(b["loss"], 0.5 * b["simple"] + b["rnnt"])
