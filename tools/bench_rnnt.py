#!/usr/bin/env python
"""CPU benchmark of RNN-T loss implementations, forward + backward, side by side.

Compares, on the same random inputs:
  ours        mvqkd.losses.rnnt_loss (anti-diagonal alpha/beta, custom backward)
  reference   a plain Python double loop over (t, u) cells (vectorised over batch only)
  fast_rnnt / k2 / torchaudio  when importable ("not importable" otherwise)

Usage: python tools/bench_rnnt.py [--sizes 8x100x20x500,8x200x40x500] [--repeats 3]
Ratios are time(impl) / time(ours); the reference is skipped above --ref-max-cells.

With --joiner-shapes BxTxUxV[,...] it compares instead the full and the pruned transducer
loss of the reference student's joiner (512-dim encoder / predictor / joiner, V from the
shape), forward + backward through the joiner, each in its own process: wall time and peak
memory (the growth of the process's maximum RSS on CPU, torch.cuda.max_memory_allocated on
a GPU), side by side. LibriSpeech batch: 20x375x60x500 (20 utterances of 15 s).
"""

from __future__ import annotations

import argparse
import importlib
import time

import torch

from mvqkd.losses.rnnt import gather_log_probs, rnnt_loss


def reference_loss(logits, targets, logit_lengths, target_lengths, blank=0):
    """Straightforward DP: Python loops over t and u, each cell vectorised over the batch."""
    blank_lp, label_lp = gather_log_probs(logits, targets, blank)
    B, T, U1 = blank_lp.shape
    neg = torch.full((B,), float("-inf"), dtype=logits.dtype)
    alpha = [[None] * U1 for _ in range(T)]
    for t in range(T):
        for u in range(U1):
            if t == 0 and u == 0:
                alpha[t][u] = torch.zeros(B, dtype=logits.dtype)
                continue
            a = alpha[t - 1][u] + blank_lp[:, t - 1, u] if t > 0 else neg
            b = alpha[t][u - 1] + label_lp[:, t, u - 1] if u > 0 else neg
            alpha[t][u] = torch.logaddexp(a, b)
    out = []
    for b_ in range(B):
        t, u = int(logit_lengths[b_]) - 1, int(target_lengths[b_])
        out.append(alpha[t][u][b_] + blank_lp[b_, t, u])
    return -torch.stack(out).mean()


def _optional(name):
    try:
        return importlib.import_module(name)
    except Exception:
        return None


def make_impls():
    impls = {
        "ours": lambda x, y, tl, ul: rnnt_loss(x, y, tl, ul),
        "reference": reference_loss,
    }
    for name in ("fast_rnnt", "k2"):
        mod = _optional(name)
        if mod is None:
            impls[name] = None
            continue

        def run(x, y, tl, ul, mod=mod):
            boundary = torch.zeros(x.shape[0], 4, dtype=torch.int64)
            boundary[:, 2], boundary[:, 3] = ul, tl
            return mod.rnnt_loss(logits=x, symbols=y.long(), termination_symbol=0,
                                 boundary=boundary, reduction="mean")

        impls[name] = run
    ta = _optional("torchaudio.functional")
    impls["torchaudio"] = (
        None if ta is None else lambda x, y, tl, ul: ta.rnnt_loss(x, y.int(), tl.int(), ul.int())
    )
    return impls


def time_once(fn, logits, targets, tl, ul):
    x = logits.detach().clone().requires_grad_(True)
    t0 = time.perf_counter()
    loss = fn(x, targets, tl, ul)
    loss.backward()
    return time.perf_counter() - t0, float(loss.detach())


