"""CLI for the indexes layer: make-cuts, dump-embeddings, extract, validate."""

from __future__ import annotations

import argparse
import logging

from mvqkd.teacher.commands import add_device_options

logger = logging.getLogger("mvqkd.indexes")


def _make_cuts(args) -> int:
    from mvqkd.indexes.make_cuts import make_cuts

    try:
        cuts = make_cuts(args.source, args.out, transcripts=args.transcripts, sampling_rate=args.sampling_rate)
    except ValueError as e:
        logger.error("%s", e)
        return 1
    print(f"{len(cuts)} cuts -> {args.out}")
    return 0


def _finish(what: str, result) -> int:
    msg = (f"{what}: {result.num_written} cuts written to {result.manifest}; "
           f"{result.num_failed} failed (report: {result.report})")
    (logger.warning if result.num_failed else logger.info)("%s", msg)
    print(msg)
    return 1 if result.num_failed else 0


def _run(args, spec) -> int:
    from mvqkd.indexes.run import run_extraction

    try:
        result = run_extraction(
            args.cuts, spec, args.out_dir, num_workers=args.num_workers, shard_size=args.shard_size,
            max_duration=args.max_duration, device=args.device, dtype=args.dtype,
            compression=getattr(args, "compression", None), join_onto=args.join_onto,
            out_manifest=args.out_manifest, report=args.report,
        )
    except (OSError, ValueError) as e:
        logger.error("%s", e)
        return 2
    return 0 if result is None else _finish(spec.field, result)


def _extract(args) -> int:
    from mvqkd.indexes.targets import INDEXES, TargetSpec

    return _run(args, TargetSpec(INDEXES, args.teacher, args.layer, args.quantizer))


def _dump(args) -> int:
    from mvqkd.indexes.targets import EMBEDDINGS, TargetSpec

    if args.all:
        if not args.out_dir:
            logger.error("--all needs --out-dir")
            return 2
        return _run(args, TargetSpec(EMBEDDINGS, args.teacher, args.layer))
    if not args.out:
        logger.error("give --out emb.h5 (random subset) or --all --out-dir DIR (every cut)")
        return 2
    from mvqkd.indexes.embeddings import dump_embeddings

    written, failed = dump_embeddings(
        args.cuts, args.teacher, args.layer, args.out, max_utts=args.max_utts, max_frames=args.max_frames,
        seed=args.seed, max_duration=args.max_duration, device=args.device, dtype=args.dtype, report=args.report)
    print(f"dump-embeddings: {written} cuts -> {args.out}; {failed} failed")
    return 1 if failed or not written else 0


def _validate(args) -> int:
    from lhotse import CutSet

    from mvqkd.indexes.validate import format_report, validate_cuts

    n, problems = validate_cuts(CutSet.from_file(args.cuts) or [], args.quantizer, field=args.field)
    print(format_report(n, problems))
    return 1 if problems or n == 0 else 0


def _teacher_options(p) -> None:
    p.add_argument("--cuts", required=True, help="lhotse cuts manifest with recordings (e.g. fbank cuts)")
    p.add_argument("--teacher", required=True, help="teacher checkpoint directory (HuBERT/WavLM/wav2vec2)")
    p.add_argument("--layer", type=int, required=True,
                   help="1-based transformer layer (its output); 0 = input to the first transformer layer")
    p.add_argument("--max-duration", type=float, default=60.0,
                   help="seconds of (padded) audio per teacher batch (default: 60)")
    add_device_options(p)


