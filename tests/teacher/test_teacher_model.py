"""Teacher loading and layer extraction, checked against transformers' own outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mvqkd.teacher.make import make_teacher
from mvqkd.teacher.model import load_teacher, normalize_utterance

TOL = 1e-4  # batched vs one-at-a-time, float32 on CPU (observed ~1e-6)


def _wavs(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in lengths]


@pytest.fixture(scope="module")
def layer_norm_dir(tmp_path_factory):
    return make_teacher(tmp_path_factory.mktemp("t") / "ln", "tiny", seed=1)


@pytest.fixture(scope="module")
def group_norm_dir(tmp_path_factory):
    return make_teacher(tmp_path_factory.mktemp("t") / "gn", "tiny", seed=2, feat_extract_norm="group",
                        do_stable_layer_norm=False, do_normalize=False)


def _hf_hidden_states(model, wav, normalize):
    x = torch.as_tensor(wav)[None]
    if normalize:
        from transformers import Wav2Vec2FeatureExtractor

        fe = Wav2Vec2FeatureExtractor(do_normalize=True)
        x = torch.as_tensor(fe(wav, sampling_rate=16000, return_tensors="np").input_values)
    with torch.no_grad():
        return model(x, output_hidden_states=True).hidden_states


@pytest.mark.parametrize("which", ["layer_norm_dir", "group_norm_dir"])
def test_layers_match_transformers_hidden_states(which, request):
    path = request.getfixturevalue(which)
    teacher = load_teacher(path, device="cpu")
    wav = _wavs([12345])[0]
    ref = _hf_hidden_states(teacher.model, wav, teacher.info.do_normalize)
    for layer in range(teacher.num_layers + 1):
        got = teacher.extract([wav], layer)[0]
        assert got.shape == ref[layer][0].shape
        torch.testing.assert_close(got, ref[layer][0], atol=1e-5, rtol=1e-5)
    # the teacher runs only the layers it needs and restores the model afterwards
    assert len(teacher.model.encoder.layers) == teacher.num_layers


def test_tiny_teacher_is_50hz_with_400_sample_receptive_field(layer_norm_dir):
    teacher = load_teacher(layer_norm_dir, device="cpu")
    for n in [400, 719, 720, 16000, 16000 * 3 + 17]:
        assert teacher.extract(_wavs([n]), 1)[0].shape == ((n - 400) // 320 + 1, 64)
    with pytest.raises(ValueError, match="receptive field"):
        teacher.extract(_wavs([399]), 1)
    with pytest.raises(ValueError, match="out of range"):
        teacher.extract(_wavs([1600]), 4)


def test_normalisation_matches_feature_extractor():
    from transformers import Wav2Vec2FeatureExtractor

    wav = _wavs([5000])[0] * 7 + 0.3
    ref = Wav2Vec2FeatureExtractor(do_normalize=True)(wav, sampling_rate=16000).input_values[0]
    np.testing.assert_allclose(normalize_utterance(torch.as_tensor(wav)).numpy(), ref, atol=1e-5)


def test_layer_norm_teacher_batched_equals_unbatched(layer_norm_dir):
    teacher = load_teacher(layer_norm_dir, device="cpu")
    wavs = _wavs([16000, 4321, 9000, 401, 16000])
    batched = teacher.extract(wavs, 3)
    assert [b.shape[0] for b in batched] == [(len(w) - 400) // 320 + 1 for w in wavs]
    for wav, b in zip(wavs, batched):
        torch.testing.assert_close(b, teacher.extract([wav], 3)[0], atol=TOL, rtol=TOL)
    got = dict(teacher.extract_many(wavs, 3, max_samples=20000))
    for i, wav in enumerate(wavs):
        torch.testing.assert_close(got[i], batched[i], atol=TOL, rtol=TOL)


def test_group_norm_teacher_batches_only_equal_lengths(group_norm_dir):
    teacher = load_teacher(group_norm_dir, device="cpu")
    assert teacher.info.group_norm and not teacher.info.do_normalize
    wavs = _wavs([8000, 3000, 8000, 5000])
    batches = teacher.batches([len(w) for w in wavs], max_samples=10**9)
    assert sorted(map(sorted, batches)) == [[0, 2], [1], [3]]
    got = dict(teacher.extract_many(wavs, 2, max_samples=10**9))
    for i, wav in enumerate(wavs):
        torch.testing.assert_close(got[i], teacher.extract([wav], 2)[0], atol=TOL, rtol=TOL)
    with pytest.raises(ValueError, match="equal length"):
        teacher.extract(wavs[:2], 2)
    # why: zero padding changes a group-norm front-end's output by far more than TOL
    padded = np.concatenate([wavs[1], np.zeros(5000, np.float32)])
    diff = teacher.extract([padded], 2)[0][:9] - teacher.extract([wavs[1]], 2)[0]
    assert diff.abs().max() > 100 * TOL


@pytest.mark.parametrize("kind", ["hubert_ctc", "wavlm", "wav2vec2_ctc"])
def test_loads_other_architectures_and_ctc_checkpoints(kind, tmp_path):
    import transformers as tf

    common = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                  conv_dim=(16,) * 7, num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2,
                  vocab_size=12)
    cls, cfg_cls = {"hubert_ctc": (tf.HubertForCTC, tf.HubertConfig),
                    "wavlm": (tf.WavLMModel, tf.WavLMConfig),
                    "wav2vec2_ctc": (tf.Wav2Vec2ForCTC, tf.Wav2Vec2Config)}[kind]
    torch.manual_seed(0)
    model = cls(cfg_cls(**common)).eval()
    model.save_pretrained(tmp_path)
    teacher = load_teacher(tmp_path, device="cpu")  # no preprocessor config: fairseq default
    encoder = getattr(model, model.base_model_prefix, model)
    wav = _wavs([6000])[0]
    ref = _hf_hidden_states(encoder, wav, teacher.info.do_normalize)
    torch.testing.assert_close(teacher.extract([wav], 1)[0], ref[1][0], atol=1e-5, rtol=1e-5)
    assert teacher.dim == 32 and teacher.num_layers == 2


def test_precision_is_float32_unless_asked(tmp_path):
    """auto = float32 on every device (bf16 changed ~6% of additive codes on the demo teacher,
    docs/benchmarks.md); bfloat16 on request gives embeddings close to float32."""
    import torch

    from mvqkd.teacher.make import make_teacher
    from mvqkd.teacher.model import resolve_dtype

    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.float32
    path = make_teacher(tmp_path / "t", "tiny", seed=0)
    wav = np.random.default_rng(0).standard_normal(32000).astype(np.float32) * 0.1
    a = load_teacher(path, device="cpu").extract([wav], 2)[0]
    b = load_teacher(path, device="cpu", dtype="bfloat16").extract([wav], 2)[0]
    assert b.dtype == torch.float32 and float(((a - b) ** 2).sum() / ((a - a.mean(0)) ** 2).sum()) < 1e-3


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_float32_teacher_runs_without_tf32(layer_norm_dir, dtype, tf32_on):
    """A float32 teacher is float32 on CUDA too: torch's default lets cuDNN convolutions (the
    CNN front-end) use TF32; extraction turns it off for the forward and restores the user's
    settings after. The switches are process-wide, so they are checked here on a CPU run."""
    from mvqkd.teacher.model import tf32_state
    from tests.tf32 import ieee_state, tf32_during_forward

    teacher = load_teacher(layer_norm_dir, device="cpu", dtype=dtype)
    seen = tf32_during_forward(teacher)
    teacher.extract(_wavs([8000]), 2)
    teacher.extract_chunked(_wavs([40000])[0], 2, 40, 5)  # several windows
    assert len(seen) > 2 and set(seen) == {ieee_state() if dtype == "float32" else tf32_on}
    assert tf32_state() == tf32_on != ieee_state()
    teacher.model.forward = None  # a failing forward still restores them
    with pytest.raises(TypeError):
        teacher.extract(_wavs([8000]), 2)
    assert tf32_state() == tf32_on
