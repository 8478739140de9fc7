"""CLI for the teacher layer: make-teacher, check-teacher."""

from __future__ import annotations

import logging

from mvqkd.options import add_parser, add_teacher_device_options

logger = logging.getLogger("mvqkd.teacher")


def _make(args) -> int:
    from mvqkd.teacher.make import make_teacher

    out = make_teacher(args.out, size=args.size, seed=args.seed)
    print(f"Random-init {args.size} teacher -> {out}")
    return 0


def _check(args) -> int:
    from mvqkd.teacher.model import check_teacher

    try:
        print(check_teacher(args.teacher, args.layer, device=args.device, dtype=args.dtype))
    except (OSError, ValueError) as e:
        logger.error("%s", e)
        return 1
    return 0


def register(subparsers) -> None:
    p = add_parser(
        subparsers, "make-teacher",
        help="write a random-init HuBERT teacher (for tests and benchmarks)",
        description="Build a random-init HubertModel with the standard 50 Hz conv front-end "
                    "and save it with save_pretrained plus a Wav2Vec2FeatureExtractor config. "
                    "Its embeddings carry no information about speech: use it to test plumbing, "
                    "never to distil.",
        epilog="example:\n  mvqkd make-teacher --out exp/tiny-teacher --size tiny")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--size", default="tiny", choices=["tiny", "base", "large"],
                   help="tiny: dim 64, 3 layers, layer-norm (CPU tests); base: hubert-base shapes "
                        "(group-norm); large: hubert-large shapes")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    p.set_defaults(func=_make)

    p = add_parser(
        subparsers, "check-teacher",
        help="load a teacher directory and run one second of audio through a layer",
        description="Loads a HuBERT / WavLM / wav2vec2 checkpoint (also *ForCTC) from a local "
                    "directory, prints its shape and checks the layer's output is finite.",
        epilog="example:\n  mvqkd check-teacher --teacher /models/hubert-large-ll60k --layer 18")
    p.add_argument("--teacher", required=True, help="checkpoint directory (save_pretrained layout)")
    p.add_argument("--layer", type=int, required=True,
                   help="1-based transformer layer; 0 = input to the first transformer layer")
    add_teacher_device_options(p)
    p.set_defaults(func=_check)
