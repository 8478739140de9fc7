"""fairseq HuBERT / wav2vec 2.0 checkpoints (pre-trained or CTC fine-tuned, base to xlarge)
-> a transformers folder (``save_pretrained``), without fairseq installed.

What icefall's MVQ recipe downloads (``hubert_xtralarge_ll60k_finetune_ls960.pt``) is such a
checkpoint. It is read with :func:`mvqkd.teacher.safe_load.load_inert` (nothing in it is
executed). The names come from fairseq's model source:

- ``cfg.model`` (or the legacy ``args`` Namespace): ``_name`` (``hubert``, ``hubert_ctc``,
  ``wav2vec2``, ``wav2vec_ctc``); fine-tuned models keep the pre-training config in
  ``w2v_args`` and their weights under ``w2v_encoder.w2v_model.`` with the CTC projection
  ``w2v_encoder.proj``; ``cfg.task.normalize`` says whether the waveform is normalised;
- ``extractor_mode`` ``default`` (group norm in the first conv layer:
  ``feature_extractor.conv_layers.0.2``) or ``layer_norm`` (``conv_layers.i.2.1``);
  ``conv_feature_layers`` a Python expression of ``(dim, kernel, stride)`` tuples;
- ``layer_norm`` (over the conv features), ``post_extract_proj``, ``mask_emb``,
  ``encoder.pos_conv.0`` (weight-normalised, ``weight_g`` / ``weight_v``),
  ``encoder.layers.N.{self_attn.{q,k,v,out}_proj, self_attn_layer_norm, fc1, fc2,
  final_layer_norm}``, ``encoder.layer_norm``; ``layer_norm_first`` selects transformers'
  stable-layer-norm encoder.

Pre-training-only weights (``final_proj``, ``label_embs_concat``, ``quantizer``,
``project_q``, ``target_glu``) are dropped and listed; any other key left unused is an error.
"""

from __future__ import annotations

import ast
import json
import logging
import re
from pathlib import Path

import torch

from mvqkd.conventions import SAMPLE_RATE
from mvqkd.teacher.safe_load import load_inert, plain

logger = logging.getLogger(__name__)

PRETRAINING_ONLY = ("final_proj.", "label_embs_concat", "quantizer.", "project_q.", "target_glu.",
                    "project_inp.", "encoder_proj.")
FINETUNED_PREFIX = "w2v_encoder.w2v_model."
CTC_HEAD = "w2v_encoder.proj."
_LAYER_MAP = {
    "self_attn.q_proj": "attention.q_proj", "self_attn.k_proj": "attention.k_proj",
    "self_attn.v_proj": "attention.v_proj", "self_attn.out_proj": "attention.out_proj",
    "self_attn_layer_norm": "layer_norm", "fc1": "feed_forward.intermediate_dense",
    "fc2": "feed_forward.output_dense", "final_layer_norm": "final_layer_norm",
}


