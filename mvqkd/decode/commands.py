"""CLI of the decode layer: ``mvqkd decode`` (icefall-style result files) and ``mvqkd summarize``.

Options come from :class:`~mvqkd.decode.config.DecodeConfig`; no torch / lhotse import here.
"""

from __future__ import annotations

import logging
from pathlib import Path

from mvqkd.decode.config import DecodeConfig
from mvqkd.options import add_options, add_parser, from_args

logger = logging.getLogger(__name__)

DECODE_EXAMPLES = """examples:
  mvqkd decode --exp-dir exp/mvq --epoch 30 --avg 5 --bpe-model data/lang_bpe_500/bpe.model \\
    --cuts test-clean=data/fbank/librispeech_cuts_test-clean.jsonl.gz \\
           test-other=data/fbank/librispeech_cuts_test-other.jsonl.gz \\
    --method greedy_search modified_beam_search"""


def _decode(args) -> int:
    from mvqkd.decode.decode import run_decode

    cfg = from_args(DecodeConfig, args)
    try:
        wers = run_decode(cfg)
    except (OSError, ValueError) as e:
        logger.error("%s", e)
        return 2
    for method, per_set in wers.items():
        print(f"WER ({method}):")
        for name, wer in per_set.items():
            print(f"  {name}\t{'untranscribed' if wer is None else f'{wer:.2f}'}")
    return 0


def _summarize(args) -> int:
    from mvqkd.decode.summary import write_summary

    stores = dict((kv.split("=", 1)[0], Path(kv.split("=", 1)[1])) for kv in args.store)
    md, out = write_summary(Path(args.exp_root), args.systems, args.method, stores, args.seeds,
                            Path(args.out) if args.out else None, args.suffix)
    print(md)
    print(f"(written to {out.with_suffix('.md')} and {out.with_suffix('.png')})")
    return 0


def register(subparsers) -> None:
    p = add_parser(subparsers, "decode",
                   help="decode test sets with a trained transducer and write WER reports",
                   description="Load a (checkpoint-averaged) student from --exp-dir, decode every "
                               "--cuts set (fbank cuts, or cuts with audio only; untranscribed "
                               "cuts get recognitions only) with every --method and write "
                               "icefall's recogs-/errs-/wer-summary-<set>-<suffix>.txt and a "
                               "log-decode-<suffix>-<date>.txt to --out-dir; the suffix names the "
                               "checkpoints and the search settings, so decodes never overwrite "
                               "each other.",
                   epilog=DECODE_EXAMPLES)
    add_options(p, DecodeConfig)
    p.set_defaults(func=_decode)

    p = add_parser(subparsers, "summarize", help="the WER table of a demo run (markdown + PNG)",
                   description="Reads EXP_ROOT/[seed<K>/]<system>/<method>/wer-summary-<set>.txt, the "
                               "tensorboard curves, teacher/teacher_wer.json and stage_times.tsv; "
                               "prints a markdown table (mean over seeds, each seed in brackets, "
                               "ratios between systems, label storage) and writes OUT.md / OUT.png.",
                   epilog="example:\n  mvqkd summarize --exp-root exp --seeds 1 2 --method "
                          "modified_beam_search --store mvq=data/vq/train-clean-100/shards")
    p.add_argument("--exp-root", default="exp", help="the run's experiment root")
    p.add_argument("--systems", nargs="+", default=["baseline", "mvq", "l2"], help="systems (sub-folders)")
    p.add_argument("--seeds", nargs="+", default=None,
                   help="read EXP_ROOT/seed<K>/<system> for each K and average the WERs "
                        "(default: EXP_ROOT/<system>, one run)")
    p.add_argument("--method", default="greedy_search", help="decoding method folder to read")
    p.add_argument("--suffix", default=None,
                   help="the decode to read, e.g. epoch-5-avg-1-modified_beam_search-beam-size-4 "
                        "(needed when a folder holds several)")
    p.add_argument("--store", action="append", default=[], metavar="NAME=DIR",
                   help="a teacher-label store to measure (HDF5 shards under DIR)")
    p.add_argument("--out", default=None, help="output prefix (default: EXP_ROOT/results)")
    p.set_defaults(func=_summarize)
