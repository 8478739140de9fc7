"""CLI for the indexes layer: make-cuts, dump-embeddings, extract, reduce-embeddings, join-indexes, validate.

Options come from :mod:`mvqkd.indexes.config`; handlers parse, call one library function
and print. Exit status: 0 done, 1 cuts failed (more than ``--max-failed-cuts``) or a
problem found, 2 a usage error (message names the argument).
"""

from __future__ import annotations

import logging

from mvqkd.conventions import CODEBOOK_INDEXES, TEACHER_EMBEDDINGS, TEACHER_FRAME_SHIFT
from mvqkd.indexes.config import DumpConfig, ExtractConfig, store_kwargs
from mvqkd.options import add_options, add_parser, from_args, user_errors

logger = logging.getLogger("mvqkd.indexes")


def _make_cuts(args) -> int:
    from mvqkd.indexes.make_cuts import make_cuts

    try:
        cuts = make_cuts(args.source, args.out, transcripts=args.transcripts)
    except ValueError as e:
        logger.error("%s", e)
        return 1
    print(f"{len(cuts)} cuts -> {args.out}")
    return 0


def _run(cfg, spec) -> int:
    from mvqkd.indexes.run import run_extraction

    try:
        result = run_extraction(cfg.cuts, spec, cfg.out_dir, **store_kwargs(cfg))
    except (OSError, ValueError, RuntimeError) as e:
        logger.error("%s", e)
        return 2
    if result is None:  # a torchrun rank other than 0
        return 0
    msg = (f"{spec.field}: {result.num_written} cuts written to {result.manifest}; "
           f"{result.num_failed} failed (report: {result.report})")
    (logger.warning if result.num_failed else logger.info)("%s", msg)
    if result.num_failed:
        logger.info("to retry the failed cuts once their cause is fixed, rerun with --retry-failed")
    print(msg)
    return 1 if result.num_failed > cfg.max_failed_cuts else 0


def _extract(args) -> int:
    from mvqkd.indexes.targets import TargetSpec

    cfg = from_args(ExtractConfig, args)
    return _run(cfg, TargetSpec(CODEBOOK_INDEXES, cfg.teacher, cfg.layer, cfg.quantizer))


def _dump(args) -> int:
    from mvqkd.indexes.targets import TargetSpec

    cfg = from_args(DumpConfig, args)
    if cfg.all:
        if not cfg.out_dir:
            logger.error("--all needs --out-dir")
            return 2
        return _run(cfg, TargetSpec(TEACHER_EMBEDDINGS, cfg.teacher, cfg.layer))
    if not cfg.out:
        logger.error("give --out emb.h5 (random subset) or --all --out-dir DIR (every cut)")
        return 2
    from mvqkd.indexes.embeddings import dump_embeddings

    written, failed = dump_embeddings(
        cfg.cuts, cfg.teacher, cfg.layer, cfg.out, max_utts=cfg.max_utts, max_frames=cfg.max_frames,
        seed=cfg.seed, max_duration=cfg.max_duration, device=cfg.device, dtype=cfg.dtype, report=cfg.report,
        chunk_seconds=cfg.chunk_seconds, chunk_overlap=cfg.chunk_overlap,
        chunk_mode=cfg.chunk_mode)
    print(f"dump-embeddings: {written} cuts -> {cfg.out}; {failed} failed")
    return 1 if failed > cfg.max_failed_cuts or not written else 0


@user_errors(2)
def _reduce(args) -> int:
    from mvqkd.indexes.reduce import reduce_embeddings

    out = reduce_embeddings(args.cuts, args.out_dir, args.dims, out_manifest=args.out_manifest,
                            sample_frames=args.sample_frames, seed=args.seed)
    print(f"reduce-embeddings: {args.dims}-dim PCA embeddings -> {out}")
    return 0


