"""``mvqkd decode``: decode test sets with a trained student and score them (icefall-style files).

No torch / lhotse import at module level: the handler imports what it needs.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mvqkd.cli_types import name_path

logger = logging.getLogger(__name__)

METHODS = ["greedy_search", "modified_beam_search"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "decode",
        help="decode test sets with a trained transducer and write WER reports",
        description=(
            "Load a (checkpoint-averaged) student from --exp-dir, decode every --cuts set and "
            "write recogs-<set>.txt, errs-<set>.txt and wer-summary-<set>.txt to --out-dir."
        ),
    )
    p.add_argument("--exp-dir", required=True, type=Path,
                   help="training directory holding epoch-E.pt / checkpoint-STEP.pt")
    sel = p.add_mutually_exclusive_group()
    sel.add_argument("--epoch", type=int, default=None,
                     help="decode with epoch files epoch-(E-avg+1).pt ... epoch-E.pt averaged")
    sel.add_argument("--iter", dest="iteration", type=int, default=None,
                     help="decode with the --avg newest checkpoint-STEP.pt with STEP <= ITER averaged")
    p.add_argument("--avg", type=int, default=1, help="number of checkpoints to average (default: 1)")
    p.add_argument("--bpe-model", required=True, type=Path,
                   help="sentencepiece model used in training (DATA/lang_bpe_V/bpe.model)")
    p.add_argument("--cuts", required=True, nargs="+", type=name_path, metavar="NAME=PATH",
                   help="test sets: a name (used in output file names) and a feature-cut manifest, "
                        "e.g. test-clean=data/fbank/librispeech_cuts_test-clean.jsonl.gz")
    p.add_argument("--method", choices=METHODS, default="greedy_search",
                   help="greedy_search (1 symbol per frame) or modified_beam_search (icefall's)")
    p.add_argument("--beam-size", type=int, default=4, help="beam of modified_beam_search (default: 4)")
    p.add_argument("--max-duration", type=float, default=300.0,
                   help="seconds of audio per decoding batch (default: 300)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0 (default: cpu)")
    p.add_argument("--out-dir", type=Path, default=None,
                   help="where the result files go (default: EXP_DIR/METHOD)")
    p.set_defaults(func=run_decode)


def _setting(args) -> str:
    key = args.method if args.method == "greedy_search" else f"{args.method}_beam_size_{args.beam_size}"
    which = f"iter-{args.iteration}" if args.iteration is not None else (
        f"epoch-{args.epoch}" if args.epoch is not None else "last")
    return f"{key}_{which}-avg-{args.avg}"


def run_decode(args) -> int:
    names = [n for n, _ in args.cuts]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        logger.error("--cuts: set name(s) given twice: %s", ", ".join(dup))
        return 2
    for name, path in args.cuts:
        if not Path(path).is_file():
            logger.error("--cuts %s: manifest not found: %s", name, path)
            return 2
    if not args.bpe_model.is_file():
        logger.error("--bpe-model not found: %s", args.bpe_model)
        return 2
    from mvqkd.data.tokenizer import load_bpe
    from mvqkd.decode.decode import decode_and_score
    from mvqkd.student.checkpoint import load_model_for_decoding

    model, _ = load_model_for_decoding(args.exp_dir, epoch=args.epoch, avg=args.avg,
                                       iteration=args.iteration, device=args.device)
    sp = load_bpe(args.bpe_model)
    out_dir = args.out_dir or args.exp_dir / args.method
    setting = _setting(args)
    wers = decode_and_score(model, dict(args.cuts), sp, out_dir, method=args.method,
                            beam_size=args.beam_size, max_duration=args.max_duration,
                            device=args.device, setting=setting)
    print(f"WER ({setting}), files in {out_dir}:")
    for name, wer in wers.items():
        print(f"  {name}\t{wer:.2f}")
    return 0