def parse_conv_layers(spec: str) -> list[tuple[int, int, int]]:
    """fairseq's ``conv_feature_layers``, e.g. ``"[(512,10,5)] + [(512,3,2)] * 4"``, evaluated
    with list literals, ``+`` and ``*`` only."""
    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [ev(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            a, b = ev(node.left), ev(node.right)
            return a + b if isinstance(node.op, ast.Add) else a * b
        raise ValueError(f"conv_feature_layers {spec!r}: unsupported expression")

    layers = ev(ast.parse(spec, mode="eval"))
    if not layers or not all(isinstance(t, tuple) and len(t) == 3 for t in layers):
        raise ValueError(f"conv_feature_layers {spec!r}: expected a list of (dim, kernel, stride)")
    return [tuple(int(v) for v in t) for t in layers]


def read_config(state: dict) -> tuple[str, dict, bool, bool]:
    """``(kind "hubert" | "wav2vec2", pre-training model config, normalize, fine-tuned)``."""
    cfg = plain(state.get("cfg")) if state.get("cfg") is not None else None
    if not isinstance(cfg, dict) or "model" not in cfg:
        args = plain(state.get("args"))
        if not isinstance(args, dict):
            raise ValueError("no fairseq config in the checkpoint (neither 'cfg' nor 'args')")
        cfg = {"model": {**args, "_name": args.get("arch", args.get("_name"))}, "task": args}
    model, task = cfg["model"], cfg.get("task") or {}
    name = str(model.get("_name") or "")
    finetuned = "w2v_args" in model and model.get("w2v_args") is not None
    if finetuned:
        inner = model["w2v_args"]
        if "model" not in inner:  # a legacy Namespace as w2v_args
            inner = {"model": inner, "task": inner}
        pre, normalize = inner["model"], bool(inner.get("task", {}).get("normalize", task.get("normalize", False)))
        name = str(pre.get("_name") or name)
    else:
        pre, normalize = model, bool(task.get("normalize", False))
    kind = "hubert" if "hubert" in name else "wav2vec2" if "wav2vec" in name else None
    if kind is None:
        raise ValueError(f"model {name!r} is neither a fairseq HuBERT nor a wav2vec 2.0 model")
    if int(pre.get("pos_conv_depth", 1) or 1) > 1 or pre.get("conv_pos_batch_norm"):
        raise ValueError("positional convolutions with depth > 1 or batch norm (data2vec 2.0 style) are "
                         "not supported")
    return kind, pre, normalize, finetuned


def hf_config(kind: str, pre: dict, vocab_size: int | None):
    """The transformers config of the same architecture."""
    import transformers as tf

    conv = parse_conv_layers(pre.get("conv_feature_layers", "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"))
    mode = pre.get("extractor_mode", "default")
    kw = dict(
        hidden_size=int(pre.get("encoder_embed_dim", 768)),
        num_hidden_layers=int(pre.get("encoder_layers", 12)),
        num_attention_heads=int(pre.get("encoder_attention_heads", 12)),
        intermediate_size=int(pre.get("encoder_ffn_embed_dim", 3072)),
        hidden_act=str(pre.get("activation_fn", "gelu")),
        conv_dim=[c[0] for c in conv], conv_kernel=[c[1] for c in conv], conv_stride=[c[2] for c in conv],
        conv_bias=bool(pre.get("conv_bias", False)),
        feat_extract_norm="layer" if mode == "layer_norm" else "group",
        do_stable_layer_norm=bool(pre.get("layer_norm_first", False)),
        num_conv_pos_embeddings=int(pre.get("conv_pos", 128)),
        num_conv_pos_embedding_groups=int(pre.get("conv_pos_groups", 16)),
        layer_norm_eps=1e-5,
        hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0,
        layerdrop=0.0,
        vocab_size=vocab_size or 32,
    )
    if kind == "hubert":
        return tf.HubertConfig(feat_proj_layer_norm=True, **kw)
    return tf.Wav2Vec2Config(**kw)


def map_key(key: str, mode: str) -> str | None:
    """A fairseq key (without the fine-tuning prefix) -> the transformers base-model key;
    None for pre-training-only weights. Raises KeyError for an unknown key."""
    if key.startswith(PRETRAINING_ONLY):
        return None
    m = re.fullmatch(r"feature_extractor\.conv_layers\.(\d+)\.(0|2|2\.1)\.(weight|bias)", key)
    if m:
        i, part, p = m.groups()
        if part == "0":
            return f"feature_extractor.conv_layers.{i}.conv.{p}"
        if part == "2.1" or (mode == "default" and i == "0" and part == "2"):
            return f"feature_extractor.conv_layers.{i}.layer_norm.{p}"
        raise KeyError(key)
    m = re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)\.(weight|bias)", key)
    if m and m.group(2) in _LAYER_MAP:
        return f"encoder.layers.{m.group(1)}.{_LAYER_MAP[m.group(2)]}.{m.group(3)}"
    fixed = {
        "mask_emb": "masked_spec_embed",
        "layer_norm.weight": "feature_projection.layer_norm.weight",
        "layer_norm.bias": "feature_projection.layer_norm.bias",
        "post_extract_proj.weight": "feature_projection.projection.weight",
        "post_extract_proj.bias": "feature_projection.projection.bias",
        "encoder.pos_conv.0.bias": "encoder.pos_conv_embed.conv.bias",
        "encoder.pos_conv.0.weight_g": "encoder.pos_conv_embed.conv.WEIGHT_G",
        "encoder.pos_conv.0.weight_v": "encoder.pos_conv_embed.conv.WEIGHT_V",
        "encoder.layer_norm.weight": "encoder.layer_norm.weight",
        "encoder.layer_norm.bias": "encoder.layer_norm.bias",
    }
    if key in fixed:
        return fixed[key]
    raise KeyError(key)


def _weight_norm_names(target_keys) -> dict[str, str]:
    """transformers names the weight-normalised conv's g / v by torch's API in use."""
    base = next(k for k in target_keys if k.endswith("pos_conv_embed.conv.bias"))[: -len("bias")]
    if base + "parametrizations.weight.original0" in target_keys:
        return {"WEIGHT_G": "parametrizations.weight.original0", "WEIGHT_V": "parametrizations.weight.original1"}
    return {"WEIGHT_G": "weight_g", "WEIGHT_V": "weight_v"}


def convert_state_dict(weights: dict, mode: str, target_keys, prefix: str = "") -> tuple[dict, list[str]]:
    """fairseq weights -> ``(transformers state_dict, dropped pre-training keys)``; raises
    ValueError listing keys that map to nothing, or model keys left without a value."""
    names = _weight_norm_names(target_keys)
    out, dropped, unknown = {}, [], []
    for key, value in weights.items():
        if key.startswith(CTC_HEAD):
            out["lm_head." + key[len(CTC_HEAD):]] = value
            continue
        inner = key[len(FINETUNED_PREFIX):] if key.startswith(FINETUNED_PREFIX) else key
        try:
            mapped = map_key(inner, mode)
        except KeyError:
            unknown.append(key)
            continue
        if mapped is None:
            dropped.append(key)
            continue
        for k, v in names.items():
            mapped = mapped.replace(k, v)
        out[prefix + mapped] = value
    missing = sorted(set(target_keys) - set(out))
    if unknown or missing:
        raise ValueError(f"fairseq checkpoint does not match the architecture: keys with no place "
                         f"{unknown[:8]}{' ...' if len(unknown) > 8 else ''}; model weights without a "
                         f"value {missing[:8]}{' ...' if len(missing) > 8 else ''}")
    return out, dropped


def build_model(kind: str, pre: dict, vocab_size: int | None, device="cpu"):
    """The empty transformers model (``*ForCTC`` when there is a CTC head)."""
    import transformers as tf

    config = hf_config(kind, pre, vocab_size)
    cls = {("hubert", False): tf.HubertModel, ("hubert", True): tf.HubertForCTC,
           ("wav2vec2", False): tf.Wav2Vec2Model, ("wav2vec2", True): tf.Wav2Vec2ForCTC}[(kind, bool(vocab_size))]
    with torch.device(device):
        model = cls(config)
    return model, ("hubert." if kind == "hubert" else "wav2vec2.") if vocab_size else ""


def convert_fairseq(checkpoint: str | Path, out_dir: str | Path) -> Path:
    """Convert a fairseq HuBERT / wav2vec 2.0 checkpoint to ``out_dir`` (``save_pretrained``
    plus a ``preprocessor_config.json`` whose ``do_normalize`` is fairseq's
    ``task.normalize``). Returns ``out_dir``."""
    from transformers import Wav2Vec2FeatureExtractor

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"fairseq checkpoint not found: {checkpoint}")
    state = load_inert(checkpoint)
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise ValueError(f"{checkpoint}: not a fairseq checkpoint (no 'model' weights dict)")
    kind, pre, normalize, finetuned = read_config(state)
    weights = {k: v for k, v in state["model"].items() if isinstance(v, torch.Tensor)}
    head = weights.get(CTC_HEAD + "weight")
    vocab = int(head.shape[0]) if head is not None else None
    model, prefix = build_model(kind, pre, vocab)
    sd, dropped = convert_state_dict(weights, pre.get("extractor_mode", "default"), model.state_dict().keys(),
                                     prefix)
    model.load_state_dict(sd, strict=True)
    if dropped:
        logger.info("dropped %d pre-training-only tensors (%s ...)", len(dropped), ", ".join(dropped[:3]))
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0, do_normalize=normalize,
                             return_attention_mask=normalize).save_pretrained(out_dir)
    (out_dir / "fairseq_source.json").write_text(json.dumps(
        {"checkpoint": str(checkpoint.resolve()), "kind": kind, "finetuned": finetuned,
         "normalize": normalize, "dropped": dropped}, indent=1))
    logger.info("%s (%s%s, %d layers, dim %d) -> %s", checkpoint, kind, " CTC" if vocab else "",
                model.config.num_hidden_layers, model.config.hidden_size, out_dir)
    return out_dir
