#!/usr/bin/env python
"""CPU benchmark of RNN-T loss implementations, forward + backward, side by side.

Compares, on the same random inputs:
  ours        mvqkd.losses.rnnt_loss (anti-diagonal alpha/beta, custom backward)
  ours-autograd  the same anti-diagonal alpha recursion, gradient by autograd
  reference   a plain Python double loop over (t, u) cells (vectorised over batch only)
  fast_rnnt / k2 / torchaudio  when importable ("not importable" otherwise)

Usage: python tools/bench_rnnt.py [--sizes 8x100x20x500,8x200x40x500] [--repeats 3]
Ratios are time(impl) / time(ours); the reference is skipped above --ref-max-cells.
"""

from __future__ import annotations

import argparse
import importlib
import time

import torch

from mvqkd.losses.rnnt import _masked_tables, _shift_right, _skew, gather_log_probs, rnnt_loss


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


def autograd_diagonal_loss(logits, targets, logit_lengths, target_lengths, blank=0):
    """Our alpha recursion without the custom backward (gradient through the loop)."""
    blank_lp, label_lp = gather_log_probs(logits, targets, blank)
    blank_m, label_m = _masked_tables(blank_lp, label_lp, logit_lengths, target_lengths)
    bs, ls = _skew(blank_m), _skew(label_m)
    B, U1 = bs.shape[1], bs.shape[2]
    alpha = torch.full((B, U1), float("-inf"), dtype=logits.dtype)
    alpha = alpha.index_fill(1, torch.tensor([0]), 0.0)
    alphas = [alpha]
    for n in range(1, bs.shape[0]):
        alpha = torch.logaddexp(alpha + bs[n - 1], _shift_right(alpha + ls[n - 1]))
        alphas.append(alpha)
    stacked = torch.stack(alphas)  # (N, B, U+1)
    end = stacked[(logit_lengths + target_lengths).long(), torch.arange(B), target_lengths.long()]
    return -end.mean()


def _optional(name):
    try:
        return importlib.import_module(name)
    except Exception:
        return None


def make_impls():
    impls = {
        "ours": lambda x, y, tl, ul: rnnt_loss(x, y, tl, ul),
        "ours-autograd": autograd_diagonal_loss,
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


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
