"""CLI of the training layer: train, finetune-teacher, average-checkpoints, upgrade-checkpoint.

Handlers parse, call one library function and print; options come from the dataclasses
:class:`~mvqkd.training.config.TrainConfig` and
:class:`~mvqkd.training.finetune.FinetuneConfig` (no torch / lhotse import here).
"""

from __future__ import annotations

import logging

from mvqkd.options import (add_checkpoint_selection_options, add_options, add_parser, from_args,
                           user_errors)
from mvqkd.training.config import FinetuneConfig, TrainConfig

logger = logging.getLogger("mvqkd.train")

TRAIN_EXAMPLES = """examples:
  # MVQ-KD student on the indexes manifest written by `mvqkd extract`
  mvqkd train --train-cuts data/vq/librispeech_cuts_train-clean-100.jsonl.gz \\
    --bpe-model data/lang_bpe_500/bpe.model --exp-dir exp/mvq --kd mvq --num-epochs 30
  # the baseline on plain fbank cuts, 4 GPUs
  torchrun --nproc_per_node 4 -m mvqkd.cli train --kd none \\
    --train-cuts data/fbank/librispeech_cuts_train-clean-100.jsonl.gz \\
    --bpe-model data/lang_bpe_500/bpe.model --exp-dir exp/baseline

Re-running the same command resumes from the newest checkpoint in --exp-dir."""

FINETUNE_EXAMPLES = """example:
  mvqkd finetune-teacher --train-cuts data/fbank/librispeech_cuts_train-clean-360.jsonl.gz \\
    --dev-cuts data/fbank/librispeech_cuts_dev-clean.jsonl.gz --out exp/teacher \\
    --size small --max-steps 1800 --num-epochs 100"""


@user_errors(1)
def _train(args) -> int:
    from mvqkd.training.student import train

    train(from_args(TrainConfig, args))
    return 0


@user_errors(1)
def _finetune(args) -> int:
    import torch

    from mvqkd.teacher.ctc import WER_FILE
    from mvqkd.training.finetune import finetune_teacher

    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    cfg = from_args(FinetuneConfig, args, eval_cuts=dict(args.eval_cuts or []))
    out = finetune_teacher(args.train_cuts, args.dev_cuts, args.out, **vars(cfg))
    print(f"CTC teacher -> {out} (greedy WER: {_wer_summary(out / WER_FILE)})")
    return 0


def _wer_summary(path) -> str:
    import json

    wers = json.loads(path.read_text())
    return ", ".join(f"{k} {v['wer']:.2f}%" for k, v in wers.items() if isinstance(v, dict))


@user_errors(1)
def _average(args) -> int:
    from mvqkd.training.checkpoint import save_averaged

    files = save_averaged(args.exp_dir, args.out, epoch=args.epoch, avg=args.avg,
                          iteration=args.iteration, use_averaged_model=args.use_averaged_model)
    what = (f"the averaged model between {files[0] or 'the first step'} and {files[1]}"
            if args.use_averaged_model else f"{len(files)} checkpoint(s)")
    print(f"{what} -> {args.out}")
    return 0


def _upgrade(args) -> int:
    from mvqkd.student.checkpoint import CheckpointError
    from mvqkd.training.checkpoint import upgrade_checkpoint

    try:
        for path in args.checkpoints:
            print(f"upgraded {path} -> {upgrade_checkpoint(path, args.out)}")
    except (OSError, CheckpointError) as e:
        logger.error("%s", e)
        return 1
    return 0


def register(subparsers) -> None:
    p = add_parser(subparsers, "train", help="train the transducer student (baseline or MVQ-KD)",
                   description="Train a transducer student, with codebook-index (MVQ) or float "
                               "embedding distillation, on one process or under torchrun (DDP).",
                   epilog=TRAIN_EXAMPLES)
    add_options(p, TrainConfig)
    p.set_defaults(func=_train)

    p = add_parser(
        subparsers, "finetune-teacher",
        help="train a small HuBERT teacher with character CTC (the demo teacher)",
        description="Train a HubertForCTC (characters A-Z, apostrophe, | word delimiter, <pad> = CTC "
                    "blank) on lhotse cuts with audio, from random init (--size) or from an existing "
                    "HuggingFace checkpoint (--init-from). Batches are bucketed by duration; AdamW "
                    "with linear warm-up and cosine decay; greedy CTC WER on --dev-cuts after each "
                    "epoch; the best-by-dev model is saved to --out with save_pretrained (plus "
                    "vocab.json, tokenizer and preprocessor_config.json), so that it loads with "
                    "mvqkd's teacher loader like any HF checkpoint. Re-running with the same --out "
                    "resumes after the last finished epoch. Final WERs go to OUT/teacher_wer.json.",
        epilog=FINETUNE_EXAMPLES)
    p.add_argument("--train-cuts", required=True, help="lhotse cut manifest of the training part (with recordings)")
    p.add_argument("--dev-cuts", required=True, help="cut manifest used to pick the best epoch (dev-clean)")
    p.add_argument("--out", required=True, help="output model directory")
    p.add_argument("--num-threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    add_options(p, FinetuneConfig)
    p.set_defaults(func=_finetune)

    p = add_parser(subparsers, "average-checkpoints", help="average student checkpoints into one model file",
                   description="Average the model weights of epoch-E.pt files (or checkpoint-STEP.pt "
                               "with --iter), or with --use-averaged-model write icefall's "
                               "averaged model of the same span (what mvqkd decode "
                               "--use-averaged-model decodes), into one file that mvqkd decode "
                               "--checkpoint, export-onnx and transcribe read.",
                   epilog="examples:\n  mvqkd average-checkpoints --exp-dir exp/mvq --epoch 30 --avg 5 "
                          "--out exp/mvq/epoch-30-avg-5.pt\n  mvqkd average-checkpoints --exp-dir "
                          "exp/mvq --epoch 30 --avg 5 --use-averaged-model --out "
                          "exp/mvq/epoch-30-avg-5-use-averaged-model.pt")
    p.add_argument("--exp-dir", required=True, help="the training's experiment directory")
    add_checkpoint_selection_options(p, "--exp-dir")
    p.add_argument("--out", required=True, help="output file")
    p.set_defaults(func=_average)

    p = add_parser(subparsers, "upgrade-checkpoint",
                   help="convert checkpoints of mvqkd < 0.2 to the safe (weights-only) format",
                   description="Older checkpoints stored numpy RNG states as pickled objects, which "
                               "mvqkd now refuses to unpickle. This reads such a file allowing only "
                               "numpy's array constructors (a file with anything else is refused) "
                               "and rewrites it with tensors only.",
                   epilog="example:\n  mvqkd upgrade-checkpoint exp/mvq/epoch-*.pt")
    p.add_argument("checkpoints", nargs="+", help="checkpoint files (rewritten in place)")
    p.add_argument("--out", default=None, help="write to this file instead (one input only)")
    p.set_defaults(func=_upgrade)
