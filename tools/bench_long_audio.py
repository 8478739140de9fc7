#!/usr/bin/env python
"""Long recordings: time and peak memory of `mvqkd extract` on one recording of 1, 10 and 60
minutes in both chunk modes (`windows`, the default: 60 s windows with 5 s of context each
side; `front-end`: the CNN front-end in 60 s chunks, the transformer over the whole
recording) against the whole recording in one teacher pass, and how many codes each agrees on
with the whole pass: as code entries (frame x codebook) and as frames (all of a frame's
codebooks equal; issue 16 counts frames).

The recording is real speech (the LibriSpeech and LJSpeech files of tests/data, resampled
to 16 kHz and concatenated) repeated to the length, with a small gain change per repeat.
The teacher is a random-init tiny one (`mvqkd make-teacher --size tiny`; `--teacher-size base`:
HuBERT base's shapes, 512-channel group-norm front-end, 12 x 768 transformer); the quantizers
(additive 8 x 256 and product 8 x 256) are trained on its layer-2 embeddings of the first
minute. Every extraction runs in its own process; its peak RSS is that process's maximum
resident set (`getrusage(RUSAGE_CHILDREN)` of a fresh wrapper process).

    python tools/bench_long_audio.py --minutes 1 10 60 --whole-up-to 10
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mvqkd.conventions import SAMPLE_RATE

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.speech import speech  # noqa: E402  (the recording the chunking test uses)

RUSAGE = ("import resource, subprocess, sys, json; p = subprocess.run(sys.argv[1:]); "
          "print(json.dumps({'rc': p.returncode, 'maxrss_mib': "
          "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))")


def mvqkd(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "mvqkd.cli", "--log-level", "WARNING", *args], check=True,
                   stdout=subprocess.DEVNULL, cwd=REPO)


def measured(args: list[str], output: list | None = None) -> tuple[float, float]:
    """(seconds, peak RSS MiB) of `mvqkd ARGS` in a fresh process; its stdout lines are appended
    to ``output`` if given."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", RUSAGE, sys.executable, "-m", "mvqkd.cli", "--log-level",
                          "WARNING", *args], capture_output=True, text=True, check=False,
                         cwd=REPO)
    *lines, last = out.stdout.rstrip("\n").split("\n")
    res = json.loads(last)
    if res["rc"] != 0:
        raise RuntimeError(f"mvqkd {' '.join(args)} failed: {out.stderr.strip()[-500:]}")
    if output is not None:
        output.extend(lines)
    return time.perf_counter() - t0, res["maxrss_mib"]


def codes(manifest: Path) -> np.ndarray:
    from lhotse import CutSet

    (cut,) = list(CutSet.from_file(manifest))
    return cut.load_codebook_indexes()


def agreement(a, b) -> str:
    """'entries% / frames%' equal between two (frames, codebooks) code arrays (numpy or torch)."""
    eq = np.asarray(a) == np.asarray(b)
    return f"{100 * eq.mean():.2f}% / {100 * eq.all(axis=1).mean():.2f}%"


