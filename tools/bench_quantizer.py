#!/usr/bin/env python
"""Benchmark mvqkd's quantizer against multi_quantization, PQ and residual VQ.

All systems run side by side in one process on the same embeddings at equal bytes
per frame (256-entry codebooks, so N codebooks = N bytes). Reported per system:
held-out relative error ||x - x_hat||^2 / ||x - mean||^2, training wall time and
encode frames/s, plus the ratios of the issue's targets (mvqkd error / mq error,
mvqkd encode speed / mq encode speed). Also runs the "no dead codewords after
training on >= 50k frames" check.

Sources:
  gauss   anisotropic Gaussian, dim 768, exponentially decaying spectrum, random rotation;
  speech  real transformer hidden states over speech: --speech-embeddings FILE.h5
          (NumpyHdf5Writer, one (T, D) array per utterance), or, when not given, the
          last-layer hidden states of a small *random-init* HuBERT run over espeak-ng speech
          synthesised here (labelled as such in the table).

    python tools/bench_quantizer.py --write-md docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mvqkd.conventions import SAMPLE_RATE
from mvqkd.quantizer.io import load_embeddings
from mvqkd.quantizer.kmeans import assign, kmeans
from mvqkd.quantizer.metrics import relative_error, usage_counts
from mvqkd.quantizer.search import encode_normalized, reconstruct
from mvqkd.quantizer.train import residual_kmeans_init, train_quantizer

logger = logging.getLogger("bench_quantizer")

K = 256
VOICES = ["en-us", "en-gb", "en-us+f3", "en-gb-scotland", "en-gb-x-rp+f2", "en-029+m4"]
WORDS = dict(
    subj="the old man|a young girl|my brother|the teacher|our neighbour|the small dog|a tired pilot|"
         "the quiet student|her father|the farmer".split("|"),
    verb="carried|painted|found|opened|watched|followed|cleaned|described|borrowed|repaired".split("|"),
    obj="a heavy box|the red door|seven letters|the broken clock|a bright lantern|the river bank|"
        "an empty bottle|the wooden chair|two silver coins|the long road".split("|"),
    tail="before the storm|in the morning|near the station|after dinner|without a word|"
         "on a cold day|behind the house|with great care|late at night|under the bridge".split("|"),
)


# ----------------------------------------------------------------------------- data
def gaussian(frames: int, dim: int, seed: int) -> np.ndarray:
    """(frames, dim) anisotropic Gaussian: std_i = exp(-i / (dim/8)), rotated, mean 1."""
    rng = np.random.default_rng(seed)
    std = np.exp(-np.arange(dim) / (dim / 8))
    rot, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    return ((rng.standard_normal((frames, dim)) * std) @ rot + 1.0).astype(np.float32)


def sentences(num: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS[k]) for k in ("subj", "verb", "obj", "tail")) + "."
            for _ in range(num)]


def synth_speech(work: Path, num: int, seed: int) -> list[np.ndarray]:
    """``num`` espeak-ng utterances (varied voices and rates), 16 kHz float32."""
    import soundfile as sf
    from tqdm import tqdm

    rng = random.Random(seed)
    out = []
    for i, text in enumerate(tqdm(sentences(num, seed), desc="espeak-ng")):
        wav = work / f"utt{i:04d}.wav"
        if not wav.exists():
            voice, rate = VOICES[i % len(VOICES)], rng.randint(130, 190)
            raw = subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate), "--stdout", text],
                                 check=True, capture_output=True).stdout
            subprocess.run(["sox", "-t", "wav", "-", "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(wav)],
                           input=raw, check=True, capture_output=True)
        a, sr = sf.read(wav, dtype="float32")
        assert sr == SAMPLE_RATE
        out.append(a)
    return out


def random_hubert_embeddings(work: Path, num_utts: int, seed: int) -> Path:
    """Write last-layer hidden states of a random-init HuBERT (hidden 384, 4 layers) over
    espeak speech to ``work/speech_hubert_random.h5`` (NumpyHdf5Writer); returns the path."""
    from lhotse import NumpyHdf5Writer
    from transformers import HubertConfig, HubertModel

    out = work / "speech_hubert_random.h5"
    if out.exists():
        return out
    (work / "wav").mkdir(parents=True, exist_ok=True)
    audio = synth_speech(work / "wav", num_utts, seed)
    torch.manual_seed(seed)
    cfg = HubertConfig(hidden_size=384, num_hidden_layers=4, num_attention_heads=6,
                       intermediate_size=1536, conv_dim=(256,) * 7)
    model = HubertModel(cfg).eval()
    model.save_pretrained(work / "hubert_random_init")
    with NumpyHdf5Writer(out) as w, torch.no_grad():
        for i, a in enumerate(audio):
            a = (a - a.mean()) / (a.std() + 1e-7)
            h = model(torch.from_numpy(a)[None]).last_hidden_state[0]
            w.store_array(f"utt{i:04d}", h.numpy())
    return out


# ----------------------------------------------------------------------------- systems
def timed(fn, *a, **kw):
    t = time.perf_counter()
    r = fn(*a, **kw)
    return r, time.perf_counter() - t


def run_mvqkd(train, held, nbytes, budget, seed):
    q, t_train = timed(train_quantizer, train, nbytes, K, time_budget=budget, seed=seed, progress=False)
    x = torch.from_numpy(held)
    codes, t_enc = timed(q.encode, x)
    return dict(err=relative_error(x, q.decode(codes)), train_s=t_train, enc_fps=len(held) / t_enc,
                note=f"{q.history['args']['iters_done']} LSQ iters")


def run_mq(train, held, nbytes, budget, seed):
    from multi_quantization import QuantizerTrainer

    random.seed(seed)
    torch.manual_seed(seed)
    dim = train.shape[1]
    x_train = torch.from_numpy(train)
    g = torch.Generator().manual_seed(seed)

    def batch():
        return x_train[torch.randint(len(train), (600,), generator=g)]

    # calibrate the step time on a throwaway trainer (not counted), then fit both phases
    cal = QuantizerTrainer(dim=dim, bytes_per_frame=nbytes, device=torch.device("cpu"))
    _, t_cal = timed(lambda: [cal.step(batch()) for _ in range(2)])
    total = max(2, int(budget / (t_cal / 2)))
    p1 = max(1, total // 2)
    p2 = max(1, total - p1 - 1)
    trainer = QuantizerTrainer(dim=dim, bytes_per_frame=nbytes, device=torch.device("cpu"),
                               phase_one_iters=p1, phase_two_iters=p2)
    t0 = time.perf_counter()
    while not trainer.done():
        trainer.step(batch())
    t_train = time.perf_counter() - t0
    mq = trainer.get_quantizer()
    x = torch.from_numpy(held)
    with torch.no_grad():
        codes, t_enc = timed(mq.encode, x)
        x_hat = mq.decode(codes)
    return dict(err=relative_error(x, x_hat), train_s=t_train, enc_fps=len(held) / t_enc,
                note=f"{p1}+{p2} steps x 600 frames")


def run_pq(train, held, nbytes, budget, seed, iters=10, max_frames=5000):
    g = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(train[:max_frames])
    parts = torch.tensor_split(torch.arange(x.shape[1]), nbytes)
    t0 = time.perf_counter()
    books = [kmeans(x[:, p], K, iters, g) for p in parts]
    t_train = time.perf_counter() - t0
    h = torch.from_numpy(held)

    def encode(v):
        return torch.stack([assign(v[:, p], c)[0] for p, c in zip(parts, books)], 1)

    codes, t_enc = timed(encode, h)
    x_hat = torch.cat([c[codes[:, i]] for i, c in enumerate(books)], 1)
    return dict(err=relative_error(h, x_hat), train_s=t_train, enc_fps=len(held) / t_enc,
                note=f"k-means {iters} it on {len(x)} frames")


def run_rvq(train, held, nbytes, budget, seed, iters=5, max_frames=5000):
    g = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(train[:max_frames])
    t0 = time.perf_counter()
    mean = x.mean(0)
    books = residual_kmeans_init(x - mean, nbytes, K, iters, g)
    t_train = time.perf_counter() - t0
    h = torch.from_numpy(held)
    codes, t_enc = timed(encode_normalized, h - mean, books, beam=1, icm_iters=0)
    return dict(err=relative_error(h, reconstruct(codes, books) + mean), train_s=t_train,
                enc_fps=len(held) / t_enc, note=f"k-means {iters} it on {len(x)} frames, greedy")


SYSTEMS = {"mvqkd": run_mvqkd, "multi_quantization": run_mq, "PQ": run_pq, "RVQ": run_rvq}


# ----------------------------------------------------------------------------- main
def dead_check(frames: int, nbytes: int, budget: float, seed: int) -> str:
    x = gaussian(frames, 768, seed + 7)
    q = train_quantizer(x, nbytes, K, time_budget=budget, seed=seed, progress=False)
    counts = usage_counts(q.encode(torch.from_numpy(x)), K)
    dead = int((counts == 0).sum())
    return (f"Dead-codeword check: mvqkd {nbytes}x{K} trained on {frames} Gaussian frames (dim 768, "
            f"{budget:.0f} s budget, {q.history['args']['iters_done']} LSQ iters): "
            f"{dead} dead of {nbytes * K} codewords on the training frames; "
            f"least used codeword: {int(counts.min())} frames.")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--speech-embeddings", default=None,
                   help="HDF5 of real teacher embeddings; default: random-init HuBERT on espeak speech")
    p.add_argument("--speech-label", default=None, help="table label for --speech-embeddings")
    p.add_argument("--bytes", type=int, nargs="+", default=[4, 8, 16], help="bytes per frame to test")
    p.add_argument("--budget", type=float, default=30.0,
                   help="training wall-clock seconds for mvqkd and multi_quantization")
    p.add_argument("--train-frames", type=int, default=10000, help="training frames per source")
    p.add_argument("--heldout-frames", type=int, default=500, help="held-out frames (error, speed)")
    p.add_argument("--num-utts", type=int, default=240, help="espeak utterances to synthesise")
    p.add_argument("--sources", nargs="+", default=["gauss", "speech"], choices=["gauss", "speech"])
    p.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    p.add_argument("--dead-check-frames", type=int, default=50000, help="0 skips the dead-codeword check")
    p.add_argument("--dead-check-budget", type=float, default=60.0, help="training seconds of the dead-codeword check")
    p.add_argument("--work-dir", default=os.path.join(tempfile.gettempdir(), "bench_quantizer"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--write-md", default=None, help="replace the '## Quantizer' section of this markdown file")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s [%(name)s] %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    config = (f"config: bytes {args.bytes}, K={K}, budget {args.budget:.0f} s, train frames <= "
              f"{args.train_frames}, held-out frames {args.heldout_frames}, seed {args.seed}, "
              f"torch threads {torch.get_num_threads()}, CPU")
    print(config, flush=True)

    rows = []
    for source in args.sources:
        if source == "gauss":
            x = gaussian(args.train_frames + args.heldout_frames, 768, args.seed)
            label = "anisotropic Gaussian, dim 768"
        else:
            path = args.speech_embeddings or random_hubert_embeddings(work, args.num_utts, args.seed)
            x = load_embeddings(path)
            x = x[np.random.default_rng(args.seed).permutation(len(x))]
            label = args.speech_label or (f"{Path(path).name}" if args.speech_embeddings else
                                          "random-init HuBERT hidden states on espeak speech")
            label += f", dim {x.shape[1]}"
        held, train = x[: args.heldout_frames], x[args.heldout_frames : args.heldout_frames + args.train_frames]
        print(f"\n## {label}: {len(train)} train / {len(held)} held-out frames", flush=True)
        for nbytes in args.bytes:
            res = {}
            for name in args.systems:
                r = SYSTEMS[name](train, held, nbytes, args.budget, args.seed)
                res[name] = r
                print(f"{label} | {nbytes} B | {name}: rel.err {r['err']:.4f}, train {r['train_s']:.1f} s, "
                      f"encode {r['enc_fps']:.0f} frames/s ({r['note']})", flush=True)
            rows.append((label, nbytes, res))

    lines = ["| source | bytes/frame | system | held-out rel. error | train s | encode frames/s | notes |",
             "|---|---|---|---|---|---|---|"]
    ratios = ["| source | bytes/frame | error mvqkd / mq (target <= 0.85) | encode speed mvqkd / mq (target >= 10) |",
              "|---|---|---|---|"]
    for label, nbytes, res in rows:
        for name, r in res.items():
            lines.append(f"| {label} | {nbytes} | {name} | {r['err']:.4f} | {r['train_s']:.1f} | "
                         f"{r['enc_fps']:.0f} | {r['note']} |")
        if "mvqkd" in res and "multi_quantization" in res:
            a, b = res["mvqkd"], res["multi_quantization"]
            ratios.append(f"| {label} | {nbytes} | {a['err'] / b['err']:.3f} | {a['enc_fps'] / b['enc_fps']:.1f}x |")
    dead = dead_check(args.dead_check_frames, 8, args.dead_check_budget, args.seed) if args.dead_check_frames else ""
    total = time.perf_counter() - t_start
    report = "\n".join([config, "", *lines, "", *ratios, "", dead, "", f"total benchmark time {total:.0f} s"])
    print("\n" + report)
    if args.write_md:
        write_section(Path(args.write_md), report, argv if argv is not None else sys.argv[1:])
    return 0


def write_section(md: Path, report: str, argv: list[str]) -> None:
    """Replace (or append) the '## Quantizer' section of ``md``; other sections stay."""
    cmd = "python tools/bench_quantizer.py " + " ".join(argv)
    section = ("## Quantizer\n\nMeasured by:\n\n```\n" + cmd.strip() + "\n```\n\n" + report + "\n")
    text = md.read_text() if md.exists() else "# Benchmarks\n"
    if "## Quantizer" in text:
        head, rest = text.split("## Quantizer", 1)
        nxt = rest.find("\n## ")
        text = head + section + (rest[nxt + 1 :] if nxt >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    md.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
