"""``mvqkd train`` and ``mvqkd average-checkpoints`` (thin wrappers over the library).

No torch / lhotse import at module level: handlers import what they need.
"""

from __future__ import annotations

import argparse
import dataclasses


def _none_or_int(value: str):
    return None if value.lower() == "none" else int(value)


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The options of :class:`mvqkd.training.config.TrainConfig`; defaults come from it."""
    from mvqkd.student.config import PRESETS
    from mvqkd.training.config import TrainConfig

    g = p.add_argument_group("data")
    g.add_argument("--train-cuts", required=True,
                   help="lhotse CutSet (jsonl.gz) with fbank features; with --kd mvq its cuts "
                        "must carry codebook_indexes (the extraction stage writes them)")
    g.add_argument("--valid-cuts",
                   help="CutSet for the validation loss computed at each epoch end")
    g.add_argument("--bpe-model", required=True, help="sentencepiece model (DATA/lang_bpe_V/bpe.model)")
    g.add_argument("--max-duration", type=float,
                   help="seconds of audio per batch (lhotse DynamicBucketingSampler)")
    g.add_argument("--num-buckets", type=int, help="duration buckets of the sampler")
    g.add_argument("--num-workers", type=int, help="DataLoader worker processes")
    g.add_argument("--on-the-fly-feats", action="store_true",
                   help="compute 80-bin fbank from the audio instead of reading stored features")
    g.add_argument("--no-spec-augment", dest="spec_augment", action="store_false",
                   help="disable SpecAugment (frequency / time masks)")
    g.add_argument("--time-warp-factor", type=int,
                   help="SpecAugment time warp (frames) for --kd none only; always 0 when distilling")
    g = p.add_argument_group("distillation")
    g.add_argument("--kd", choices=["none", "mvq", "l1", "l2", "cosine"],
                   help="none: plain transducer; mvq: predict codebook indexes; l1/l2/cosine: "
                        "regress stored float teacher embeddings")
    g.add_argument("--codebook-loss-scale", type=float,
                   help="loss = rnnt + scale x codebook loss (reference: 0.1)")
    g.add_argument("--codebook-loss", choices=["independent", "joint"],
                   help="per-codebook cross-entropy, or the joint (autoregressive) variant")
    g.add_argument("--kd-loss-scale", type=float, help="scale of the l1/l2/cosine loss")
    g.add_argument("--kd-normalize", action="store_true",
                   help="l1/l2/cosine: standardise each dimension of the teacher embeddings with "
                        "its mean and standard deviation over the training cuts (computed once "
                        "at the start, saved in the model). Recommended: raw SSL embeddings can "
                        "carry most of their energy in constant offsets and a few dimensions")
    g.add_argument("--distill-layer", type=_none_or_int,
                   help="1-based encoder layer read by the distillation head (default: middle)")
    g.add_argument("--quantizer-id",
                   help="refuse to train unless every cut's codebook_indexes_info has this id "
                        "(default: all cuts must agree with the first one)")
    g.add_argument("--num-codebooks", type=int,
                   help="refuse to train unless the manifest has this number of codebooks")
    g.add_argument("--skip-missing-indexes", action="store_true",
                   help="skip (and count) cuts without indexes instead of stopping with an error")
    g = p.add_argument_group("model")
    g.add_argument("--ctc-loss-scale", type=float,
                   help="scale of an auxiliary CTC loss on the encoder output (0 = off; "
                        "icefall's --use-ctc); helps a student trained from scratch on little "
                        "data leave the all-blank phase sooner")
    g.add_argument("--model-size", choices=list(PRESETS),
                   help="preset: tiny (2x64, tests), demo (4x144, run.sh on CPU), small (6x192), "
                        "reference (12x512)")
    g.add_argument("--model-override", action="append", metavar="KEY=VALUE",
                   help="override a TransducerConfig field, e.g. num_layers=8 (repeatable)")
    g.add_argument("--sigma-reparam", action="store_true",
                   help="sigma-Reparam on the encoder's linear layers (no LR warmup then)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--num-epochs", type=int, help="last epoch to train")
    g.add_argument("--start-epoch", type=int,
                   help="resume from EXP/epoch-(E-1).pt; 1 = fresh start; default: resume "
                        "from the newest checkpoint in --exp-dir if any")
    g.add_argument("--max-steps", type=int, help="stop after this many optimiser steps (a checkpoint is written there)")
    g.add_argument("--lr", type=float, help="peak AdamW learning rate")
    g.add_argument("--weight-decay", type=float, help="AdamW weight decay")
    g.add_argument("--warmup-steps", type=int,
                   help="linear LR warmup steps (ignored with --sigma-reparam)")
    g.add_argument("--lr-decay-steps", type=float,
                   help="steps after which the LR decays as step^-0.5 (Eden-like)")
    g.add_argument("--grad-clip", type=float, help="max gradient norm")
    g.add_argument("--max-nan-batches", type=int,
                   help="stop after more than this many non-finite losses in a row")
    g.add_argument("--seed", type=int, help="random seed")
    g.add_argument("--device", help="cpu, cuda or cuda:K (default: cuda if available)")
    g = p.add_argument_group("output")
    g.add_argument("--exp-dir", required=True,
                   help="checkpoints, log/log-train-*.txt and tensorboard/ go here")
    g.add_argument("--save-every-n", type=int,
                   help="write EXP/checkpoint-STEP.pt every N steps (0: only epoch files)")
    g.add_argument("--keep-last-k", type=int,
                   help="keep the newest K checkpoint-STEP.pt files (epoch files are kept)")
    g.add_argument("--log-interval", type=int, help="log / tensorboard every N steps")
    g.add_argument("--no-tensorboard", dest="tensorboard", action="store_false",
                   help="do not write tensorboard events")
    defaults = dataclasses.asdict(TrainConfig())
    for key in ("train_cuts", "bpe_model", "exp_dir"):  # required: no default
        defaults.pop(key)
    p.set_defaults(**defaults)


def _train(args) -> int:
    from mvqkd.train import train

    train(args)
    return 0


def _average(args) -> int:
    import torch

    from mvqkd.student.checkpoint import (
        average_checkpoints, load_checkpoint_file, select_checkpoints,
    )

    files = select_checkpoints(args.exp_dir, epoch=args.epoch, avg=args.avg,
                               iteration=args.iteration)
    last = load_checkpoint_file(files[-1])
    out = {"model": average_checkpoints(files), "config": last["config"],
           "epoch": last.get("epoch"), "step": last.get("step"),
           "averaged": [str(p) for p in files]}
    torch.save(out, args.out)
    print(f"averaged {len(files)} checkpoint(s) -> {args.out}")
    return 0


def register(subparsers):
    p = subparsers.add_parser(
        "train", help="train the transducer student (baseline or MVQ-KD)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Train a transducer student, with codebook-index (MVQ) or float "
                    "embedding distillation, on one process or under torchrun (DDP).",
    )
    add_train_arguments(p)
    p.set_defaults(func=_train)

    p = subparsers.add_parser(
        "average-checkpoints", help="average student checkpoints into one model file",
        description="Average the model weights of epoch-E.pt files (or checkpoint-STEP.pt "
                    "with --iteration) and save {'model', 'config', ...} to --out.",
    )
    p.add_argument("--exp-dir", required=True, help="the training's experiment directory")
    p.add_argument("--epoch", type=int, default=None,
                   help="last epoch to average (default: the newest epoch file)")
    p.add_argument("--iteration", type=int, default=None,
                   help="average checkpoint-STEP.pt files with STEP <= this instead")
    p.add_argument("--avg", type=int, default=1, help="number of checkpoints to average")
    p.add_argument("--out", required=True, help="output file")
    p.set_defaults(func=_average)
