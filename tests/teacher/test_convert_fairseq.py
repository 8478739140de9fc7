"""convert-fairseq against transformers' own hidden states.

Checkpoints are built here in fairseq's layout: the weight names below are written from
fairseq's model source (fairseq/models/wav2vec/wav2vec2.py: ConvFeatureExtractionModel,
make_conv_pos, TransformerEncoder, TransformerSentenceEncoderLayer; hubert/hubert.py and
hubert_asr.py: mask_emb, layer_norm, post_extract_proj, w2v_encoder.w2v_model / proj), the
config is an omegaconf DictConfig as fairseq saves it (fine-tuned: cfg.model.w2v_args), and
the file carries what real checkpoints carry (optimizer history, numpy scalars). The
converted folder must give the same hidden states at every layer as the model the weights
came from."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers as tf

from mvqkd.cli import main
from mvqkd.teacher.fairseq import convert_state_dict, map_key

omegaconf = pytest.importorskip("omegaconf")

CONV = [(16, 10, 5), (16, 3, 2), (16, 3, 2), (16, 3, 2), (16, 3, 2), (16, 2, 2), (16, 2, 2)]
CONV_SPEC = "[(16, 10, 5)] + [(16, 3, 2)] * 4 + [(16, 2, 2)] * 2"
LAYER = {"attention.q_proj": "self_attn.q_proj", "attention.k_proj": "self_attn.k_proj",
         "attention.v_proj": "self_attn.v_proj", "attention.out_proj": "self_attn.out_proj",
         "layer_norm": "self_attn_layer_norm", "feed_forward.intermediate_dense": "fc1",
         "feed_forward.output_dense": "fc2", "final_layer_norm": "final_layer_norm"}


def fairseq_weights(base: tf.PreTrainedModel, layer_norm_mode: bool, num_layers: int) -> dict:
    """A transformers base model's weights under fairseq's names (written from fairseq)."""
    sd = base.state_dict()
    out = {"mask_emb": sd["masked_spec_embed"],
           "layer_norm.weight": sd["feature_projection.layer_norm.weight"],
           "layer_norm.bias": sd["feature_projection.layer_norm.bias"],
           "post_extract_proj.weight": sd["feature_projection.projection.weight"],
           "post_extract_proj.bias": sd["feature_projection.projection.bias"],
           "encoder.pos_conv.0.bias": sd["encoder.pos_conv_embed.conv.bias"],
           "encoder.pos_conv.0.weight_g": sd["encoder.pos_conv_embed.conv.parametrizations.weight.original0"],
           "encoder.pos_conv.0.weight_v": sd["encoder.pos_conv_embed.conv.parametrizations.weight.original1"],
           "encoder.layer_norm.weight": sd["encoder.layer_norm.weight"],
           "encoder.layer_norm.bias": sd["encoder.layer_norm.bias"]}
    for i in range(len(CONV)):
        out[f"feature_extractor.conv_layers.{i}.0.weight"] = sd[f"feature_extractor.conv_layers.{i}.conv.weight"]
        if layer_norm_mode:  # Sequential(conv, Dropout, Sequential(TransposeLast, Fp32LayerNorm, ...), GELU)
            for p in ("weight", "bias"):
                out[f"feature_extractor.conv_layers.{i}.2.1.{p}"] = sd[f"feature_extractor.conv_layers.{i}.layer_norm.{p}"]
        elif i == 0:  # default mode: Sequential(conv, Dropout, Fp32GroupNorm, GELU) in layer 0 only
            for p in ("weight", "bias"):
                out[f"feature_extractor.conv_layers.0.2.{p}"] = sd[f"feature_extractor.conv_layers.0.layer_norm.{p}"]
    for n in range(num_layers):
        for hf, fs in LAYER.items():
            for p in ("weight", "bias"):
                out[f"encoder.layers.{n}.{fs}.{p}"] = sd[f"encoder.layers.{n}.{hf}.{p}"]
    return out


def model_cfg(layer_norm_mode: bool, stable: bool, name: str) -> dict:
    return {"_name": name, "extractor_mode": "layer_norm" if layer_norm_mode else "default",
            "encoder_layers": 3, "encoder_embed_dim": 32, "encoder_ffn_embed_dim": 64,
            "encoder_attention_heads": 2, "activation_fn": "gelu", "layer_type": "transformer",
            "layer_norm_first": stable, "conv_feature_layers": CONV_SPEC, "conv_bias": False,
            "conv_pos": 8, "conv_pos_groups": 2, "dropout": 0.1, "final_dim": 16, "label_rate": 50.0}


def save_fairseq(path, model_cfg_dict, weights, normalize, finetuned, vocab=None, ctc_name="hubert_ctc"):
    from omegaconf import OmegaConf

    if finetuned:
        w2v_args = {"model": model_cfg_dict, "task": {"_name": "hubert_pretraining", "normalize": normalize}}
        cfg = {"model": {"_name": ctc_name, "w2v_path": "/nonexistent/pretrained.pt", "w2v_args": w2v_args,
                         "apply_mask": True, "normalize": normalize},
               "task": {"_name": "hubert_pretraining", "normalize": normalize}}
        weights = {"w2v_encoder.w2v_model." + k: v for k, v in weights.items()}
        weights["w2v_encoder.proj.weight"], weights["w2v_encoder.proj.bias"] = vocab
    else:
        cfg = {"model": model_cfg_dict, "task": {"_name": "hubert_pretraining", "normalize": normalize}}
        weights = {**weights, "final_proj.weight": torch.randn(16, 32), "final_proj.bias": torch.zeros(16),
                   "label_embs_concat": torch.randn(504, 16)}
    torch.save({"args": None, "cfg": OmegaConf.create(cfg), "model": weights,
                "optimizer_history": [{"criterion_name": "HubertCriterion", "num_updates": 400000}],
                "extra_state": {"val_loss": np.float64(3.2), "train_iterator": {"epoch": 7}},
                "last_optimizer_state": None}, path)


def hidden_states(model, wav):
    with torch.no_grad():
        return model(wav, output_hidden_states=True).hidden_states


@pytest.mark.parametrize("kind, layer_norm_mode, stable, finetuned, normalize", [
    ("hubert", False, False, False, False),  # hubert-base style: group norm, post-norm, pre-trained
    ("hubert", True, True, True, True),      # hubert-large / xlarge fine-tuned style
    ("wav2vec2", True, True, False, True),   # wav2vec2-large-lv60 style, pre-trained
    ("wav2vec2", False, False, True, False),  # wav2vec2-base-960h style, fine-tuned
])
def test_convert_gives_the_same_hidden_states(tmp_path, kind, layer_norm_mode, stable, finetuned, normalize):
    torch.manual_seed(0)
    cfg_cls, base_cls, ctc_cls = ((tf.HubertConfig, tf.HubertModel, tf.HubertForCTC) if kind == "hubert"
                                  else (tf.Wav2Vec2Config, tf.Wav2Vec2Model, tf.Wav2Vec2ForCTC))
    config = cfg_cls(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
                             conv_dim=[c[0] for c in CONV], conv_kernel=[c[1] for c in CONV],
                             conv_stride=[c[2] for c in CONV], num_conv_pos_embeddings=8,
                             num_conv_pos_embedding_groups=2, feat_extract_norm="layer" if layer_norm_mode else "group",
                             do_stable_layer_norm=stable, vocab_size=12)
    ref = (ctc_cls if finetuned else base_cls)(config).eval()
    base = getattr(ref, kind) if finetuned else ref
    with torch.no_grad():  # non-trivial norms and biases
        for p in base.parameters():
            p.add_(0.05 * torch.randn_like(p))
    weights = fairseq_weights(base, layer_norm_mode, 3)
    vocab = (ref.lm_head.weight.detach().clone(), ref.lm_head.bias.detach().clone()) if finetuned else None
    ckpt = tmp_path / "fairseq.pt"
    save_fairseq(ckpt, model_cfg(layer_norm_mode, stable, kind), weights, normalize, finetuned, vocab,
                 ctc_name="hubert_ctc" if kind == "hubert" else "wav2vec_ctc")
    out = tmp_path / "hf"
    assert main(["convert-fairseq", str(ckpt), "--out", str(out)]) == 0
    conv = (ctc_cls if finetuned else base_cls).from_pretrained(out)
    conv.eval()
    wav = torch.randn(1, 8000)
    for a, b in zip(hidden_states(ref, wav), hidden_states(conv, wav), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    if finetuned:
        torch.testing.assert_close(conv.lm_head.weight, ref.lm_head.weight)
    fe = tf.Wav2Vec2FeatureExtractor.from_pretrained(out)
    assert fe.do_normalize is normalize
    # and mvqkd loads it as a teacher
    from mvqkd.teacher.model import load_teacher

    teacher = load_teacher(out, device="cpu")
    assert teacher.num_layers == 3 and teacher.dim == 32


def test_xlarge_finetuned_key_list_is_fully_consumed():
    """Every key of hubert_xtralarge_ll60k_finetune_ls960.pt (48 layers, dim 1280, layer-norm
    conv front-end, CTC head over 32 letters; names from fairseq's source) finds its place
    in transformers' HubertForCTC of that shape, and every HubertForCTC weight gets one."""
    conv = [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2
    keys = ["mask_emb", "layer_norm.weight", "layer_norm.bias", "post_extract_proj.weight",
            "post_extract_proj.bias", "encoder.pos_conv.0.bias", "encoder.pos_conv.0.weight_g",
            "encoder.pos_conv.0.weight_v", "encoder.layer_norm.weight", "encoder.layer_norm.bias"]
    for i in range(7):
        keys += [f"feature_extractor.conv_layers.{i}.0.weight", f"feature_extractor.conv_layers.{i}.2.1.weight",
                 f"feature_extractor.conv_layers.{i}.2.1.bias"]
    for n in range(48):
        for fs in LAYER.values():
            keys += [f"encoder.layers.{n}.{fs}.weight", f"encoder.layers.{n}.{fs}.bias"]
    weights = {"w2v_encoder.w2v_model." + k: torch.empty(0) for k in keys}
    weights.update({"w2v_encoder.proj.weight": torch.empty(0), "w2v_encoder.proj.bias": torch.empty(0)})
    config = tf.HubertConfig(hidden_size=1280, num_hidden_layers=48, num_attention_heads=16, intermediate_size=5120,
                             conv_dim=[c[0] for c in conv], conv_kernel=[c[1] for c in conv],
                             conv_stride=[c[2] for c in conv], feat_extract_norm="layer", do_stable_layer_norm=True,
                             vocab_size=32)
    with torch.device("meta"):
        target = tf.HubertForCTC(config).state_dict().keys()
    sd, dropped = convert_state_dict(weights, "layer_norm", target, prefix="hubert.")
    assert set(sd) == set(target) and dropped == []
    assert len(weights) == len(target) == 48 * 16 + 10 + 21 + 2


def test_unknown_keys_and_pretraining_heads():
    assert map_key("final_proj.weight", "default") is None and map_key("label_embs_concat", "default") is None
    with pytest.raises(KeyError):
        map_key("encoder.layers.0.adapter.weight", "default")
    with pytest.raises(KeyError):  # group norm exists in conv layer 0 only
        map_key("feature_extractor.conv_layers.3.2.weight", "default")


def test_nothing_in_the_checkpoint_runs(tmp_path):
    """A pickle that would call os.system on a plain torch.load is read as inert data."""
    import os
    import pickle

    from mvqkd.teacher.safe_load import Record, load_inert

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.ones(2)}, "cfg": Evil()}, path, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    state = load_inert(path)
    assert isinstance(state["cfg"], Record) and state["cfg"].qualname in ("posix.system", "os.system")
    assert not (tmp_path / "pwned").exists()
    torch.testing.assert_close(state["model"]["w"], torch.ones(2))
    assert main(["convert-fairseq", str(path), "--out", str(tmp_path / "o")]) == 1