@user_errors(2)
def _join_icefall(args) -> int:
    from pathlib import Path

    from lhotse import CutSet

    from mvqkd.data.cuts import load_cuts
    from mvqkd.indexes.icefall import join_icefall_indexes

    index_cuts = load_cuts(args.indexes, "--indexes")
    onto = load_cuts(args.onto, "--onto")
    quantizer = None
    if args.quantizer:
        from mvqkd.quantizer import load_quantizer

        quantizer = load_quantizer(args.quantizer)
    joined, unmatched, unused, mismatched = join_icefall_indexes(
        index_cuts, onto, storage_root=args.storage_root, quantizer=quantizer)
    out = Path(args.out)
    report = out.with_name(out.name.split(".")[0] + ".unmatched.txt")
    lines = ([f"{i}\tno index cut for this cut" for i in unmatched]
             + [f"{i}\tindex cut not in --onto" for i in unused]
             + [f"{m}\tframe count or duration mismatch" for m in mismatched])
    out.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    CutSet.from_cuts(joined).to_file(out)
    msg = (f"join-indexes: {len(joined)} of {len(onto)} cuts -> {out}; {len(unmatched)} without indexes, "
           f"{len(unused)} index cuts unused, {len(mismatched)} mismatched (list: {report})")
    (logger.warning if lines else logger.info)("%s", msg)
    print(msg)
    return 0 if joined else 1


@user_errors(2)
def _validate(args) -> int:
    from mvqkd.data.cuts import load_cuts
    from mvqkd.indexes.validate import format_report, validate_cuts

    cuts = load_cuts(args.cuts, "--cuts")
    n, problems = validate_cuts(cuts, args.quantizer, field=args.field)
    print(format_report(n, problems))
    return 1 if problems or n == 0 else 0


