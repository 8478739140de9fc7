#!/usr/bin/env python
"""Benchmark of ``mvqkd extract``: storage and wall-time overhead, measured side by side.

For each teacher size (random-init ``make-teacher`` checkpoints):

- storage: bytes on disk of the index shards (HDF5, uint8 ``(T, N)``) against the same
  frames as float32 ``(T, D)`` embeddings written by lhotse's ``NumpyHdf5Writer``
  (both files include their HDF5 overhead); also with gzip-compressed shards;
- overhead: wall time of a full ``run_extraction`` (load teacher + quantizer, decode
  audio, teacher, quantize, pad/trim, write shards, merge manifest), and of the shard
  pipeline alone with the teacher already loaded (``process_shard``: what a long run
  spends per cut), against the bare teacher forward (``Teacher.extract_many`` on the
  already decoded audio, same batching) over the same cuts. Runs alternate and the best
  of ``--repeats`` is kept for each, as wall time and as CPU time of the process (all
  threads; the steadier figure on a shared machine).

Usage: python tools/bench_extract.py [--sizes tiny base] [--seconds 20] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from mvqkd.conventions import SAMPLE_RATE


def make_audio(out_dir: Path, seconds: float, seed: int = 0) -> list[Path]:
    """16 kHz FLAC files of 2..7 s (noisy harmonic tones) adding up to ``seconds``."""
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    files, total, i = [], 0.0, 0
    while total < seconds:
        dur = float(rng.uniform(2.0, 7.0))
        t = np.arange(int(dur * SAMPLE_RATE)) / SAMPLE_RATE
        f0 = rng.uniform(100, 250)
        x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6)) * 0.1
        x = (x * (1 + 0.5 * np.sin(2 * np.pi * 3 * t)) + 0.02 * rng.standard_normal(t.size)).astype(np.float32)
        files.append(out_dir / f"utt{i:04d}.flac")
        sf.write(files[-1], x, SAMPLE_RATE)
        total += dur
        i += 1
    return files


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads) of ``fn()``."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def dir_bytes(paths) -> int:
    return sum(os.path.getsize(p) for p in paths)


def bench_size(size: str, work: Path, seconds: float, repeats: int, num_codebooks: int,
               layer: int, max_duration: float) -> dict:
    from lhotse import CutSet
    from lhotse.features.io import NumpyHdf5Writer

    from mvqkd.indexes.audio import load_cut_audio
    from mvqkd.conventions import fit_frames, num_frames
    from mvqkd.indexes.make_cuts import make_cuts
    from mvqkd.indexes.pipeline import process_shard
    from mvqkd.indexes.run import run_extraction
    from mvqkd.indexes.targets import INDEXES, TargetSpec
    from mvqkd.quantizer import train_quantizer
    from mvqkd.teacher.make import make_teacher
    from mvqkd.teacher.model import load_teacher

    teacher_dir = make_teacher(work / f"teacher-{size}", size, seed=0)
    make_audio(work / f"audio-{size}", seconds)
    cuts_path = work / f"cuts-{size}.jsonl.gz"
    make_cuts(work / f"audio-{size}", cuts_path)
    cuts = list(CutSet.from_file(cuts_path))
    teacher = load_teacher(teacher_dir, device="cpu", dtype="float32")
    layer = min(layer, teacher.num_layers)
    wavs = [load_cut_audio(c) for c in cuts]
    max_samples = int(max_duration * SAMPLE_RATE)

    def bare():
        return dict(teacher.extract_many(wavs, layer, max_samples))

    embs = bare()  # warm-up, and the embeddings for the quantizer / float32 reference
    x = torch.cat([embs[i] for i in range(len(cuts))])
    q = train_quantizer(x[torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))[:2000]],
                        num_codebooks, 256, iters=1, seed=0, progress=False)
    q_path = work / f"q-{size}.pt"
    q.save(q_path)

    float_path = work / f"float32-{size}.h5"
    with NumpyHdf5Writer(float_path) as w:
        for i, c in enumerate(cuts):
            w.write(c.id, fit_frames(embs[i].numpy().astype(np.float32), num_frames(c.duration)))

    spec = TargetSpec(INDEXES, str(teacher_dir), layer, str(q_path))
    target = spec.build(teacher)
    def loaded(r):
        (work / f"loaded-{size}-{r}" / "shards").mkdir(parents=True)
        process_shard(0, cuts, teacher, target, work / f"loaded-{size}-{r}", max_duration)

    def whole(r):
        run_extraction(cuts_path, spec, work / f"ext-{size}-{r}", max_duration=max_duration,
                       device="cpu", dtype="float32")

    runs = {"bare": lambda r: bare(), "loaded": loaded, "extract": whole}
    times = {k: [] for k in runs}  # (wall, cpu) seconds per repeat
    order = list(runs)
    for r in range(repeats):  # rotate the order so that no variant always runs first
        for k in order[r % 3:] + order[:r % 3]:
            times[k].append(timed(lambda: runs[k](r)))
    out = work / f"ext-{size}-0"
    best = {k: (min(t[0] for t in v), min(t[1] for t in v)) for k, v in times.items()}
    t0 = time.perf_counter()
    for i in range(len(cuts)):
        q.encode(embs[i])
    t_quant = time.perf_counter() - t0
    gz = work / f"ext-{size}-gzip"
    run_extraction(cuts_path, spec, gz, max_duration=max_duration, device="cpu", dtype="float32",
                   compression="gzip")
    frames = sum(num_frames(c.duration) for c in cuts)
    idx_bytes = dir_bytes((out / "shards").glob("*.h5"))
    gz_bytes = dir_bytes((gz / "shards").glob("*.h5"))
    fl_bytes = os.path.getsize(float_path)
    return {
        "size": size, "dim": teacher.dim, "layers": teacher.num_layers, "cuts": len(cuts),
        "audio_s": sum(c.duration for c in cuts), "frames": frames, "N": num_codebooks,
        "float_bytes": fl_bytes, "idx_bytes": idx_bytes, "gz_bytes": gz_bytes,
        "ratio": fl_bytes / idx_bytes, "ratio_gz": fl_bytes / gz_bytes,
        **{f"{k}_{unit}": best[k][j] for k in best for j, unit in enumerate(("wall", "cpu"))},
        "quantize_s": t_quant,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["tiny", "base"], choices=["tiny", "base", "large"],
                    help="random-init teacher sizes to measure (default: tiny base)")
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds of audio per size (default: 20)")
    ap.add_argument("--repeats", type=int, default=3, help="alternating timing repeats, best kept (default: 3)")
    ap.add_argument("--num-codebooks", type=int, default=8, help="N, with 256 entries each (default: 8)")
    ap.add_argument("--layer", type=int, default=6, help="teacher layer (capped at the teacher's depth)")
    ap.add_argument("--max-duration", type=float, default=60.0, help="seconds of audio per teacher batch")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default: 1, the steadiest timing on a shared machine)")
    ap.add_argument("--keep", default=None, help="keep the work files in this directory")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = Path(args.keep or tempfile.mkdtemp(prefix="bench_extract_"))
    rows = []
    try:
        for size in args.sizes:
            rows.append(bench_size(size, work, args.seconds, args.repeats, args.num_codebooks, args.layer,
                                   args.max_duration))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU, float32, "
          f"best of {args.repeats}; time ratios are wall (CPU)")
    print("| teacher | dim | cuts / audio | frames | float32 h5 | index shards (N=%d) | ratio | gzip shards | ratio "
          "| bare forward | extract, whole run | ratio | extract, teacher loaded | ratio | quantize |"
          % args.num_codebooks)
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")

    def t(r, k):
        return f"{r[k + '_wall']:.2f} s ({r[k + '_cpu']:.2f} s)"

    def ratio(r, k):
        return f"{r[k + '_wall'] / r['bare_wall']:.2f}x ({r[k + '_cpu'] / r['bare_cpu']:.2f}x)"

    for r in rows:
        print(f"| {r['size']} ({r['layers']} layers) | {r['dim']} | {r['cuts']} / {r['audio_s']:.1f} s | "
              f"{r['frames']} | {r['float_bytes'] / 1e3:.1f} kB | {r['idx_bytes'] / 1e3:.1f} kB | "
              f"{r['ratio']:.0f}x | {r['gz_bytes'] / 1e3:.1f} kB | {r['ratio_gz']:.0f}x | {t(r, 'bare')} | "
              f"{t(r, 'extract')} | {ratio(r, 'extract')} | {t(r, 'loaded')} | {ratio(r, 'loaded')} | "
              f"{r['quantize_s']:.2f} s |")


if __name__ == "__main__":
    main()