def joiner_case(shape: str, device: str, seed: int = 0):
    """Inputs of the reference student's joiner at ``shape`` BxTxUxV."""
    from mvqkd.student.decoder import Joiner

    B, T, U, V = (int(v) for v in shape.split("x"))
    g = torch.Generator().manual_seed(seed)
    enc = torch.randn(B, T, 512, generator=g)
    dec = torch.randn(B, U + 1, 512, generator=g)
    targets = torch.randint(1, V, (B, U), generator=g)
    tl = torch.randint(T * 3 // 4, T + 1, (B,), generator=g)
    ul = torch.randint(U * 3 // 4, U + 1, (B,), generator=g)
    tl[0], ul[0] = T, U
    torch.manual_seed(seed)
    joiner = Joiner(512, 512, 512, V)
    return [x.to(device) for x in (enc, dec, targets, tl, ul)] + [joiner.to(device)]


def run_one(kind: str, shape: str, device: str) -> dict:
    """One forward + backward of the ``full`` or ``pruned`` loss; time and peak memory."""
    import resource

    from mvqkd.student.pruned import PrunedRnntLoss

    enc, dec, targets, tl, ul, joiner = joiner_case(shape, device)
    enc.requires_grad_(True)
    dec.requires_grad_(True)
    pruned = PrunedRnntLoss(512, 512, joiner.output_linear.out_features).to(device)
    decoder = lambda y, need_pad=True: dec  # noqa: E731 (the predictor output is given)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    if kind == "full":
        logits = joiner(enc.unsqueeze(2), dec.unsqueeze(1))
        loss = rnnt_loss(logits, targets.int(), tl.int(), ul.int())
    else:
        simple, loss = pruned(joiner, decoder, enc, tl, targets, ul, 0)
        loss = 0.5 * simple + loss
    loss.backward()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2 ** 20
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024
    return {"seconds": time.perf_counter() - t0, "peak_mib": peak, "loss": float(loss)}


def joiner_table(shapes: str, device: str, threads: int) -> None:
    import json
    import subprocess
    import sys

    print(f"full vs pruned transducer loss, reference joiner (512), forward+backward, {device}, "
          f"threads={threads}, each in a fresh process")
    print("| B x T x U x V | full: time, peak | pruned: time, peak | pruned / full: time, memory |")
    print("|---|---|---|---|")
    for shape in shapes.split(","):
        res = {}
        for kind in ("full", "pruned"):
            out = subprocess.run([sys.executable, __file__, "--one", kind, "--joiner-shapes", shape,
                                  "--device", device, "--threads", str(threads)],
                                 capture_output=True, text=True)
            res[kind] = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else None
            if res[kind] is None:
                print(f"({kind} at {shape} failed: {out.stderr.strip().splitlines()[-1][:200]})")
        f, p_ = res["full"], res["pruned"]
        cell = lambda r: f"{r['seconds']:.2f} s, {r['peak_mib']:.0f} MiB" if r else "failed"  # noqa: E731
        ratio = (f"{p_['seconds'] / f['seconds']:.3f}x, {p_['peak_mib'] / f['peak_mib']:.3f}x"
                 if f and p_ else "-")
        print(f"| {shape} | {cell(f)} | {cell(p_)} | {ratio} |", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--joiner-shapes", default=None, help="full vs pruned with the reference joiner "
                   "at these BxTxUxV shapes (e.g. 20x375x60x500,20x750x120x500)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    p.add_argument("--sizes", default="8x100x20x500,8x200x40x500,8x300x60x500",
                   help="comma-separated BxTxUxV sizes")
    p.add_argument("--repeats", type=int, default=3,
                   help="timed runs per size, interleaved across implementations (best is kept; "
                        "the slow reference runs once)")
    p.add_argument("--ref-max-cells", type=int, default=8200,
                   help="skip the Python double-loop reference when T*(U+1) exceeds this")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.one:
        import json

        print(json.dumps(run_one(args.one, args.joiner_shapes, args.device)))
        return
    if args.joiner_shapes:
        joiner_table(args.joiner_shapes, args.device, args.threads)
        return
    torch.manual_seed(0)
    impls = make_impls()
    print(f"torch {torch.__version__}, threads={args.threads}, best of {args.repeats}, forward+backward, CPU")
    for name, fn in impls.items():
        if fn is None:
            print(f"  {name}: not importable")
    header = f"{'B x T x U x V':>18} | " + " | ".join(f"{n:>24}" for n, f in impls.items() if f)
    print(header)
    print("-" * len(header))
    for size in args.sizes.split(","):
        B, T, U, V = (int(v) for v in size.split("x"))
        logits = torch.randn(B, T, U + 1, V)
        targets = torch.randint(1, V, (B, U), dtype=torch.int32)
        tl = torch.randint(T // 2, T + 1, (B,))
        ul = torch.randint(U // 2, U + 1, (B,))
        tl[0], ul[0] = T, U
        times, losses = {}, {}
        # repetitions are interleaved across implementations so that load changes on a
        # shared machine hit them alike; the best time of each is kept
        for rep in range(args.repeats):
            for name, fn in impls.items():
                if fn is None or (name == "reference" and (rep > 0 or T * (U + 1) > args.ref_max_cells)):
                    continue
                dt, losses[name] = time_once(fn, logits, targets, tl, ul)
                times[name] = min(dt, times.get(name, float("inf")))
        base = times["ours"]
        cells = []
        for name, fn in impls.items():
            if fn is None:
                continue
            if name not in times:
                cells.append(f"{'skipped':>24}")
                continue
            diff = abs(losses[name] - losses["ours"])
            cells.append(f"{times[name]:7.3f}s x{times[name] / base:6.2f} d={diff:.0e}")
        print(f"{size:>18} | " + " | ".join(cells))
    print("xR = time / time(ours); d = |loss - loss(ours)| (mean over batch)")


if __name__ == "__main__":
    main()