def main() -> int:
    import soundfile as sf

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, nargs="+", default=[1, 10, 60])
    ap.add_argument("--whole-up-to", type=float, default=10, help="also extract whole recordings up to this length")
    ap.add_argument("--layer", type=int, default=2)
    ap.add_argument("--teacher-size", default="tiny", choices=["tiny", "base"],
                    help="random-init teacher (mvqkd make-teacher --size)")
    ap.add_argument("--keep", default=None, help="work folder to keep (default: a temporary one)")
    ap.add_argument("--chunk-overlap", type=float, default=5.0, help="seconds of context each side of a window")
    ap.add_argument("--sensitivity", action="store_true",
                    help="then, in-process on the 10-minute recording: codes equal under small noise and "
                         "under chunking with wider windows, and the additive codes' reconstruction error")
    args = ap.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="bench_long_")).resolve()  # children run in REPO
    work.mkdir(parents=True, exist_ok=True)
    teacher = work / "teacher"
    if not (teacher / "config.json").is_file():
        mvqkd("make-teacher", "--out", str(teacher), "--size", args.teacher_size, "--seed", "0")
    # quantizers on the first minute
    first = work / "q_audio"
    first.mkdir(exist_ok=True)
    sf.write(first / "first.flac", speech(1.0), SAMPLE_RATE)
    mvqkd("make-cuts", str(first), "--out", str(work / "q_cuts.jsonl.gz"))
    mvqkd("dump-embeddings", "--cuts", str(work / "q_cuts.jsonl.gz"), "--teacher", str(teacher), "--layer",
          str(args.layer), "--out", str(work / "emb.h5"), "--device", "cpu")
    quantizers = {}
    for method in ("lsq", "product"):
        q = work / f"q_{method}.pt"
        if not q.is_file():
            mvqkd("train-quantizer", "--embeddings", str(work / "emb.h5"), "--num-codebooks", "8", "--iters", "3",
                  "--method", method, "--out", str(q))
        quantizers[method] = q
    print(f"long recordings: mvqkd extract, {args.teacher_size} random teacher, layer {args.layer}, CPU "
          f"threads={os.environ.get('OMP_NUM_THREADS', 'default')}; 60 s chunks; windows with "
          f"{args.chunk_overlap:g} s context")
    print("| audio | windows: time, peak RSS | front-end: time, peak RSS | whole: time, peak RSS "
          "| codes equal to whole (entries / frames): windows, additive | windows, product "
          "| front-end, additive | front-end, product |")
    print("|---|---|---|---|---|---|---|---|")
    modes = {"windows": ["--chunk-overlap", str(args.chunk_overlap)],
             "front-end": ["--chunk-mode", "front-end"], "whole": ["--chunk-seconds", "1e9"]}
    for minutes in args.minutes:
        d = work / f"audio_{minutes:g}min"
        d.mkdir(exist_ok=True)
        if not (d / "rec.flac").is_file():
            sf.write(d / "rec.flac", speech(minutes), SAMPLE_RATE)
        cuts = work / f"cuts_{minutes:g}.jsonl.gz"
        mvqkd("make-cuts", str(d), "--out", str(cuts))
        row, got = {}, {}
        for mode, extra in modes.items():
            if mode == "whole" and minutes > args.whole_up_to:
                continue
            for method, q in quantizers.items():
                out = work / f"x_{minutes:g}_{mode}_{method}"
                shutil.rmtree(out, ignore_errors=True)  # a kept store would resume, not run
                sec, rss = measured(["extract", "--cuts", str(cuts), "--teacher", str(teacher), "--layer",
                                     str(args.layer), "--quantizer", str(q), "--out-dir", str(out), "--device",
                                     "cpu", "--max-duration", "100000", *extra])
                if method == "lsq":
                    row[mode] = f"{sec:.1f} s, {rss:.0f} MiB"
                got[(mode, method)] = codes(out / "cuts.jsonl.gz")
        agree = [agreement(got[(mode, m)], got[("whole", m)]) if ("whole", m) in got else "-"
                 for mode in ("windows", "front-end") for m in quantizers]
        print(f"| {minutes:g} min | {row['windows']} | {row['front-end']} | {row.get('whole', 'not run')} | "
              + " | ".join(agree) + " |", flush=True)
    if args.sensitivity:
        sensitivity(teacher, quantizers, args.layer)
    return 0


WINDOWS = [(60, 5), (120, 5), (120, 20), (200, 10), (300, 10)]  # (window, context) seconds


def sensitivity(teacher_dir: Path, quantizers: dict, layer: int) -> None:
    """How much the codes of a 10-minute recording move under small noise on the whole-file
    embeddings and under chunking with wider windows (one process, no memory figures)."""
    import torch

    from mvqkd.conventions import TEACHER_FRAME_SHIFT
    from mvqkd.quantizer.model import load_quantizer
    from mvqkd.teacher.model import load_teacher

    teacher = load_teacher(teacher_dir, device="cpu")
    qs = {m: load_quantizer(q) for m, q in quantizers.items()}
    wav = speech(10.0)
    whole = teacher.extract([wav], layer)[0]
    den = float(((whole - whole.mean(0)) ** 2).sum())

    def rel(x) -> float:  # relative squared error against the whole-file embeddings
        return float(((x - whole) ** 2).sum()) / den

    ref = {m: q.encode(whole) for m, q in qs.items()}
    cases = {f"noise {eps:g} std": whole + eps * whole.std(0) * torch.randn(
        whole.shape, generator=torch.Generator().manual_seed(0)) for eps in (1e-3, 3e-3, 1e-2)}
    fps = round(1 / TEACHER_FRAME_SHIFT)
    for win, ctx in WINDOWS:
        cases[f"chunked {win} s, {ctx} s context"] = teacher.extract_chunked(wav, layer, win * fps, ctx * fps)
    additive = qs["lsq"]
    print("\n| embeddings vs whole-file pass | rel. sq. error | additive equal (entries / frames) | product equal | "
          "additive codes' error vs whole-file embedding (whole-file codes: "
          f"{rel(additive.decode(ref['lsq'])):.5f}) |")
    print("|---|---|---|---|---|")
    for name, x in cases.items():
        eq = {m: agreement(q.encode(x), ref[m]) for m, q in qs.items()}
        print(f"| {name} | {rel(x):.1e} | {eq['lsq']} | {eq['product']} | "
              f"{rel(additive.decode(additive.encode(x))):.5f} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
