"""CLI for the data layer: synth-corpus, download-librispeech, prepare-manifests, compute-fbank, train-bpe."""

from __future__ import annotations

import logging

from mvqkd.options import HelpFormatter, user_errors

logger = logging.getLogger("mvqkd.data")

DEFAULT_PARTS = ["train-clean-100", "dev-clean", "test-clean", "test-other"]


def _synth(args) -> int:
    from mvqkd.data.synth import synth_corpus

    root = synth_corpus(args.out_dir, hours=args.hours, seed=args.seed, num_jobs=args.num_jobs)
    print(f"Synthetic LibriSpeech corpus ready: {root}")
    return 0


def _download(args) -> int:
    from lhotse.recipes import download_librispeech

    download_librispeech(args.target_dir, dataset_parts=args.parts)
    return 0


def _manifests(args) -> int:
    from mvqkd.data.librispeech import CorpusError, prepare_librispeech_manifests

    try:
        skipped = prepare_librispeech_manifests(args.corpus_dir, args.parts, args.out_dir, strict=args.strict)
    except CorpusError as e:
        logger.error("%s", e)
        return 1
    total = sum(skipped.values())
    print(f"Manifests in {args.out_dir}: {len(skipped)} part(s) prepared, {total} bad utterance(s) skipped"
          + (f" (see {args.out_dir}/bad_utterances_<part>.txt)" if total else ""))
    return 0


@user_errors(2)
def _fbank(args) -> int:
    from mvqkd.data.features import FbankFailures, compute_fbank_for_cuts, compute_fbank_for_part

    if args.cuts:
        if not args.out_cuts:
            raise ValueError("--cuts needs --out-cuts (the fbank cuts manifest to write)")
        out = compute_fbank_for_cuts(args.cuts, args.out_cuts, num_jobs=args.num_jobs, strict=args.strict)
        print(f"fbank cuts -> {out}")
        return 0
    if not (args.manifest_dir and args.out_dir):
        raise ValueError("give --cuts CUTS --out-cuts OUT (any corpus), or --manifest-dir DIR "
                         "--out-dir DIR [--parts ...] (LibriSpeech manifests)")
    failures = []  # under --strict: every part is done first, then all its failures are named
    for part in args.parts:
        try:
            compute_fbank_for_part(args.manifest_dir, args.out_dir, part, num_jobs=args.num_jobs,
                                   speed_perturb=args.speed_perturb and part.startswith("train"),
                                   strict=args.strict)
        except FbankFailures as e:
            failures.append(str(e))
    if failures:
        raise FbankFailures("\n".join(failures))
    return 0


def _bpe(args) -> int:
    from mvqkd.data.tokenizer import train_bpe, write_transcripts

    texts = write_transcripts(args.manifests, args.out_dir + "/transcript_words.txt")
    train_bpe(texts, args.out_dir, args.vocab_size)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "synth-corpus", help="synthesise the embedded espeak-ng corpus in LibriSpeech's layout",
        description="Synthesise English speech with espeak-ng into DIR/LibriSpeech/<part>/<spk>/<chap>/ "
        "(16 kHz mono FLAC + <spk>-<chap>.trans.txt). Parts: train-clean-360, train-clean-100, dev-clean, "
        "test-clean, test-other. Deterministic for --seed; re-running only fills in what is missing.",
        formatter_class=HelpFormatter)
    p.add_argument("--out-dir", required=True, help="output folder (LibriSpeech/ is created inside)")
    p.add_argument("--hours", type=float, default=0.1,
                   help="total audio over all parts (0.1 for tests/CI; 5-20 for the demo and benchmarks)")
    p.add_argument("--seed", type=int, default=0, help="speaker assignment and sentence order")
    p.add_argument("--num-jobs", type=int, default=None, help="parallel processes (default: all cores)")
    p.set_defaults(func=_synth)

    p = subparsers.add_parser("download-librispeech", help="download LibriSpeech parts with lhotse",
                              formatter_class=HelpFormatter)
    p.add_argument("--target-dir", required=True, help="folder that will hold LibriSpeech/")
    p.add_argument("--parts", nargs="+", default=DEFAULT_PARTS, help="parts to download")
    p.set_defaults(func=_download)

    p = subparsers.add_parser(
        "prepare-manifests", help="audit a LibriSpeech-layout corpus and write lhotse manifests",
        description="Writes OUT/librispeech_{recordings,supervisions}_<part>.jsonl.gz. Bad utterances (empty "
        "transcript, transcript without audio, audio without transcript, unreadable audio) are skipped with "
        "a log line, a count and a list in OUT/bad_utterances_<part>.txt, or are an error with --strict.",
        formatter_class=HelpFormatter)
    p.add_argument("--corpus-dir", required=True, help="folder holding LibriSpeech/ (or the LibriSpeech folder)")
    p.add_argument("--parts", nargs="+", default=DEFAULT_PARTS, help="parts to prepare")
    p.add_argument("--out-dir", required=True, help="manifest folder")
    p.add_argument("--strict", action="store_true", help="fail on the first bad utterance instead of skipping")
    p.set_defaults(func=_manifests)

    p = subparsers.add_parser(
        "compute-fbank", help="80-bin fbank for any cuts manifest or LibriSpeech parts (LilcomChunkyWriter)",
        description="Any corpus: --cuts CUTS --out-cuts OUT writes OUT with features in feats_<name>/ next "
        "to it. LibriSpeech: --manifest-dir/--out-dir/--parts write OUT/librispeech_cuts_<part>.jsonl.gz "
        "with features in OUT/feats_<part>/. Audio is resampled to 16 kHz and downmixed to one channel "
        "first. Cuts whose audio fails to decode are skipped, listed in failed_cuts_<name>.txt and counted "
        "in the log (with --strict, the command then fails: exit status 2); feature paths are absolute.",
        epilog="examples:\n  mvqkd compute-fbank --cuts data/my_cuts.jsonl.gz --out-cuts data/fbank/my_cuts.jsonl.gz\n"
               "  mvqkd compute-fbank --manifest-dir data/manifests --out-dir data/fbank --parts dev-clean",
        formatter_class=HelpFormatter)
    p.add_argument("--cuts", default=None, help="any lhotse cuts manifest (e.g. from mvqkd make-cuts)")
    p.add_argument("--out-cuts", default=None, help="with --cuts: the fbank cuts manifest to write")
    p.add_argument("--manifest-dir", default=None, help="folder with LibriSpeech recordings/supervisions manifests")
    p.add_argument("--out-dir", default=None, help="with --manifest-dir: feature and cut manifest folder")
    p.add_argument("--parts", nargs="+", default=DEFAULT_PARTS, help="parts to process")
    p.add_argument("--num-jobs", type=int, default=2, help="parallel processes")
    p.add_argument("--speed-perturb", action="store_true", help="add 0.9x and 1.1x copies of train parts")
    p.add_argument("--strict", action="store_true",
                   help="fail (exit status 2) when any cut failed, after writing the others' features and "
                        "the list, and again on a re-run over the finished part")
    p.set_defaults(func=_fbank)

    p = subparsers.add_parser(
        "train-bpe", help="train a sentencepiece BPE model (icefall conventions: <blk>=0, <sos/eos>=1, <unk>=2)",
        formatter_class=HelpFormatter)
    p.add_argument("--manifests", nargs="+", required=True, help="cut or supervision manifests with the texts")
    p.add_argument("--out-dir", required=True, help="lang folder, e.g. data/lang_bpe_500")
    p.add_argument("--vocab-size", type=int, default=500, help="number of BPE pieces")
    p.set_defaults(func=_bpe)
