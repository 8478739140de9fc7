"""CLI of the decode layer: ``mvqkd decode`` (icefall-style result files) and ``mvqkd summarize``.

Options come from :class:`~mvqkd.decode.config.DecodeConfig`; no torch / lhotse import here.
"""

from __future__ import annotations

import logging
from pathlib import Path

from mvqkd.decode.config import BEAM_SIZE, MAX_SEGMENT_SECONDS, DecodeConfig
from mvqkd.options import (add_checkpoint_selection_options, add_options, add_parser, from_args,
                           user_errors)

logger = logging.getLogger(__name__)

DECODE_EXAMPLES = """examples:
  mvqkd decode --exp-dir exp/mvq --epoch 30 --avg 5 --bpe-model data/lang_bpe_500/bpe.model \\
    --cuts test-clean=data/fbank/librispeech_cuts_test-clean.jsonl.gz \\
           test-other=data/fbank/librispeech_cuts_test-other.jsonl.gz \\
    --method greedy_search modified_beam_search"""


@user_errors(2)
def _decode(args) -> int:
    from mvqkd.decode.decode import run_decode

    cfg = from_args(DecodeConfig, args)
    wers = run_decode(cfg)
    for method, per_set in wers.items():
        print(f"WER ({method}):")
        for name, wer in per_set.items():
            print(f"  {name}\t{'untranscribed' if wer is None else f'{wer:.2f}'}")
    return 0


@user_errors(2, ImportError)
def _export(args) -> int:
    from mvqkd.decode.export import export_onnx

    if not (args.checkpoint or args.exp_dir):
        raise ValueError("give --exp-dir (a training folder) or --checkpoint FILE")
    model, sp = _selected(args, args.checkpoint or args.exp_dir, "cpu", args.bpe_model)
    files = export_onnx(model, sp, args.out_dir, int8=args.int8)
    for name, path in files.items():
        print(f"{name}\t{path}\t{path.stat().st_size:,} bytes")
    return 0


def _selected(args, path, device, bpe_model=None):
    """(model, tokenizer) of ``path`` (a checkpoint file, an experiment folder or, for
    transcribe, an ONNX folder), with the checkpoints
    :func:`~mvqkd.options.add_checkpoint_selection_options` chose."""
    from mvqkd.decode.transcribe import load_recogniser

    selecting = (args.epoch is not None or args.iteration is not None or args.avg != 1
                 or args.use_averaged_model)
    if not selecting:
        return load_recogniser(path, bpe_model, device)
    if path and not Path(path).exists():
        raise FileNotFoundError(f"{path}: no such experiment folder (relative to {Path.cwd()})")
    if not path or not Path(path).is_dir():
        raise ValueError("--epoch / --iter / --avg / --use-averaged-model select checkpoints in an experiment "
                         f"folder, not in {path or 'nothing'} (a checkpoint file is used as it is)")
    return load_recogniser(path, bpe_model, device, epoch=args.epoch, avg=args.avg,
                           iteration=args.iteration, use_averaged_model=args.use_averaged_model)


@user_errors(2, ImportError)
def _transcribe(args) -> int:
    from mvqkd.decode.segments import check_max_segment_seconds
    from mvqkd.decode.transcribe import transcribe

    check_max_segment_seconds(args.max_segment_seconds)
    model, sp = _selected(args, args.model, args.device, args.bpe_model)
    opts = {"beam_size": args.beam_size} if args.method == "modified_beam_search" else {}
    for f, text, *times in transcribe(model, sp, args.files, args.method, args.device, args.timestamps,
                                      args.max_segment_seconds, **opts):
        stamps = "\t" + " ".join(f"{piece}@{sec:.2f}" for piece, sec in times[0]) if times else ""
        print(f"{f}\t{text}{stamps}", flush=True)
    return 0


