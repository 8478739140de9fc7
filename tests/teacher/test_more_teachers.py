"""The Whisper encoder and data2vec-audio as teachers, against transformers' own hidden
states (random tiny models saved with save_pretrained, loaded from their folders)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers as tf

from mvqkd.conventions import num_frames
from mvqkd.teacher.model import load_teacher


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory):
    torch.manual_seed(0)
    cfg = tf.WhisperConfig(d_model=32, encoder_layers=3, encoder_attention_heads=2, encoder_ffn_dim=64,
                           decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64, num_mel_bins=80,
                           vocab_size=100, max_source_positions=1500, max_target_positions=32,
                           pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
    d = tmp_path_factory.mktemp("whisper") / "tiny-whisper"
    tf.WhisperModel(cfg).save_pretrained(d)
    tf.WhisperFeatureExtractor(feature_size=80).save_pretrained(d)
    return d


def _wav(seconds, seed=0):
    return (np.random.default_rng(seed).standard_normal(int(seconds * 16000)) * 0.1).astype(np.float32)


@pytest.mark.parametrize("layer", [0, 2, 3])
def test_whisper_layers_equal_transformers_hidden_states(whisper_dir, layer):
    teacher = load_teacher(whisper_dir, device="cpu")
    assert (teacher.num_layers, teacher.dim, teacher.info.model_type) == (3, 32, "whisper")
    wav = _wav(2.13)
    emb = teacher.extract([wav], layer)[0]
    assert abs(emb.shape[0] - num_frames(2.13)) <= 1  # 50 Hz, the common frame rule
    model = tf.WhisperModel.from_pretrained(whisper_dir).get_encoder().eval()
    feats = tf.WhisperFeatureExtractor.from_pretrained(whisper_dir)(wav, sampling_rate=16000,
                                                                   return_tensors="pt").input_features
    with torch.no_grad():
        ref = model(feats, output_hidden_states=True).hidden_states[layer][0, : emb.shape[0]]
    if layer == 3:  # transformers' last hidden state has the final layer norm; the teacher's not
        with torch.no_grad():
            normed, full = model.layer_norm(emb.clone()), model(feats).last_hidden_state[0, : emb.shape[0]]
        torch.testing.assert_close(normed, full, rtol=1e-4, atol=1e-4)
    else:
        torch.testing.assert_close(emb, ref, rtol=1e-4, atol=1e-4)


def test_whisper_batches_and_chunks_long_audio(whisper_dir):
    teacher = load_teacher(whisper_dir, device="cpu")
    a, b = _wav(1.0, 1), _wav(3.7, 2)
    alone = [teacher.extract([w], 2)[0] for w in (a, b)]
    together = teacher.extract([a, b], 2)
    for x, y in zip(alone, together):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-4)
    long = _wav(40.0, 3)  # longer than Whisper's 30 s window
    with pytest.raises(ValueError, match="longer than Whisper's 30 s"):
        teacher.extract([long], 2)
    (i, emb), = list(teacher.extract_many([long], 2, max_samples=10 ** 7))
    assert emb.shape == (teacher.num_frames(len(long)), 32) and torch.isfinite(emb).all()
    with pytest.raises(ValueError, match="front-end cannot bound a whisper teacher"):
        teacher.set_chunking(60.0, 5.0, "front-end")


def test_data2vec_audio_teacher(tmp_path):
    torch.manual_seed(0)
    cfg = tf.Data2VecAudioConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                 conv_dim=(16,) * 7, num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2)
    tf.Data2VecAudioModel(cfg).save_pretrained(tmp_path / "d2v")
    tf.Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True).save_pretrained(tmp_path / "d2v")
    teacher = load_teacher(tmp_path / "d2v", device="cpu")
    assert teacher.info.do_normalize and not teacher.info.group_norm
    wav = _wav(1.5)
    emb = teacher.extract([wav], 1)[0]
    model = tf.Data2VecAudioModel.from_pretrained(tmp_path / "d2v").eval()
    x = tf.Wav2Vec2FeatureExtractor.from_pretrained(tmp_path / "d2v")(wav, sampling_rate=16000,
                                                                     return_tensors="pt").input_values
    with torch.no_grad():
        ref = model(x, output_hidden_states=True).hidden_states[1][0]
    torch.testing.assert_close(emb, ref, rtol=1e-4, atol=1e-4)
    long = _wav(7.3, 1)  # its own feature encoder class, chunked in 2 s: the whole-file frames
    got = teacher.extract_chunked(long, 2, 100, 10, mode="front-end")
    torch.testing.assert_close(got, teacher.extract([long], 2)[0], rtol=1e-5, atol=1e-5)


def test_whisper_float32_forward_runs_without_tf32(whisper_dir, tf32_on):
    from mvqkd.teacher.model import tf32_state
    from tests.tf32 import ieee_state, tf32_during_forward

    teacher = load_teacher(whisper_dir, device="cpu")
    seen = tf32_during_forward(teacher)
    teacher.extract([_wav(1.0)], 2)
    assert seen == [ieee_state()] and tf32_state() == tf32_on
