"""Configuration of the transducer student (:class:`TransducerConfig`) and its presets.

The config is a plain dataclass: ``dataclasses.asdict(cfg)`` is JSON-serialisable and
``TransducerConfig(**d)`` (or :func:`mvqkd.student.build_model`) rebuilds it, which is how
checkpoints store it.

Presets (``preset_config(name, vocab_size, **overrides)``):

- ``tiny``: 2 layers x 64, for unit tests on CPU.
- ``demo``: 4 layers x 144 with a 64-channel front-end, the student of
  ``recipes/librispeech/run.sh`` (2.38M parameters with its 256 BPE pieces, 2.44M with the
  codebook head): 0.3-0.4 s per 20 s training batch on one CPU thread with the portable
  kernels (docs/benchmarks.md).
- ``small``: 6 layers x 192 (6.4M).
- ``reference``: 12 layers x 512, 8 heads, FFN 2048, kernel 31 (the size of icefall's
  pruned_transducer_stateless6 conformer student used by the MVQ-KD paper).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

from mvqkd.conventions import CODEBOOK_WEIGHTINGS, FLOAT_KD_MODES, NUM_MEL_BINS

CODEBOOK_LOSSES = ("independent", "joint")
KD_MODES = (None, *FLOAT_KD_MODES)
LOSS_NORMS = ("utterance", "frame")
RNNT_BACKENDS = ("torch", "k2")
RNNT_LOSSES = ("full", "pruned")


@dataclass
class TransducerConfig:
    """Hyper-parameters of :class:`mvqkd.student.Transducer`.

    Encoder: Conv2d 4x subsampling (100 Hz fbank -> 25 Hz) then ``num_layers`` Conformer
    blocks of width ``encoder_dim``. ``distill_layer`` (1-based) is the block whose output
    feeds the distillation heads; ``None`` means the middle one (``num_layers // 2``, the
    reference's 6 of 12).

    ``ctc_loss_scale`` > 0 adds an auxiliary CTC head on the final encoder output.

    Transducer loss: ``rnnt_loss="full"`` (the whole (B, T, U+1, V) lattice) or
    ``"pruned"`` (k2's pruned loss, :mod:`mvqkd.student.pruned`: ``prune_range`` symbols per
    frame, a simple loss smoothed with ``lm_scale`` / ``am_scale``, weighted against the
    pruned one by ``simple_loss_scale`` after a warm-up of ``rnnt_warmup_steps`` steps;
    ``rnnt_backend="k2"`` computes it with k2 instead of mvqkd.losses).

    Distillation: ``num_codebooks`` = N codebooks of the TEACHER (50 Hz); the head predicts
    2N codebooks per 25 Hz student frame (two successive teacher frames concatenated).
    0 disables the head. ``codebook_loss`` is ``"independent"`` (one softmax per codebook)
    or ``"joint"`` (each codebook also conditioned on the previous ones, as
    ``multi_quantization.JointCodebookLoss``). ``kd_mode`` (``"l1"|"l2"|"cosine"``)
    regresses onto float teacher embeddings of dimension ``kd_dim`` instead
    (standardised per dimension first with ``kd_normalize``). ``codebook_label_smoothing``
    eps smooths the codebook targets uniformly, or, with ``codebook_smoothing_temperature``
    T > 0, over the codewords nearest the target's in the quantizer's codebook
    (:class:`mvqkd.student.heads.CodebookHead`; the table comes from the quantizer).
    ``codebook_geometry_dim`` D > 0 (the quantizer's dimension) replaces the head's free
    weights by the quantizer's codewords: it predicts the normalised teacher embedding and
    scores each codeword by its squared distance to it (``mvqkd train --codebook-head geometry``);
    ``codebook_geometry_residual`` scores each codebook's codewords against what the frame's other
    target codewords leave of it (``--codebook-head residual``). ``codebook_weighting``
    ``"energy"`` weighs each codebook's cross-entropy by its codewords' energy raised to
    ``codebook_weighting_power`` (geometry heads; :class:`mvqkd.student.heads.CodebookHead`).

    ``loss_norm`` says how the distillation losses are normalised: ``"utterance"`` (default)
    sums over frames and codebooks and divides by the batch size, the same per-utterance
    normalisation as the RNN-T loss (reduction "mean" = mean over utterances of the
    per-utterance sum). This keeps the reference's balance: icefall sums both losses over the
    batch, so ``codebook_loss_scale=0.1`` means the same thing here as there. ``"frame"``
    averages over valid student frames instead (codebooks still summed).
    """

    vocab_size: int
    blank_id: int = 0
    feature_dim: int = NUM_MEL_BINS
    encoder_dim: int = 256
    num_layers: int = 6
    num_heads: int = 4
    ff_dim: int = 1024
    conv_kernel: int = 31
    dropout: float = 0.1
    subsampling_channels: Optional[int] = None
    decoder_dim: int = 256
    joiner_dim: int = 256
    context_size: int = 2
    ctc_loss_scale: float = 0.0
    distill_layer: Optional[int] = None
    num_codebooks: int = 0
    codebook_size: int = 256
    codebook_loss: str = "independent"
    codebook_loss_scale: float = 0.1
    codebook_hidden_dim: int = 512
    codebook_mlp_dim: int = 0
    codebook_label_smoothing: float = 0.0
    codebook_smoothing_temperature: float = 0.0
    codebook_geometry_dim: int = 0
    codebook_geometry_residual: bool = False
    codebook_weighting: str = "uniform"
    codebook_weighting_power: float = 1.0
    kd_mode: Optional[str] = None
    kd_dim: int = 0
    kd_loss_scale: float = 1.0
    kd_normalize: bool = False
    loss_norm: str = "utterance"
    sigma_reparam: bool = False
    rnnt_loss: str = "full"
    rnnt_backend: str = "torch"
    prune_range: int = 5
    simple_loss_scale: float = 0.5
    lm_scale: float = 0.25
    am_scale: float = 0.0
    rnnt_warmup_steps: int = 2000

    def __post_init__(self):
        def bad(name, why):
            raise ValueError(f"TransducerConfig.{name}={getattr(self, name)!r}: {why}")

        if self.vocab_size < 2:
            bad("vocab_size", "need at least 2 symbols (blank + one token)")
        if not 0 <= self.blank_id < self.vocab_size:
            bad("blank_id", f"must be in [0, vocab_size={self.vocab_size})")
        if self.encoder_dim % self.num_heads:
            bad("encoder_dim", f"must be divisible by num_heads={self.num_heads}")
        if (self.encoder_dim // self.num_heads) % 2:
            bad("encoder_dim", "encoder_dim / num_heads must be even (rotary position encoding)")
        if self.num_layers < 1:
            bad("num_layers", "must be >= 1")
        if self.conv_kernel % 2 == 0:
            bad("conv_kernel", "must be odd (symmetric 'same' padding)")
        if self.subsampling_channels is not None and self.subsampling_channels < 1:
            bad("subsampling_channels", "must be >= 1 (or None = encoder_dim)")
        if self.context_size < 1:
            bad("context_size", "must be >= 1")
        if self.distill_layer is not None and not 1 <= self.distill_layer <= self.num_layers:
            bad("distill_layer", f"1-based layer index, must be in [1, {self.num_layers}]")
        if self.ctc_loss_scale < 0:
            bad("ctc_loss_scale", "must be >= 0 (0 = no auxiliary CTC head)")
        if self.num_codebooks < 0:
            bad("num_codebooks", "must be >= 0 (0 = no codebook head)")
        if not 0.0 <= self.codebook_label_smoothing < 1.0:
            bad("codebook_label_smoothing", "must be in [0, 1)")
        if self.codebook_smoothing_temperature < 0:
            bad("codebook_smoothing_temperature", "must be >= 0 (0 = uniform label smoothing)")
        if self.codebook_geometry_dim < 0:
            bad("codebook_geometry_dim", "must be >= 0 (0 = a free linear head)")
        if self.codebook_weighting not in CODEBOOK_WEIGHTINGS:
            bad("codebook_weighting", f"must be one of {CODEBOOK_WEIGHTINGS}")
        if self.codebook_weighting != "uniform" and self.codebook_geometry_dim <= 0:
            bad("codebook_weighting", "needs codebook_geometry_dim > 0 (a geometry or residual head)")
        if not self.codebook_weighting_power > 0:
            bad("codebook_weighting_power", "must be > 0 (1: the codewords' energy itself)")
        if self.codebook_weighting_power != 1.0 and self.codebook_weighting != "energy":
            bad("codebook_weighting_power", "raises the energy weights: it needs codebook_weighting='energy'")
        if self.codebook_geometry_residual and self.codebook_geometry_dim <= 0:
            bad("codebook_geometry_residual", "needs codebook_geometry_dim > 0 (the quantizer's dimension)")
        if self.codebook_mlp_dim < 0:
            bad("codebook_mlp_dim", "must be >= 0 (0 = linear head)")
        if self.codebook_loss not in CODEBOOK_LOSSES:
            bad("codebook_loss", f"one of {CODEBOOK_LOSSES}")
        if self.kd_mode not in KD_MODES:
            bad("kd_mode", f"one of {KD_MODES}")
        if self.kd_mode is not None and self.kd_dim <= 0:
            bad("kd_dim", "the teacher embedding dimension is needed when kd_mode is set")
        if self.loss_norm not in LOSS_NORMS:
            bad("loss_norm", f"one of {LOSS_NORMS}")
        if self.rnnt_backend not in RNNT_BACKENDS:
            bad("rnnt_backend", f"one of {RNNT_BACKENDS}")
        if self.rnnt_loss not in RNNT_LOSSES:
            bad("rnnt_loss", f"one of {RNNT_LOSSES}")
        if self.prune_range < 2:
            bad("prune_range", "must be >= 2")

    @property
    def resolved_distill_layer(self) -> int:
        """The 1-based encoder layer read by the distillation heads."""
        if self.distill_layer is not None:
            return self.distill_layer
        return max(1, self.num_layers // 2)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TransducerConfig":
        """Rebuild from ``asdict`` output; unknown keys are an error naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown TransducerConfig keys: {unknown}")
        return cls(**d)


PRESETS = {
    "tiny": dict(encoder_dim=64, num_layers=2, num_heads=4, ff_dim=256, conv_kernel=7,
                 decoder_dim=64, joiner_dim=64, codebook_hidden_dim=64),
    "demo": dict(encoder_dim=144, num_layers=4, num_heads=4, ff_dim=576, conv_kernel=15,
                 decoder_dim=144, joiner_dim=144, codebook_hidden_dim=256, subsampling_channels=64),
    "small": dict(encoder_dim=192, num_layers=6, num_heads=4, ff_dim=768, conv_kernel=15,
                  decoder_dim=192, joiner_dim=192, codebook_hidden_dim=256),
    "reference": dict(encoder_dim=512, num_layers=12, num_heads=8, ff_dim=2048,
                      conv_kernel=31, decoder_dim=512, joiner_dim=512,
                      codebook_hidden_dim=512),
}


def preset_config(name: str, vocab_size: int, **overrides) -> TransducerConfig:
    """A :class:`TransducerConfig` from a named preset (``tiny|demo|small|reference``);
    ``overrides`` replace any field (e.g. ``num_codebooks=8``)."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
    return TransducerConfig(vocab_size=vocab_size, **{**PRESETS[name], **overrides})
