#!/usr/bin/env python3
"""The CUDA path in a few minutes: each check runs on --device and on the CPU and compares.

Checks (one PASS / FAIL line each):
  extract     tiny teacher + quantizer: codebook indexes of the test suite's real recordings
              (tests/data: flac, wav, mp3, stereo; the first 4 s of each) on the device vs on
              the CPU (float32): >= 99% of code entries equal
  long        a 3-minute recording (40 s with --quick), base-style group-norm tiny teacher:
              --chunk-mode front-end (10 s chunks) on the device gives the codes of the
              device's whole-file pass on >= 99% of frames and the CPU's front-end codes on
              >= 99% of entries; prints the device's peak memory of both passes
  quantizer   train a quantizer on the device and on the CPU (same seed): codes of the
              device's quantizer equal on >= 99% of entries, relative errors within 1%
  losses      full and pruned RNN-T losses (and gradients) on the device vs the CPU: 1e-4
  train       20 steps (6 with --quick, tiny student) of the reference student (12 x 512) with AMP (bf16 where supported,
              else fp16 with a gradient scaler) on a batch of LibriSpeech shapes: finite, and
              the loss falls
  decode      greedy and modified beam search of a tiny student (float32, no TF32): device
              hypotheses equal the CPU's

Usage: python tools/gpu_check.py [--device cuda] [--quick]
(``--device cpu --quick`` is the CPU half, run by the test suite.) Exit status 1 when any
check fails. Run it on a GPU with tools/gpu_check.sh.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from mvqkd.conventions import SAMPLE_RATE

TEST_AUDIO = Path(__file__).resolve().parents[1] / "tests" / "data"


def audio(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    f0 = rng.uniform(90, 250)
    x = sum(np.sin(2 * np.pi * f0 * k * t * (1 + 0.1 * np.sin(2 * np.pi * 0.5 * t))) / k for k in range(1, 6))
    return (0.1 * x + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def recordings(quick):
    """The first 4 s of each of the test suite's real recordings (mono 16 kHz); 2 with --quick.
    Synthetic speech-like audio where the checkout has no tests/data."""
    from mvqkd.decode.transcribe import load_audio

    files = sorted(p for p in TEST_AUDIO.glob("*") if p.suffix in (".flac", ".wav", ".mp3"))
    if not files:
        return [audio(s, i) for i, s in enumerate([1.5, 2.3, 3.1, 4.0][: 2 if quick else 4])]
    return [load_audio(f)[: 4 * SAMPLE_RATE] for f in files[: 2 if quick else None]]


def check_extract(dev, quick, tmp):
    from mvqkd.quantizer import train_quantizer
    from mvqkd.teacher.make import make_teacher
    from mvqkd.teacher.model import load_teacher

    path = make_teacher(Path(tmp) / "t", "tiny", seed=0)
    wavs = recordings(quick)
    cpu = load_teacher(path, device="cpu", dtype="float32")
    gpu = load_teacher(path, device=dev, dtype="float32")
    a = torch.cat(cpu.extract(wavs, 2))
    b = torch.cat(gpu.extract(wavs, 2))
    q = train_quantizer(a, 4, 16, iters=1, progress=False)
    eq = float((q.encode(a) == q.encode(b)).float().mean())
    return eq >= 0.99, f"codes of {len(wavs)} recordings ({a.shape[0]} frames) equal on {100 * eq:.2f}% of entries"


def check_long(dev, quick, tmp):
    from mvqkd.quantizer import train_quantizer
    from mvqkd.teacher.make import make_teacher
    from mvqkd.teacher.model import load_teacher

    path = make_teacher(Path(tmp) / "tg", "tiny", seed=0, feat_extract_norm="group", do_stable_layer_norm=False)
    wav = np.concatenate([audio(4.0, i) for i in range(10 if quick else 45)])
    cuda = dev.startswith("cuda")
    teacher = load_teacher(path, device=dev, dtype="float32")
    out, peaks = {}, []
    for name, run in (("whole", lambda: teacher.extract([wav], 2)[0]),
                      ("front-end", lambda: teacher.extract_chunked(wav, 2, 500, 0, mode="front-end"))):
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        out[name] = run()
        if cuda:
            peaks.append(f"{name} {torch.cuda.max_memory_allocated() / 2 ** 20:.0f} MiB")
    cpu = load_teacher(path, device="cpu", dtype="float32").extract_chunked(wav, 2, 500, 0, mode="front-end")
    q = train_quantizer(out["whole"], 4, 16, iters=1, progress=False)
    codes = {name: q.encode(x) for name, x in (*out.items(), ("cpu", cpu))}
    frames = float((codes["front-end"] == codes["whole"]).all(dim=1).float().mean())
    entries = float((codes["front-end"] == codes["cpu"]).float().mean())
    memory = f"; peak {', '.join(peaks)}" if peaks else ""
    return frames >= 0.99 and entries >= 0.99, (
        f"{len(wav) / SAMPLE_RATE:.0f} s: front-end vs whole {100 * frames:.2f}% of frames, vs CPU "
        f"{100 * entries:.2f}% of entries{memory}")


def check_quantizer(dev, quick, tmp):
    from mvqkd.quantizer import train_quantizer
    from mvqkd.quantizer.metrics import relative_error

    x = torch.randn(3000 if quick else 20000, 32, generator=torch.Generator().manual_seed(0))
    x = x @ torch.randn(32, 32, generator=torch.Generator().manual_seed(1))
    qc = train_quantizer(x, 4, 32, iters=2, seed=0, device="cpu", progress=False)
    qg = train_quantizer(x, 4, 32, iters=2, seed=0, device=dev, progress=False).to("cpu")
    eq = float((qc.encode(x) == qg.encode(x)).float().mean())
    ec = relative_error(x, qc.decode(qc.encode(x)))
    eg = relative_error(x, qg.decode(qg.encode(x)))
    ok = eq >= 0.99 and abs(ec - eg) <= 0.01 * ec
    return ok, f"codes equal on {100 * eq:.2f}%, relative errors {ec:.4f} (cpu) / {eg:.4f}"


def check_losses(dev, quick, tmp):
    from mvqkd.losses import rnnt_loss
    from mvqkd.student.pruned import PrunedRnntLoss
    from mvqkd.student.decoder import Decoder, Joiner

    g = torch.Generator().manual_seed(0)
    B, T, U, V = (2, 20, 5, 30) if quick else (4, 60, 12, 100)
    logits = torch.randn(B, T, U + 1, V, generator=g)
    y = torch.randint(1, V, (B, U), generator=g)
    tl, ul = torch.tensor([T] * B), torch.tensor([U] * B)
    res = {}
    for d in ("cpu", dev):
        x = logits.to(d).requires_grad_(True)
        loss = rnnt_loss(x, y.to(d), tl.to(d), ul.to(d))
        loss.backward()
        torch.manual_seed(0)
        joiner, dec, pruned = Joiner(16, 16, 16, V), Decoder(V, 16, 0, 2), PrunedRnntLoss(16, 16, V, 3)
        enc = torch.randn(B, T, 16, generator=torch.Generator().manual_seed(2)).to(d)
        for m in (joiner, dec, pruned):
            m.to(d)
        s, p = pruned(joiner, dec, enc, tl.to(d), y.to(d), ul.to(d), 0)
        res[d] = (float(loss.detach()), x.grad.cpu(), float(s.detach()), float(p.detach()))
    (l1, g1, s1, p1), (l2, g2, s2, p2) = res["cpu"], res[dev]
    diff = max(abs(l1 - l2), float((g1 - g2).abs().max()), abs(s1 - s2), abs(p1 - p2))
    return diff <= 1e-4 * max(1.0, abs(l1)), f"largest difference {diff:.2e} (full loss {l1:.3f})"


def check_train(dev, quick, tmp):
    from mvqkd.student import build_model, preset_config

    size = "tiny" if quick else "reference"
    torch.manual_seed(0)
    model = build_model(preset_config(size, 500, rnnt_loss="pruned", num_codebooks=8)).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4)
    B, secs = (2, 3) if quick else (20, 15)
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(B, secs * 100, 80, generator=g).to(dev)
    lens = torch.full((B,), secs * 100).to(dev)
    tokens = [torch.randint(3, 500, (secs * 4,), generator=g).tolist() for _ in range(B)]
    idx = torch.randint(0, 256, (B, secs * 50, 8), generator=g).to(dev)
    bf16 = dev == "cpu" or torch.cuda.is_bf16_supported()
    dtype = torch.bfloat16 if bf16 else torch.float16
    scaler = None if bf16 else torch.amp.GradScaler("cuda")
    losses = []
    t0 = time.time()
    steps = 6 if quick else 20
    for step in range(steps):
        with torch.autocast(device_type=torch.device(dev).type, dtype=dtype):
            loss = model(feats, lens, tokens, codebook_indexes=idx, step=step)["loss"]
        opt.zero_grad()
        (loss if scaler is None else scaler.scale(loss)).backward()
        if scaler is None:
            opt.step()
        else:
            scaler.step(opt)
            scaler.update()
        losses.append(float(loss.detach()))
    k = steps // 4
    ok = all(np.isfinite(losses)) and np.mean(losses[-k:]) < np.mean(losses[:k])
    return ok, (f"{size} student, {steps} steps, {'bf16' if bf16 else 'fp16+scaler'}, loss "
                f"{losses[0]:.1f} -> {losses[-1]:.1f}, {(time.time() - t0) / steps:.2f} s/step")


def check_decode(dev, quick, tmp):
    from mvqkd.decode.search import search
    from mvqkd.student import build_model, preset_config
    from mvqkd.teacher.model import ieee_float32

    torch.manual_seed(0)
    model = build_model(preset_config("tiny", 40)).eval()
    feats = torch.randn(3, 300, 80, generator=torch.Generator().manual_seed(3))
    lens = torch.tensor([300, 250, 120])
    out = {}
    for d in ("cpu", dev):
        m = model.to(d)
        with torch.no_grad(), ieee_float32(torch.float32):  # no TF32 convolutions on the GPU
            enc, el = m.encode(feats.to(d), lens.to(d))
            out[d] = [search(meth, m, enc, el) for meth in ("greedy_search", "modified_beam_search")]
    return out["cpu"] == out[dev], "greedy and modified beam search hypotheses " + (
        "equal" if out["cpu"] == out[dev] else "differ")


CHECKS = {"extract": check_extract, "long": check_long, "quantizer": check_quantizer, "losses": check_losses,
          "train": check_train, "decode": check_decode}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true", help="small inputs (the CPU self-test)")
    p.add_argument("--only", nargs="*", default=list(CHECKS), choices=list(CHECKS))
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("FAIL setup: --device cuda but torch sees no GPU")
        return 1
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"gpu_check on {args.device} ({name}), torch {torch.__version__}")
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for check in args.only:
            t0 = time.time()
            try:
                ok, detail = CHECKS[check](args.device, args.quick, tmp)
            except Exception as e:  # a crash is a failure of that check, the others still run
                ok, detail = False, f"{type(e).__name__}: {e}"
                traceback.print_exc()
            failed += not ok
            print(f"{'PASS' if ok else 'FAIL'} {check}: {detail} ({time.time() - t0:.1f} s)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