def _summarize(args) -> int:
    from mvqkd.decode.summary import write_summary

    stores = dict((kv.split("=", 1)[0], Path(kv.split("=", 1)[1])) for kv in args.store)
    md, out = write_summary(Path(args.exp_root), args.systems, args.method, stores, args.seeds,
                            Path(args.out) if args.out else None, args.suffix, args.checkpoints,
                            args.use_averaged_model)
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

    p = add_parser(subparsers, "export-onnx", help="export a student for sherpa-onnx (ONNX files + tokens.txt)",
                   description="Write encoder.onnx, decoder.onnx, joiner.onnx and tokens.txt with the "
                               "inputs, outputs and metadata of icefall's export-onnx.py, which "
                               "sherpa-onnx's OfflineRecognizer.from_transducer loads; --int8 adds "
                               "dynamically quantized copies. The distillation heads are left out.",
                   epilog="examples:\n  mvqkd export-onnx --exp-dir exp/mvq --epoch 30 --avg 5 --out-dir "
                          "exp/mvq/onnx --int8\n  mvqkd export-onnx --exp-dir exp/mvq --epoch 30 --avg 5 "
                          "--use-averaged-model --out-dir exp/mvq/onnx\n  mvqkd export-onnx "
                          "--checkpoint exp/mvq/epoch-30.pt --out-dir exp/mvq/onnx")
    p.add_argument("--exp-dir", default=None, help="training folder (its newest epoch, or --epoch / --iter)")
    p.add_argument("--checkpoint", default=None, help="a single checkpoint file instead")
    add_checkpoint_selection_options(p, "--exp-dir")
    p.add_argument("--bpe-model", default=None, help="tokenizer (default: the one in the checkpoint)")
    p.add_argument("--out-dir", required=True, help="output folder")
    p.add_argument("--int8", action="store_true", help="also write int8 (dynamic quantization) models")
    p.set_defaults(func=_export)

    p = add_parser(subparsers, "transcribe", help="transcribe audio files with a trained student",
                   description="Print FILE<TAB>TEXT for every audio file (any format, rate and number of "
                               "channels), with a checkpoint file, an experiment folder (newest epoch) "
                               "or an ONNX export folder; --timestamps adds a third column, "
                               "PIECE@SECONDS per token (the start of the 40 ms encoder frame it was "
                               "emitted at, as sherpa-onnx reports it).",
                   epilog="examples:\n  mvqkd transcribe --model exp/mvq/epoch-30.pt a.flac b.wav\n"
                          "  mvqkd transcribe --model exp/mvq --epoch 30 --avg 5 --use-averaged-model a.flac\n"
                          "  mvqkd transcribe --model exp/mvq/onnx --timestamps a.flac\n"
                          "  mvqkd transcribe --model exp/mvq/onnx --method modified_beam_search a.mp3\n"
                          "  mvqkd transcribe --model exp/mvq/onnx --timestamps --max-segment-seconds 20 "
                          "hour-long-meeting.opus")
    p.add_argument("files", nargs="+", help="audio files")
    p.add_argument("--model", required=True, help="checkpoint file, experiment folder or ONNX folder")
    add_checkpoint_selection_options(p, "an experiment folder")
    p.add_argument("--bpe-model", default=None, help="tokenizer (default: the checkpoint's, or tokens.txt)")
    p.add_argument("--method", default="greedy_search", choices=["greedy_search", "modified_beam_search",
                                                                 "fast_beam_search"], help="search")
    p.add_argument("--beam-size", type=int, default=BEAM_SIZE, help="modified_beam_search's beam")
    p.add_argument("--device", default="cpu", help="torch device for checkpoints")
    p.add_argument("--timestamps", action="store_true", help="token start times (greedy_search only)")
    p.add_argument("--max-segment-seconds", type=float, default=MAX_SEGMENT_SECONDS, metavar="S",
                   help="a file up to S seconds is recognised whole; a longer one is cut at every pause "
                        "(>= 0.2 s quiet, 50 ms before its end) and, where a stretch is still longer, at its "
                        "quietest moments, and recognised segment by segment, in bounded memory; 0: the "
                        "whole file at once (memory grows with the square of its length)")
    p.set_defaults(func=_transcribe)

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
    p.add_argument("--checkpoints", default=None, metavar="LABEL",
                   help="read the decode of these checkpoints, the suffix's leading epoch-E-avg-A or "
                        "iter-N-avg-A (e.g. epoch-5-avg-2), whatever its search settings")
    p.add_argument("--use-averaged-model", action="store_true",
                   help="with --checkpoints: read the decode of the averaged model (mvqkd decode "
                        "--use-averaged-model) instead of the plain checkpoints'")
    p.add_argument("--store", action="append", default=[], metavar="NAME=DIR",
                   help="a teacher-label store to measure (HDF5 shards under DIR)")
    p.add_argument("--out", default=None, help="output prefix (default: EXP_ROOT/results)")
    p.set_defaults(func=_summarize)
