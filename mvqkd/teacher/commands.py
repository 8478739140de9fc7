"""CLI for the teacher layer: make-teacher, check-teacher."""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger("mvqkd.teacher")


def _make(args) -> int:
    from mvqkd.teacher.make import make_teacher

    out = make_teacher(args.out, size=args.size, seed=args.seed)
    print(f"Random-init {args.size} teacher -> {out}")
    return 0


def _check(args) -> int:
    import numpy as np

    from mvqkd.teacher.model import load_teacher

    try:
        teacher = load_teacher(args.teacher, device=args.device, dtype=args.dtype)
        teacher.check_layer(args.layer)
    except (OSError, ValueError) as e:
        logger.error("%s", e)
        return 1
    wav = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    emb = teacher.extract([wav], args.layer)[0]
    if not np.isfinite(emb.numpy()).all():
        logger.error("teacher %s gives NaN/Inf at layer %d on 1 s of noise", args.teacher, args.layer)
        return 1
    print(f"teacher {teacher.name}: {teacher.info.model_type}, {teacher.num_layers} layers, dim {teacher.dim}, "
          f"{'group' if teacher.info.group_norm else 'layer'}-norm front-end, "
          f"do_normalize={teacher.info.do_normalize}; layer {args.layer}: 1 s -> {tuple(emb.shape)}")
    return 0


def add_device_options(p) -> None:
    p.add_argument("--device", default="auto",
                   help="torch device: auto (cuda when torch sees a GPU, else cpu), cpu, cuda:0 ...")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"],
                   help="teacher precision: auto = float32 on CPU, bfloat16 (or float16) on GPU")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "make-teacher",
        help="write a random-init HuBERT teacher (for tests and benchmarks)",
        description="Build a random-init HubertModel with the standard 50 Hz conv front-end "
                    "and save it with save_pretrained plus a Wav2Vec2FeatureExtractor config.",
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--size", default="tiny", choices=["tiny", "base", "large"],
                   help="tiny: dim 64, 3 layers, layer-norm (CPU tests); base: hubert-base shapes "
                        "(group-norm); large: hubert-large shapes (default: tiny)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights (default: 0)")
    p.set_defaults(func=_make)

    p = subparsers.add_parser(
        "check-teacher",
        help="load a teacher directory and run one second of audio through a layer",
        description="Loads a HuBERT / WavLM / wav2vec2 checkpoint (also *ForCTC) from a local "
                    "directory, prints its shape and checks the layer's output is finite.",
    )
    p.add_argument("--teacher", required=True, help="checkpoint directory (save_pretrained layout)")
    p.add_argument("--layer", type=int, required=True,
                   help="1-based transformer layer; 0 = input to the first transformer layer")
    add_device_options(p)
    p.set_defaults(func=_check)
