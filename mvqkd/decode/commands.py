"""``mvqkd decode``: decode test sets with a trained student and score them (icefall-style files).

No torch / lhotse import at module level: the handler imports what it needs.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mvqkd.cli_types import name_path

logger = logging.getLogger(__name__)

METHODS = ["greedy_search", "modified_beam_search", "fast_beam_search"]


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
                   help="greedy_search (1 symbol per frame), modified_beam_search (icefall's, "
                        "--beam-size) or fast_beam_search (icefall's with the trivial graph, one "
                        "best, in PyTorch: --beam, --max-contexts, --max-states)")
    p.add_argument("--beam-size", type=int, default=4, help="beam of modified_beam_search (default: 4)")
    p.add_argument("--beam", type=float, default=4.0,
                   help="fast_beam_search: log-prob beam; states further below the best "
                        "are pruned after each frame (default: 4.0; icefall's recipes decode "
                        "with --beam 4 --max-contexts 4 --max-states 8 without an LM graph)")
    p.add_argument("--max-contexts", type=int, default=4,
                   help="fast_beam_search: decoder contexts kept per frame (default: 4)")
    p.add_argument("--max-states", type=int, default=8,
                   help="fast_beam_search: states kept per frame; with the trivial graph a state "
                        "is a context, so min(--max-contexts, --max-states) applies (default: 8)")
    p.add_argument("--max-duration", type=float, default=300.0,
                   help="seconds of audio per decoding batch (default: 300)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0 (default: cpu)")
    p.add_argument("--out-dir", type=Path, default=None,
                   help="where the result files go (default: EXP_DIR/METHOD)")
    p.set_defaults(func=run_decode)


def _search_opts(args) -> dict:
    return dict(beam=args.beam, max_contexts=args.max_contexts, max_states=args.max_states)


def _setting(args) -> str:
    from mvqkd.decode.decode import setting_name

    key = setting_name(args.method, args.beam_size, **_search_opts(args))
    which = f"iter-{args.iteration}" if args.iteration is not None else (
        f"epoch-{args.epoch}" if args.epoch is not None else "last")
    return f"{key}_{which}-avg-{args.avg}"


def run_decode(args) -> int:
    names = [n for n, _ in args.cuts]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        logger.error("--cuts: set name(s) given twice: %s", ", ".join(dup))
        return 2
    if not args.beam > 0 or args.max_contexts < 1 or args.max_states < 1:
        logger.error("--beam must be > 0 and --max-contexts / --max-states >= 1, got %s, %s, %s",
                     args.beam, args.max_contexts, args.max_states)
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
                            device=args.device, setting=setting, **_search_opts(args))
    print(f"WER ({setting}), files in {out_dir}:")
    for name, wer in wers.items():
        print(f"  {name}\t{wer:.2f}")
    return 0
