"""CLI: ``mvqkd finetune-teacher`` (train the demo HuBERT teacher with character CTC)."""

from __future__ import annotations

import argparse
import json
import logging

from mvqkd.cli_types import name_path

logger = logging.getLogger("mvqkd.teacher")


def _finetune(args) -> int:
    import torch

    from mvqkd.teacher.finetune import WER_FILE, finetune_teacher

    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    try:
        out = finetune_teacher(
            args.train_cuts, args.dev_cuts, args.out, size=args.size, max_duration=args.max_duration,
            time_budget=args.time_budget, num_epochs=args.num_epochs, seed=args.seed, device=args.device,
            init_from=args.init_from, lr=args.lr, warmup_steps=args.warmup_steps, max_steps=args.max_steps,
            eval_cuts=dict(args.eval_cuts or []),
        )
    except (OSError, ValueError) as e:
        logger.error("%s", e)
        return 1
    wers = json.loads((out / WER_FILE).read_text())
    summary = ", ".join(f"{k} {v['wer']:.2f}%" for k, v in wers.items() if isinstance(v, dict))
    print(f"CTC teacher -> {out} (greedy WER: {summary})")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "finetune-teacher",
        help="train a small HuBERT teacher with character CTC (the demo teacher)",
        description="Train a HubertForCTC (characters A-Z, apostrophe, | word delimiter, <pad> = CTC "
                    "blank) on lhotse cuts with audio, from random init (--size) or from an existing "
                    "HuggingFace checkpoint (--init-from). Batches are bucketed by duration; AdamW "
                    "with linear warm-up and cosine decay; greedy CTC WER on --dev-cuts after each "
                    "epoch; the best-by-dev model is saved to --out with save_pretrained (plus "
                    "vocab.json, tokenizer and preprocessor_config.json), so that it loads with "
                    "mvqkd's teacher loader like any HF checkpoint. Re-running with the same --out "
                    "resumes after the last finished epoch. Final WERs go to OUT/teacher_wer.json.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--train-cuts", required=True, help="lhotse cut manifest of the training part (with recordings)")
    p.add_argument("--dev-cuts", required=True, help="cut manifest used to pick the best epoch (dev-clean)")
    p.add_argument("--out", required=True, help="output model directory")
    p.add_argument("--size", default="small",
                   help="random-init size: small (demo: dim 192, 4 layers, narrow conv front-end, "
                        "~2M parameters), wide (dim 1024, 2 layers, 15M parameters, ~3x slower) "
                        "or make-teacher's tiny / base / large")
    p.add_argument("--init-from", default=None,
                   help="fine-tune this HF checkpoint directory (HuBERT/wav2vec2 layout) instead of random init")
    p.add_argument("--max-duration", type=float, default=25.0, help="seconds of audio per batch")
    p.add_argument("--num-epochs", type=int, default=1, help="epochs over --train-cuts")
    p.add_argument("--max-steps", type=int, default=None,
                   help="optimizer steps in total (the learning-rate schedule ends here); "
                        "deterministic way to fit a time budget")
    p.add_argument("--time-budget", type=float, default=None,
                   help="seconds of training for this run: stop after the current step, score dev, keep the best")
    p.add_argument("--lr", type=float, default=2e-3, help="peak AdamW learning rate")
    p.add_argument("--warmup-steps", type=int, default=60, help="linear warm-up steps")
    p.add_argument("--seed", type=int, default=0, help="seed of init, batch order and masks")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda:0, ...)")
    p.add_argument("--num-threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--eval-cuts", nargs="*", type=name_path, metavar="NAME=PATH",
                   help="extra test sets scored with the final model, e.g. test-clean=data/fbank/"
                        "librispeech_cuts_test-clean.jsonl.gz (dev is always scored)")
    p.set_defaults(func=_finetune)
