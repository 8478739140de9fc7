#!/usr/bin/env python
"""Long files in `mvqkd transcribe`: word error rate, time and peak memory of recognising
long recordings made of consecutive utterances of a test set, cut into segments at their
quietest moments (the default, `--max-segment-seconds 30`) against the whole file at once
(`--max-segment-seconds 0`), next to the same utterances recognised one by one (the WER
`mvqkd decode` would give from their audio). Each mode runs in a fresh process (peak RSS of
that process, as tools/bench_long_audio.py measures it). ``--speech-minutes`` adds time and
memory (no WER: no transcript) for longer files of real speech (tests/speech.py, the
recording tools/bench_long_audio.py uses).

    python tools/bench_long_transcribe.py --model exp/seed1/mvq --use-averaged-model \\
        --cuts data/fbank/librispeech_cuts_test-clean.jsonl.gz --minutes 1 5 10 --whole-up-to 5 \\
        --speech-minutes 60
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from mvqkd.conventions import SAMPLE_RATE as SR

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
from bench_long_audio import measured  # noqa: E402


def long_files(cuts, minutes: float, out: Path) -> tuple[list[str], list[list[str]], list[str], list[list[str]]]:
    """One WAV file of the first cuts of ``cuts`` whose durations reach ``minutes``, their
    utterance files: (long file list, its reference words, utterance files, their words)."""
    import soundfile as sf

    audio, utt_files, utt_refs = [], [], []
    for c in cuts:
        if sum(len(a) for a in audio) >= minutes * 60 * SR:
            break
        x = c.load_audio().mean(axis=0).astype(np.float32)  # the cuts are 16 kHz
        audio.append(x)
        utt_files.append(str(out / f"{c.id}.wav"))
        sf.write(utt_files[-1], x, SR, subtype="FLOAT")
        utt_refs.append(" ".join(s.text for s in c.supervisions).split())
    if sum(len(a) for a in audio) < minutes * 60 * SR:
        raise SystemExit(f"the cuts hold less than {minutes} minutes of audio")
    name = str(out / f"long-{minutes:g}min.wav")
    sf.write(name, np.concatenate(audio), SR, subtype="FLOAT")
    return [name], [sum(utt_refs, [])], utt_files, utt_refs


def wer(refs: list[list[str]], lines: list[str]) -> float:
    import kaldialign

    hyps = [line.split("\t")[1].split() if "\t" in line else [] for line in lines]
    assert len(hyps) == len(refs), (len(hyps), len(refs))
    errors = sum(kaldialign.edit_distance(r, h)["total"] for r, h in zip(refs, hyps))
    return 100 * errors / sum(len(r) for r in refs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="experiment folder, checkpoint or ONNX folder")
    ap.add_argument("--use-averaged-model", action="store_true")
    ap.add_argument("--cuts", required=True, help="a test set's cut manifest (with recordings)")
    ap.add_argument("--minutes", type=float, nargs="+", default=[1, 5, 10])
    ap.add_argument("--whole-up-to", type=float, default=5, help="the whole-file mode up to this length")
    ap.add_argument("--method", default="greedy_search")
    ap.add_argument("--speech-minutes", type=float, nargs="*", default=[],
                    help="also time files of real speech this long (segmented only)")
    args = ap.parse_args()
    from lhotse import CutSet

    cuts = CutSet.from_file(args.cuts)
    model = ["--model", str(Path(args.model).resolve()), "--method", args.method] + (["--use-averaged-model"] * args.use_averaged_model)
    print("| audio | mode | WER | time (s) | peak RSS (MiB) |\n|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for minutes in args.minutes:
            files, refs, utt_files, utt_refs = long_files(cuts, minutes, Path(tmp))
            modes = [("utterances one by one", utt_files, utt_refs, "0"), ("segmented (30 s)", files, refs, "30")]
            if minutes <= args.whole_up_to:
                modes.append(("whole file", files, refs, "0"))
            for mode, inputs, mode_refs, seg in modes:
                lines: list[str] = []
                sec, rss = measured(["transcribe", *model, "--max-segment-seconds", seg, *inputs], lines)
                print(f"| {minutes:g} min | {mode} | {wer(mode_refs, lines):.2f} | {sec:.1f} | {rss:.0f} |",
                      flush=True)
        for minutes in args.speech_minutes:
            import soundfile as sf

            sys.path.insert(0, str(REPO))
            from tests.speech import speech

            name = str(Path(tmp) / f"speech-{minutes:g}min.wav")
            sf.write(name, speech(minutes), SR, subtype="FLOAT")
            sec, rss = measured(["transcribe", *model, name])
            print(f"| {minutes:g} min of real speech | segmented (30 s) | - | {sec:.1f} | {rss:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