def _store_options(p, out_dir_required: bool) -> None:
    p.add_argument("--out-dir", required=out_dir_required,
                   help="store directory: shards/, plan.json, cuts.jsonl.gz, failed_cuts.jsonl")
    p.add_argument("--num-workers", type=int, default=1,
                   help="local worker processes (each takes every W-th shard; on GPU, worker g uses "
                        "cuda:(g %% device count)). Under torchrun each rank runs this many (default: 1)")
    p.add_argument("--shard-size", type=int, default=200,
                   help="cuts per shard: the unit of resume and of parallel work (default: 200)")
    p.add_argument("--join-onto", default=None,
                   help="cuts manifest (e.g. fbank cuts) to attach the arrays to by cut id; the "
                        "output then holds those cuts")
    p.add_argument("--out-manifest", default=None, help="output manifest (default: OUT_DIR/cuts.jsonl.gz)")
    p.add_argument("--report", default=None,
                   help="per-cut failure report, JSON lines (default: OUT_DIR/failed_cuts.jsonl)")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "make-cuts", help="build a lhotse CutSet from a folder of audio or a Kaldi data dir",
        description="The entry point for a new corpus: one cut per audio file (optionally with a "
                    "transcript file '<id> TEXT'), or a Kaldi data dir (wav.scp, segments, text).")
    p.add_argument("source", help="folder of audio files, or a Kaldi data dir (has wav.scp)")
    p.add_argument("--out", required=True, help="output cuts manifest (.jsonl.gz)")
    p.add_argument("--transcripts", default=None,
                   help="audio folders only: file of '<id> TEXT' lines, id = file path relative to the "
                        "folder without suffix, '/' -> '_'")
    p.add_argument("--sampling-rate", type=int, default=16000,
                   help="Kaldi dirs only: the audio's sampling rate (default: 16000)")
    p.set_defaults(func=_make_cuts)

    p = subparsers.add_parser(
        "dump-embeddings", help="teacher embeddings of a random subset (quantizer training) or of all cuts",
        description="Default: a seeded random subset, one float32 (T, D) array per cut in one HDF5 "
                    "file (--out). With --all: float16 'teacher_embeddings' for every cut in a "
                    "resumable shard store (--out-dir), for L1/L2 KD baselines.")
    _teacher_options(p)
    p.add_argument("--out", default=None, help="subset mode: output HDF5 file")
    p.add_argument("--max-utts", type=int, default=None, help="subset mode: at most this many cuts")
    p.add_argument("--max-frames", type=int, default=None, help="subset mode: stop after this many frames")
    p.add_argument("--seed", type=int, default=0, help="subset mode: random seed of the selection (default: 0)")
    p.add_argument("--all", action="store_true", help="every cut, as float16 teacher_embeddings in a store")
    _store_options(p, out_dir_required=False)
    p.set_defaults(func=_dump)

    p = subparsers.add_parser(
        "extract", help="teacher -> quantizer -> codebook indexes for every cut (resumable, parallel)",
        description="Writes uint8 (T, N) codebook indexes to HDF5 shards and a manifest whose cuts "
                    "carry codebook_indexes (TemporalArray, 0.02 s) and codebook_indexes_info. "
                    "T = round(duration / 0.02): shorter teacher outputs are padded by repeating the "
                    "last frame, longer ones trimmed. Rerun with the same arguments to resume. "
                    "Exit status 1 when any cut failed (see the report), 2 on a usage error.")
    _teacher_options(p)
    p.add_argument("--quantizer", required=True, help="quantizer file from train-quantizer")
    p.add_argument("--compression", default=None, choices=["gzip", "lzf"],
                   help="lossless HDF5 compression of the shards (default: none)")
    _store_options(p, out_dir_required=True)
    p.set_defaults(func=_extract)

    p = subparsers.add_parser(
        "validate", help="check that every cut's codebook indexes exist, load and match",
        description="Checks existence, loading, shape (round(duration/0.02), N), dtype, code range, "
                    "quantizer id and consistent metadata. Exit status 1 with a report on problems.")
    p.add_argument("--cuts", required=True, help="manifest written by extract")
    p.add_argument("--quantizer", default=None, help="quantizer file whose id every cut must carry")
    p.add_argument("--field", default="codebook_indexes", choices=["codebook_indexes", "teacher_embeddings"],
                   help="which field to check (default: codebook_indexes)")
    p.set_defaults(func=_validate)