def register(subparsers) -> None:
    p = add_parser(
        subparsers, "make-cuts", help="build a lhotse CutSet from a folder of audio or a Kaldi data dir",
        description="The entry point for a new corpus: one cut per audio file (optionally with a "
                    "transcript file '<id> TEXT'), or a Kaldi data dir (wav.scp, segments, text, utt2spk; "
                    "pipe entries 'cmd |' are run). Sampling rates and channels are read from the "
                    "audio; paths in the manifest are absolute. Next: mvqkd compute-fbank --cuts OUT "
                    "(students, decoding) and mvqkd extract --cuts OUT (teacher indexes); see "
                    "docs/new-corpus.md.",
        epilog="examples:\n  mvqkd make-cuts /data/my-recordings --out data/my_cuts.jsonl.gz "
               "--transcripts /data/my-recordings/text\n  mvqkd make-cuts /data/kaldi/train --out "
               "data/train_cuts.jsonl.gz")
    p.add_argument("source", help="folder of audio files, or a Kaldi data dir (has wav.scp)")
    p.add_argument("--out", required=True, help="output cuts manifest (.jsonl.gz)")
    p.add_argument("--transcripts", default=None,
                   help="audio folders only: file of '<id> TEXT' lines (UTF-8), id = file path "
                        "relative to the folder without suffix, '/' and spaces -> '_' (default: the "
                        "folder's 'text' file, if any)")
    p.set_defaults(func=_make_cuts)

    p = add_parser(
        subparsers, "dump-embeddings",
        help="teacher embeddings of a random subset (quantizer training) or of all cuts",
        description="Default: a seeded random subset, one float32 (T, D) array per cut in one HDF5 "
                    "file (--out). With --all: float16 'teacher_embeddings' for every cut in a "
                    "resumable shard store (--out-dir), for L1/L2 KD baselines.",
        epilog="examples:\n  mvqkd dump-embeddings --cuts data/fbank/librispeech_cuts_train-clean-100"
               ".jsonl.gz --teacher exp/teacher --layer 3 --out data/vq/embeddings.h5 --max-utts 1000\n"
               "  mvqkd dump-embeddings --cuts CUTS --teacher exp/teacher --layer 3 --all --out-dir data/kd")
    add_options(p, DumpConfig)
    p.set_defaults(func=_dump)

    p = add_parser(
        subparsers, "extract",
        help="teacher -> quantizer -> codebook indexes for every cut (resumable, parallel)",
        description="Writes uint8 (T, N) codebook indexes to HDF5 shards and a manifest whose cuts "
                    f"carry codebook_indexes (TemporalArray, {TEACHER_FRAME_SHIFT} s) and "
                    f"codebook_indexes_info. T = round(duration / {TEACHER_FRAME_SHIFT}): shorter "
                    "teacher outputs are padded by repeating the last frame, longer ones trimmed. "
                    "Rerun with the same arguments to resume. Exit status 1 when more than "
                    "--max-failed-cuts cuts failed (see the report), 2 on a usage error.",
        epilog="example:\n  mvqkd extract --cuts data/fbank/librispeech_cuts_train-clean-100.jsonl.gz "
               "--teacher exp/teacher --layer 3 \\\n    --quantizer data/vq/quantizer.pt --out-dir "
               "data/vq/train-clean-100 --join-onto data/fbank/librispeech_cuts_train-clean-100.jsonl.gz")
    add_options(p, ExtractConfig)
    p.set_defaults(func=_extract)

    p = add_parser(
        subparsers, "reduce-embeddings",
        help="PCA-reduce stored float embeddings (the equal-storage control of MVQ-KD)",
        description="Standardise each dimension of a manifest's teacher_embeddings, fit PCA on a "
                    "seeded sample, and store the first --dims components of every frame as float16 "
                    "(--dims x 2 bytes per frame; N/2 dims match N one-byte codebooks). Train on the "
                    "result with mvqkd train --kd l2.",
        epilog="example:\n  mvqkd reduce-embeddings --cuts data/kd/librispeech_cuts_train-clean-100"
               ".jsonl.gz --dims 4 --out-dir data/kd_pca4")
    p.add_argument("--cuts", required=True, help="manifest with teacher_embeddings (dump-embeddings --all)")
    p.add_argument("--dims", type=int, required=True, help="principal components kept per frame")
    p.add_argument("--out-dir", required=True, help="output folder (shards/, pca.pt, cuts.jsonl.gz)")
    p.add_argument("--out-manifest", default=None, help="output manifest (default: OUT_DIR/cuts.jsonl.gz)")
    p.add_argument("--sample-frames", type=int, default=200_000, help="frames the PCA is fitted on")
    p.add_argument("--seed", type=int, default=0, help="seed of the frame sample")
    p.set_defaults(func=_reduce)

    p = add_parser(
        subparsers, "join-indexes",
        help="attach codebook indexes written by icefall's MVQ recipe to your fbank cuts",
        description="icefall's index cuts carry codebook_indexes without codebook_indexes_info. "
                    "This joins them onto --onto cuts by id (exact, then with the speed-perturbation "
                    "affix repaired: _sp0.9 / -sp0.9 / sp0.9_, then by LibriSpeech utterance id), "
                    "checks frame counts (within one 20 ms frame), makes storage paths absolute, "
                    "and records num_codebooks, codebook_size 256 and, with --quantizer, the "
                    "quantizer id. Cuts matched on neither side are listed in OUT's "
                    "<name>.unmatched.txt. mvqkd train also accepts icefall's own joined manifest "
                    "directly (the info is then inferred from the arrays).",
        epilog="example (from icefall's egs/librispeech/ASR):\n  mvqkd join-indexes --indexes "
               "data/vq_fbank_layer36_cb8/librispeech_cuts_train-clean-100-vq.jsonl.gz \\\n"
               "    --onto data/fbank/librispeech_cuts_train-clean-100.jsonl.gz --quantizer "
               "exp/vq/.../quantizer.pt \\\n    --storage-root . --out data/vq/cuts_train-clean-100.jsonl.gz")
    p.add_argument("--indexes", required=True, help="cuts with codebook_indexes written by icefall")
    p.add_argument("--onto", required=True, help="the cuts to train on (fbank cuts)")
    p.add_argument("--out", required=True, help="output manifest (.jsonl.gz)")
    p.add_argument("--quantizer", default=None,
                   help="the quantizer that wrote the indexes (icefall's .pt or an mvqkd file): its id "
                        "is recorded and its size checked")
    p.add_argument("--storage-root", default=None,
                   help="folder that relative storage paths in --indexes are relative to "
                        "(icefall: egs/librispeech/ASR; default: the current folder)")
    p.set_defaults(func=_join_icefall)

    p = add_parser(
        subparsers, "validate", help="check that every cut's codebook indexes exist, load and match",
        description=f"Checks existence, loading, shape (round(duration/{TEACHER_FRAME_SHIFT}), N), "
                    "dtype, code range, quantizer id and consistent metadata. Exit status 1 with a "
                    "report on problems.",
        epilog="example:\n  mvqkd validate --cuts data/vq/librispeech_cuts_train-clean-100.jsonl.gz "
               "--quantizer data/vq/quantizer.pt")
    p.add_argument("--cuts", required=True, help="manifest written by extract")
    p.add_argument("--quantizer", default=None, help="quantizer file whose id every cut must carry")
    p.add_argument("--field", default=CODEBOOK_INDEXES, choices=[CODEBOOK_INDEXES, TEACHER_EMBEDDINGS],
                   help="which field to check")
    p.set_defaults(func=_validate)
