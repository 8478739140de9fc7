#!/usr/bin/env python3
"""How learnable are a quantizer's codes? Reconstruction error next to four measures of how
easily a model can predict the codes from the teacher embedding, side by side for several
quantizers on the same frames.

For each quantizer, on held-out utterances (the last quarter of the keys of --embeddings,
trained on the first three quarters):
- rel_err: relative reconstruction error ||x - decode(encode(x))||^2 / ||x - mean||^2;
- probe: a linear softmax per codebook from the standardised embedding (the simplest
  student head, trained here with Adam for --probe-steps steps): held-out cross-entropy,
  the codes' entropy H, "explained" = 1 - CE / H, and accuracy;
- noise: the share of code entries unchanged when 10% of each dimension's std is added as
  Gaussian noise;
- adjacent: the share of code entries equal to the next frame's (within utterances).

Usage:
  python tools/code_learnability.py --embeddings data/vq/embeddings.h5 \\
      --quantizer additive=data/vq/quantizer.pt --quantizer product=data/vq_pq/quantizer.pt
Deterministic for --seed; prints one markdown table.
"""

from __future__ import annotations

import argparse
import sys

import h5py
import numpy as np
import torch


def load_split(path: str, max_frames: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per-utterance (T, D) arrays: the first 3/4 of the keys for training, the rest held out."""
    with h5py.File(path, "r") as f:
        keys = sorted(f)
        arrays = [np.asarray(f[k], dtype=np.float32) for k in keys]
    cut = (3 * len(arrays)) // 4
    train, held = arrays[:cut], arrays[cut:]

    def limit(xs):
        out, n = [], 0
        for a in xs:
            if n >= max_frames:
                break
            out.append(a[: max_frames - n])
            n += out[-1].shape[0]
        return out

    return limit(train), limit(held)


def probe(x_tr, c_tr, x_ho, c_ho, num_codebooks, codebook_size, steps, seed):
    """Linear softmax probe per codebook: held-out (CE nats, entropy nats, accuracy)."""
    g = torch.Generator().manual_seed(seed)
    d = x_tr.shape[1]
    w = torch.nn.Linear(d, num_codebooks * codebook_size)
    torch.nn.init.normal_(w.weight, std=d ** -0.5, generator=g)
    torch.nn.init.zeros_(w.bias)
    opt = torch.optim.Adam(w.parameters(), lr=3e-3)
    for _ in range(steps):
        rows = torch.randint(0, x_tr.shape[0], (4096,), generator=g)
        logits = w(x_tr[rows]).view(-1, codebook_size)
        loss = torch.nn.functional.cross_entropy(logits, c_tr[rows].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        logits = w(x_ho).view(-1, codebook_size)
        ce = float(torch.nn.functional.cross_entropy(logits, c_ho.reshape(-1)))
        acc = float((logits.argmax(-1) == c_ho.reshape(-1)).float().mean())
    counts = torch.stack([torch.bincount(c_ho[:, m], minlength=codebook_size) for m in range(num_codebooks)])
    p = counts.float() / counts.sum(1, keepdim=True)
    entropy = float(torch.special.entr(p).sum(1).mean())
    return ce, entropy, acc


def measure(q, train, held, steps, seed) -> dict:
    x_tr, x_ho = torch.from_numpy(np.concatenate(train)), torch.from_numpy(np.concatenate(held))
    c_tr, c_ho = q.encode(x_tr).long(), q.encode(x_ho).long()
    rec = q.decode(c_ho)
    rel = float(((x_ho - rec) ** 2).sum() / ((x_ho - x_ho.mean(0)) ** 2).sum())
    mean, std = x_tr.mean(0), x_tr.std(0).clamp_min(1e-6)
    ce, h, acc = probe((x_tr - mean) / std, c_tr, (x_ho - mean) / std, c_ho, q.num_codebooks,
                       q.codebook_size, steps, seed)
    g = torch.Generator().manual_seed(seed + 1)
    noisy = q.encode(x_ho + 0.1 * std * torch.randn(x_ho.shape, generator=g)).long()
    same_noise = float((noisy == c_ho).float().mean())
    adjacent, n = 0.0, 0
    for a in held:
        c = q.encode(torch.from_numpy(a)).long()
        adjacent += float((c[1:] == c[:-1]).float().sum())
        n += c[1:].numel()
    return dict(rel_err=rel, ce=ce, entropy=h, explained=1 - ce / h, acc=acc, noise=same_noise,
                adjacent=adjacent / max(1, n), frames=(x_tr.shape[0], x_ho.shape[0]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--embeddings", required=True, help="HDF5 of per-utterance (T, D) embeddings")
    p.add_argument("--quantizer", action="append", required=True, metavar="NAME=PATH")
    p.add_argument("--max-frames", type=int, default=60000, help="frames per split (train / held-out)")
    p.add_argument("--probe-steps", type=int, default=400)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    from mvqkd.quantizer import load_quantizer

    torch.manual_seed(args.seed)
    train, held = load_split(args.embeddings, args.max_frames)
    print("| quantizer | bytes/frame | rel. error | probe CE / entropy (nats) | explained | probe acc. | "
          "unchanged under 10% noise | equal to next frame |")
    print("|---|---|---|---|---|---|---|---|")
    for spec in args.quantizer:
        name, _, path = spec.partition("=")
        q = load_quantizer(path)
        r = measure(q, train, held, args.probe_steps, args.seed)
        print(f"| {name} | {q.bits_per_frame / 8:.0f} | {r['rel_err']:.3f} | {r['ce']:.2f} / "
              f"{r['entropy']:.2f} | {100 * r['explained']:.0f}% | {100 * r['acc']:.0f}% | "
              f"{100 * r['noise']:.0f}% | {100 * r['adjacent']:.0f}% |", flush=True)
    print(f"\n(train / held-out frames: {r['frames'][0]} / {r['frames'][1]}; probe: linear softmax per "
          f"codebook from the standardised embedding, {args.probe_steps} Adam steps)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
