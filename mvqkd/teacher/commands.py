"""CLI for the teacher layer: make-teacher, check-teacher, convert-fairseq."""

from __future__ import annotations

import logging

from mvqkd.options import add_parser, add_teacher_device_options, user_errors

logger = logging.getLogger("mvqkd.teacher")


def _make(args) -> int:
    from mvqkd.teacher.make import make_teacher

    out = make_teacher(args.out, size=args.size, seed=args.seed)
    print(f"Random-init {args.size} teacher -> {out}")
    return 0


@user_errors(1)
def _check(args) -> int:
    from mvqkd.teacher.model import check_teacher

    print(check_teacher(args.teacher, args.layer, device=args.device, dtype=args.dtype))
    return 0


@user_errors(1)
def _convert(args) -> int:
    from mvqkd.teacher.fairseq import convert_fairseq

    out = convert_fairseq(args.checkpoint, args.out)
    print(f"transformers teacher -> {out} (use it as --teacher {out})")
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

    p = add_parser(
        subparsers, "convert-fairseq",
        help="convert a fairseq HuBERT / wav2vec 2.0 checkpoint to a transformers teacher folder",
        description="Reads a fairseq checkpoint (pre-trained or CTC fine-tuned; base, large, xlarge) "
                    "without fairseq and without executing anything in it (a restricted reader: "
                    "tensors and plain config values only), maps its weights to transformers' "
                    "HubertModel / Wav2Vec2Model (*ForCTC with the fine-tuned CTC head) and writes "
                    "save_pretrained files plus preprocessor_config.json (do_normalize = fairseq's "
                    "task.normalize). Layer L of the result is fairseq's / icefall's layer L "
                    "(--embedding-layer). Every weight must find its place: leftovers are an error; "
                    "pre-training-only weights (final_proj, label_embs_concat, quantizer) are dropped "
                    "and listed in OUT/fairseq_source.json.",
        epilog="example (icefall's MVQ teacher):\n  mvqkd convert-fairseq "
               "downloads/hubert_xtralarge_ll60k_finetune_ls960.pt --out exp/hubert-xlarge\n"
               "  mvqkd check-teacher --teacher exp/hubert-xlarge --layer 36")
    p.add_argument("checkpoint", help="fairseq .pt file")
    p.add_argument("--out", required=True, help="output folder (transformers save_pretrained layout)")
    p.set_defaults(func=_convert)
