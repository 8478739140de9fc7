"""Random-init teacher checkpoints for tests and benchmarks (``mvqkd make-teacher``)."""

from __future__ import annotations

import logging
from pathlib import Path

from mvqkd.conventions import SAMPLE_RATE

logger = logging.getLogger(__name__)

# All sizes keep the standard conv front-end strides (5,2,2,2,2,2,2 = 320x: 50 Hz at
# 16 kHz) and kernels (10,3,3,3,3,2,2: receptive field 400 samples).
_STRIDES = (5, 2, 2, 2, 2, 2, 2)
_KERNELS = (10, 3, 3, 3, 3, 2, 2)

SIZES = {
    # small enough for CPU unit tests; layer-norm front-end so padded batches are exact
    "tiny": dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=2, intermediate_size=128,
                 conv_channels=32, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                 feat_extract_norm="layer", do_stable_layer_norm=True, do_normalize=True),
    # the shapes of hubert-base-ls960 (group-norm front-end, post-norm transformer)
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                 conv_channels=512, num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16,
                 feat_extract_norm="group", do_stable_layer_norm=False, do_normalize=False),
    # the shapes of hubert-large-ll60k
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                  conv_channels=512, num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16,
                  feat_extract_norm="layer", do_stable_layer_norm=True, do_normalize=True),
}


def make_teacher(out_dir: str | Path, size: str = "tiny", seed: int = 0, **overrides) -> Path:
    """Write a random-init ``HubertModel`` plus a ``Wav2Vec2FeatureExtractor`` config.

    Args:
        out_dir: directory to create (``save_pretrained`` layout).
        size: ``tiny`` | ``base`` | ``large`` (see :data:`SIZES`).
        seed: torch seed for the random weights.
        overrides: keys of :data:`SIZES` entries to change (e.g. ``feat_extract_norm="group"``).
    Returns:
        ``out_dir`` as a Path.
    """
    import torch
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    if size not in SIZES:
        raise ValueError(f"--size {size!r}: choose one of {', '.join(SIZES)}")
    spec = {**SIZES[size], **overrides}
    channels = spec.pop("conv_channels")
    do_normalize = spec.pop("do_normalize")
    config = HubertConfig(
        conv_dim=(channels,) * len(_STRIDES),
        conv_stride=_STRIDES,
        conv_kernel=_KERNELS,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        feat_proj_dropout=0.0,
        layerdrop=0.0,
        **spec,
    )
    config.architectures = ["HubertModel"]
    torch.manual_seed(seed)
    model = HubertModel(config).eval()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=SAMPLE_RATE,
        padding_value=0.0,
        do_normalize=do_normalize,
        return_attention_mask=spec["feat_extract_norm"] == "layer",
    ).save_pretrained(str(out))
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("wrote random-init %s teacher (%.1fM parameters) to %s", size, n_params / 1e6, out)
    return out
