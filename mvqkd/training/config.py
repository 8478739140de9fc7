"""Options of ``mvqkd train`` / :func:`mvqkd.training.student.train` (no heavy imports: the
CLI builds its parser from this dataclass, so each default is written here once)."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

from mvqkd.conventions import CODEBOOK_HEADS, CODEBOOK_WEIGHTINGS, KD_MODES
from mvqkd.options import name_path, opt

MODEL_SIZES = ("tiny", "demo", "small", "reference")  # student.config.PRESETS (checked by a test)
TEACHER_SIZES = ("small", "wide", "tiny", "base", "large")  # teacher.ctc.ALL_SIZES (checked by a test)


def none_or_int(value: str):
    return None if str(value).lower() == "none" else int(value)


@dataclass
class TrainConfig:
    # data
    train_cuts: str = opt(
        "", required=True, help="lhotse CutSet (jsonl.gz) with fbank features; with --kd mvq its cuts must carry "
             "codebook_indexes (written by mvqkd extract)", group="data")
    bpe_model: str = opt("", required=True, help="sentencepiece model (DATA/lang_bpe_V/bpe.model); it is stored "
                              "in every checkpoint", group="data")
    valid_cuts: str | None = opt(None, "CutSet for the validation loss computed at epoch ends "
                                       "(--valid-every)", group="data")
    valid_every: int = opt(1, "validation loss on --valid-cuts after every N-th epoch and after the "
                              "last one; 0: after the last epoch only (it changes no model: "
                              "validation draws no random numbers)", group="data")
    max_duration: float = opt(200.0, "seconds of audio per batch (lhotse DynamicBucketingSampler); "
                                     "longer cuts are left out, with a warning naming them", group="data")
    num_buckets: int = opt(30, "duration buckets of the sampler", group="data")
    num_workers: int = opt(2, "DataLoader worker processes", group="data")
    on_the_fly_feats: bool = opt(False, "compute 80-bin fbank from the audio instead of reading "
                                        "stored features", group="data")
    spec_augment: bool = opt(True, "SpecAugment (frequency / time masks)", group="data")
    time_warp_factor: int = opt(80, "SpecAugment time warp (frames) for --kd none only; always 0 "
                                    "when distilling (it would misalign the teacher's labels)",
                                group="data")
    # distillation
    kd: str = opt("mvq", "none: plain transducer; mvq: predict codebook indexes; l1/l2/cosine: "
                         "regress stored float teacher embeddings", group="distillation",
                  choices=list(KD_MODES))
    codebook_loss_scale: float = opt(0.1, "loss = rnnt + scale x codebook loss (the reference's "
                                          "value)", group="distillation")
    codebook_loss: str = opt("independent", "per-codebook cross-entropy, or the joint "
                                            "(autoregressive) variant", group="distillation",
                             choices=["independent", "joint"])
    kd_loss_scale: float = opt(1.0, "scale of the l1/l2/cosine loss", group="distillation")
    kd_normalize: bool = opt(
        True, "l1/l2/cosine: standardise each dimension of the teacher embeddings with its mean "
              "and standard deviation over the training cuts (computed once at the start, saved "
              "in the model). Raw SSL embeddings can carry most of their energy in constant "
              "offsets and a few dimensions (docs/RESULTS.md)", group="distillation")
    distill_layer: int | None = opt(None, "1-based encoder layer read by the distillation head "
                                          "(default: the middle one)", group="distillation",
                                    type=none_or_int)
    quantizer_id: str | None = opt(None, "refuse to train unless every cut's codebook_indexes_info "
                                         "has this id (default: all cuts must agree with the first "
                                         "one)", group="distillation")
    num_codebooks: int | None = opt(None, "refuse to train unless the manifest has this number of "
                                          "codebooks", group="distillation")
    codebook_label_smoothing: float = opt(0.0, "label smoothing eps of the codebook "
                                               "cross-entropy: targets (1 - eps) one-hot + eps / K",
                                          group="distillation")
    codebook_smoothing_temperature: float = opt(
        0.0, "0: uniform label smoothing; T > 0: the smoothing mass goes to the codewords nearest "
             "the target's in the quantizer's codebook, weights exp(-squared distance / (T x the "
             "mean squared distance between its codewords)) (needs --quantizer)",
        group="distillation")
    codebook_head: str = opt(
        "linear", "linear: free per-codebook softmax weights (the paper's); geometry: the head "
                  "predicts the normalised teacher embedding and scores each codeword by its "
                  "squared distance to it, with the quantizer's codebooks (needs --quantizer); "
                  "residual: as geometry, but each codebook's codewords are scored against the "
                  "predicted embedding minus the frame's other target codewords (what the "
                  "quantizer's encoder minimises per codebook)",
        group="distillation", choices=list(CODEBOOK_HEADS))
    codebook_weighting: str = opt(
        "uniform", "how the codebooks' cross-entropies are weighed: uniform (the paper's), or "
                   "energy: each by the mean squared norm of its codewords (weights averaging 1), "
                   "so a codebook pulls the predicted embedding in proportion to what it adds to "
                   "the quantizer's reconstruction (--codebook-head geometry or residual)",
        group="distillation", choices=list(CODEBOOK_WEIGHTINGS))
    codebook_weighting_power: float = opt(
        1.0, "with --codebook-weighting energy: each codebook's weight is its energy raised to "
             "this power (weights averaging 1); 1: the energy itself, 2: the first, coarse "
             "codebooks weigh more",
        group="distillation")
    quantizer: str | None = opt(None, "with --kd mvq: the quantizer that wrote the indexes. With "
                                      "--kd-loss-scale > 0 the student also regresses its "
                                      "reconstruction of the indexes (quantizer.decode, standardised "
                                      "per dimension, L2, weight --kd-loss-scale): float-KD's dense "
                                      "target at MVQ's storage; --codebook-loss-scale 0 regresses it "
                                      "alone. --codebook-smoothing-temperature and --codebook-head "
                                      "geometry read its codebooks",
                                group="distillation")
    skip_bad_indexes: bool = opt(False, "skip cuts whose label file is missing or whose labels do "
                                        "not verify when read (shape, dtype, range, checksum), "
                                        "logging each, instead of stopping", group="distillation")
    skip_missing_indexes: bool = opt(False, "skip (and count) cuts without indexes instead of "
                                            "stopping with an error", group="distillation")
    # model
    model_size: str = opt("reference", "preset: tiny (2x64, tests), demo (4x144, run.sh on CPU), "
                                       "small (6x192), reference (12x512, icefall's stateless6 "
                                       "student)", group="model", choices=list(MODEL_SIZES))
    model_override: list = opt(default_factory=list, help="override a TransducerConfig field, "
                               "e.g. num_layers=8 (repeatable)", group="model", action="append",
                               metavar="KEY=VALUE")
    rnnt_loss: str = opt("pruned", "transducer loss: pruned (k2's pruned RNN-T in PyTorch, icefall's "
                                   "default: a simple trivial-joiner loss picks prune_range=5 symbols "
                                   "per frame for the full joiner, with icefall's warm-up of the two "
                                   "loss weights over rnnt_warmup_steps=2000; change those with "
                                   "--model-override) or full (the whole lattice). Pruned trains a "
                                   "better demo baseline and needs a fraction of the memory at "
                                   "LibriSpeech shapes (docs/RESULTS.md, docs/benchmarks.md)",
                         group="model", choices=["pruned", "full"])
    ctc_loss_scale: float = opt(0.0, "scale of an auxiliary CTC loss on the encoder output (0 = "
                                     "off; icefall's --use-ctc)", group="model")
    sigma_reparam: bool = opt(False, "sigma-Reparam on the encoder's linear layers (no LR warmup "
                                     "then)", group="model")
    sorta_grad: bool = opt(False, "curriculum: the first epoch goes through the cuts from the "
                                  "shortest to the longest (SortaGrad), later ones in shuffled "
                                  "duration buckets", group="optimisation")
    # optimisation
    num_epochs: int = opt(30, "last epoch to train", group="optimisation")
    start_epoch: int | None = opt(None, "resume from EXP/epoch-(E-1).pt; 1 = fresh start; default: "
                                        "resume from the newest checkpoint in --exp-dir if any",
                                  group="optimisation")
    max_steps: int | None = opt(None, "stop after this many optimiser steps (a checkpoint is "
                                      "written there)", group="optimisation")
    time_budget: float | None = opt(None, "opt-in: also stop after this many seconds of wall clock "
                                          "(not reproducible across machines)", group="optimisation")
    lr: float = opt(1e-3, "peak AdamW learning rate", group="optimisation")
    weight_decay: float = opt(1e-2, "AdamW weight decay", group="optimisation")
    warmup_steps: int = opt(2000, "linear LR warmup steps (none with --sigma-reparam)",
                            group="optimisation")
    lr_decay_steps: float = opt(10000.0, "steps after which the LR decays as step^-0.5 "
                                         "(Eden-like)", group="optimisation")
    grad_clip: float = opt(5.0, "max gradient norm", group="optimisation")
    max_nan_batches: int = opt(20, "stop after more than this many non-finite losses in a row",
                               group="optimisation")
    amp: str = opt("none", "mixed precision: bf16 (autocast; CPU or GPU) or fp16 (autocast with a "
                           "gradient scaler; GPU); the losses are computed in float32",
                   group="optimisation", choices=["none", "bf16", "fp16"])
    seed: int = opt(42, "random seed", group="optimisation")
    device: str | None = opt(None, "cpu, cuda or cuda:K (default: cuda if available)",
                             group="optimisation")
    # output
    exp_dir: str = opt("exp/student", required=True, help="checkpoints, log/log-train-*.txt and tensorboard/ go here",
                       group="output")
    save_every_n: int = opt(2000, "write EXP/checkpoint-STEP.pt every N steps (0: only epoch "
                                  "files)", group="output")
    average_period: int = opt(200, "every N optimiser steps, fold the model into a float64 running "
                                   "mean stored in the checkpoints as model_avg (icefall's "
                                   "--average-period and its default; decode it with mvqkd decode "
                                   "--use-averaged-model; it never changes the trained weights); 0: "
                                   "off (no float64 copy of the model in memory and in every "
                                   "checkpoint)", group="output")
    keep_last_k: int = opt(10, "keep the newest K checkpoint-STEP.pt files (epoch files are kept)",
                           group="output")
    log_interval: int = opt(50, "log / tensorboard every N steps", group="output")
    tensorboard: bool = opt(True, "write tensorboard events", group="output")

    @classmethod
    def from_any(cls, obj) -> "TrainConfig":
        """From a TrainConfig, an ``argparse.Namespace`` or a dict of the same fields."""
        if isinstance(obj, cls):
            return obj
        d = vars(obj) if isinstance(obj, argparse.Namespace) else dict(obj)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class FinetuneConfig:
    """Options of ``mvqkd finetune-teacher`` (and keyword arguments of :func:`finetune_teacher`)."""

    size: str = opt("small", "random-init size: small (demo: dim 192, 4 layers, narrow conv "
                             "front-end, ~2M parameters), wide (dim 1024, 2 layers, 15M parameters, "
                             "~3x slower) or make-teacher's tiny / base / large",
                    choices=list(TEACHER_SIZES))
    init_from: str | None = opt(None, "fine-tune this HF checkpoint directory (HuBERT/wav2vec2 "
                                      "layout) instead of random init")
    max_duration: float = opt(25.0, "seconds of audio per batch; longer cuts are left out, with a "
                                    "warning naming them")
    num_epochs: int = opt(1, "epochs over --train-cuts")
    max_steps: int | None = opt(None, "optimizer steps in total; the learning-rate schedule ends "
                                      "here (the reproducible way to bound training)")
    time_budget: float | None = opt(None, "opt-in: also stop after this many seconds of training "
                                          "(then dev is scored and the best model kept); not "
                                          "reproducible across machines")
    lr: float = opt(2e-3, "peak AdamW learning rate")
    warmup_steps: int = opt(60, "linear warm-up steps")
    weight_decay: float = opt(0.01, "AdamW weight decay")
    grad_clip: float = opt(5.0, "max gradient norm")
    seed: int = opt(0, "seed of init, batch order and masks")
    device: str = opt("cpu", "torch device (cpu, cuda:0, ...)")
    log_interval: int = opt(50, "log every N steps")
    sorta_grad: bool = opt(True, "first epoch in ascending duration order (SortaGrad)")
    eval_cuts: dict = opt(default_factory=dict,
                          help="extra test sets scored with the final model, e.g. test-clean=data/"
                               "fbank/librispeech_cuts_test-clean.jsonl.gz (dev is always scored)",
                          nargs="*", type=name_path, metavar="NAME=PATH")
