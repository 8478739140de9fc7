#!/usr/bin/env python
"""Training-step benchmarks of the student.

Default: codebook-head overhead: training-step time of the same student with and without it.

Both models (same preset, same seed; one with ``num_codebooks=N``, one with 0) train on
the same random batch (features (B, T, 80), random transcripts, random indexes (B, T50, N)),
forward + backward + AdamW step. The two are timed alternately, step by step, in one
process; the median and the minimum step times are compared (on a shared machine the
minimum is the least disturbed). Target: overhead <= 5%.

    python tools/bench_train.py --model-size small --batch-size 8 --seconds 10 --steps 10

``--compare loss-amp``: one training step (forward + backward + AdamW) of a student at a
LibriSpeech-like batch (default: the reference 12 x 512 student, 20 utterances of 15 s,
U = 60 tokens of a 500-piece BPE, 8 x 256 codebook indexes), full vs pruned transducer
loss, float32 vs bfloat16 autocast, each configuration in a fresh process: step time (best
of --steps after --warmup) and peak RSS of the process; plus the FLOPs of one float32 step
(torch's FlopCounterMode) for GPU estimates.

    python tools/bench_train.py --compare loss-amp --model-size reference --batch-size 20 --seconds 15

``--compare override``: what a model override saves or costs per training step. Two students
of the same preset and seed (the preset's own fields: e.g. no sigma-Reparam, the linear
codebook head), one with the ``--override KEY=VALUE`` fields (the names of ``mvqkd train
--model-override``), train on the same batch, timed alternately step by step in one process
(like the head comparison). With ``MVQKD_PORTABLE_KERNELS=1`` in the environment, the kernels
of the recipe's students; a batch of the demo recipe (``--max-duration 20``) is about 6
utterances of 3.4 s with 256 BPE pieces:

    MVQKD_PORTABLE_KERNELS=1 OMP_NUM_THREADS=1 python tools/bench_train.py --compare override \
        --model-size demo --batch-size 6 --seconds 3.4 --vocab-size 256 --override subsampling_channels=32

``--compare depthwise``: the student's depthwise convolutions as ``nn.Conv1d`` against
``mvqkd.student.depthwise``'s tap-loop forward (taken with oneDNN off, i.e. in the portable
setting), two copies of one student on one batch, alternating; then whether their weights are
still identical (the loop keeps the convolution's floats and its backward):

    MVQKD_PORTABLE_KERNELS=1 OMP_NUM_THREADS=1 python tools/bench_train.py --compare depthwise \
        --model-size demo --batch-size 6 --seconds 3.4 --vocab-size 256 --steps 40 --warmup 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from mvqkd.cli import portable_kernels

portable_kernels()  # MVQKD_PORTABLE_KERNELS=1: the recipe's kernels; it must run before torch loads
import torch  # noqa: E402

from mvqkd.conventions import FBANK_FRAME_SHIFT, NUM_MEL_BINS, num_frames  # noqa: E402


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_batch(batch_size, seconds, vocab, num_codebooks, codebook_size, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    T = num_frames(seconds, FBANK_FRAME_SHIFT)
    feats = torch.randn(batch_size, T, NUM_MEL_BINS, generator=g)
    lens = torch.full((batch_size,), T, dtype=torch.long)
    tokens = [torch.randint(3, vocab, (int(seconds * 3),), generator=g).tolist()
              for _ in range(batch_size)]
    idx = torch.randint(0, codebook_size, (batch_size, num_frames(seconds), num_codebooks),
                        generator=g)
    return feats.to(device), lens.to(device), tokens, idx.to(device)


def _model_and_optimizer(args, device, **fields):
    """A student of ``args.model_size`` (seed 0, dropout 0, ``args``' codebooks; ``fields``
    replace any config field) in training mode, and its AdamW."""
    from mvqkd.student import build_model, preset_config

    torch.manual_seed(0)
    cfg = preset_config(args.model_size, args.vocab_size, **{
        "num_codebooks": args.num_codebooks, "codebook_size": args.codebook_size, "dropout": 0.0,
        **fields})
    model = build_model(cfg).to(device).train()
    return model, torch.optim.AdamW(model.parameters(), lr=1e-4)


def _timed_step(model, opt, batch, indexes, device) -> float:
    """Seconds of one forward + backward + AdamW step on ``batch`` = (feats, lens, tokens)
    with codebook ``indexes`` (or None)."""
    feats, lens, tokens = batch
    _sync(device)
    t0 = time.perf_counter()
    out = model(feats, lens, tokens, codebook_indexes=indexes)
    opt.zero_grad(set_to_none=True)
    out["loss"].backward()
    opt.step()
    _sync(device)
    return time.perf_counter() - t0


def alternate(step, names, warmup: int, steps: int) -> dict:
    """``{name: [seconds of each timed step]}``: ``step(name)`` for each name in turn, the order
    reversed every other round (so neither side always runs right after the other), the
    first ``warmup`` rounds untimed."""
    times = {name: [] for name in names}
    for i in range(warmup + steps):
        for name in (names if i % 2 == 0 else list(reversed(names))):
            t = step(name)
            if i >= warmup:
                times[name].append(t)
    return times


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    from mvqkd.student.config import PRESETS

    p.add_argument("--model-size", default="small", choices=list(PRESETS),
                   help="student preset")
    p.add_argument("--batch-size", type=int, default=8, help="utterances per batch")
    p.add_argument("--seconds", type=float, default=10.0, help="duration of each utterance")
    p.add_argument("--vocab-size", type=int, default=500, help="BPE vocabulary size")
    p.add_argument("--num-codebooks", type=int, default=8,
                   help="teacher codebooks N (the head predicts 2N per student frame)")
    p.add_argument("--codebook-size", type=int, default=256, help="entries per codebook")
    p.add_argument("--steps", type=int, default=10, help="timed steps per model")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per model first")
    p.add_argument("--head-reps", type=int, default=20,
                   help="timed forward+backward runs of the head alone")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--compare", choices=["head", "loss-amp", "override", "depthwise"], default="head",
                   help="head: codebook-head overhead; loss-amp: full/pruned x fp32/bf16 steps; "
                        "override: the preset against the preset with --override; depthwise: "
                        "nn.Conv1d against the tap loop (same weights after)")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="override: a student config field (repeatable), as mvqkd train's "
                        "--model-override")
    p.add_argument("--tokens", type=int, default=60, help="loss-amp: tokens per utterance (U)")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # LOSS,AMP in a child process
    p.add_argument("--flops", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one or args.flops:
        return child_step(args)
    if args.compare == "loss-amp":
        return compare_loss_amp(args)
    if args.compare == "override":
        return compare_override(args)
    if args.compare == "depthwise":
        return compare_depthwise(args)

    device = torch.device(args.device)
    models, opts = {}, {}
    for name, n in (("with head", args.num_codebooks), ("without head", 0)):
        models[name], opts[name] = _model_and_optimizer(args, device, num_codebooks=n)
    feats, lens, tokens, idx = make_batch(args.batch_size, args.seconds, args.vocab_size,
                                          args.num_codebooks, args.codebook_size, device)

    def step(name):
        return _timed_step(models[name], opts[name], (feats, lens, tokens),
                           idx if name == "with head" else None, device)

    times = alternate(step, list(models), args.warmup, args.steps)
    # The head on its own (forward + backward on a distill-layer-shaped input, the same
    # op sizes as inside the step), timed many times: the least noisy estimate on a busy CPU.
    head = models["with head"].codebook_head
    enc_frames = int(models["with head"].encoder(feats[:1], lens[:1]).out.shape[1])
    x = torch.randn(args.batch_size, enc_frames, head.weight.shape[-1], device=device,
                    requires_grad=True)
    tgt = torch.randint(0, args.codebook_size, (args.batch_size, enc_frames, 2 * args.num_codebooks),
                        device=device)
    head_times = []
    for _ in range(args.head_reps):
        _sync(device)
        t0 = time.perf_counter()
        head(x, tgt).backward()
        _sync(device)
        head_times.append(time.perf_counter() - t0)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    best = {name: min(ts) for name, ts in times.items()}
    n_params = {name: sum(p.numel() for p in m.parameters()) / 1e6 for name, m in models.items()}
    print(f"device {device}, model {args.model_size}, batch {args.batch_size} x {args.seconds}s, "
          f"N={args.num_codebooks} x K={args.codebook_size}, {args.steps} timed steps each")
    for name in models:
        print(f"  {name:13s}: median step {med[name] * 1000:8.1f} ms, min {best[name] * 1000:8.1f} ms"
              f"  ({n_params[name]:.2f}M params)")
    # On a shared machine, the minimum is the least disturbed estimate; both are printed.
    print(f"  head alone (forward + backward): min {min(head_times) * 1000:.1f} ms over "
          f"{args.head_reps} runs = {100 * min(head_times) / best['without head']:.1f}% of the "
          f"fastest step without head")
    for label, d in (("median", med), ("min", best)):
        ratio = d["with head"] / d["without head"]
        print(f"ratio with/without head ({label}): {ratio:.3f} "
              f"(overhead {100 * (ratio - 1):+.1f}%, target <= +5%)")
    return 0


def _reference_batch(args):
    feats, lens, _, idx = make_batch(args.batch_size, args.seconds, args.vocab_size, args.num_codebooks,
                                     args.codebook_size, torch.device(args.device))
    g = torch.Generator().manual_seed(1)
    tokens = [torch.randint(3, args.vocab_size, (args.tokens,), generator=g).tolist()
              for _ in range(args.batch_size)]
    return feats, lens, tokens, idx


def child_step(args) -> int:
    """One configuration in this process: prints a JSON line (step seconds, peak RSS MiB) or,
    with --flops, the FLOPs of one float32 forward + backward."""
    import json
    import resource

    from mvqkd.training.student import amp_context

    loss_kind, amp = (args.one or "full,none").split(",")
    model, opt = _model_and_optimizer(args, torch.device(args.device), rnnt_loss=loss_kind,
                                      rnnt_warmup_steps=0)
    feats, lens, tokens, idx = _reference_batch(args)
    autocast, _ = amp_context(amp, torch.device(args.device))

    def step():
        _sync(torch.device(args.device))
        t0 = time.perf_counter()
        with autocast():
            out = model(feats, lens, tokens, codebook_indexes=idx)
        opt.zero_grad(set_to_none=True)
        out["loss"].float().backward()
        opt.step()
        _sync(torch.device(args.device))
        return time.perf_counter() - t0

    if args.flops:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            with autocast():
                out = model(feats, lens, tokens, codebook_indexes=idx)
            out["loss"].backward()
        print(json.dumps({"flops": counter.get_total_flops(),
                          "params": sum(p.numel() for p in model.parameters())}))
        return 0
    times = [step() for _ in range(args.warmup + args.steps)][args.warmup:]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if torch.device(args.device).type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2 ** 20
    print(json.dumps({"seconds": min(times), "peak_mib": peak}))
    return 0


def compare_loss_amp(args) -> int:
    import json
    import subprocess

    base = [sys.executable, __file__, "--model-size", args.model_size, "--batch-size", str(args.batch_size),
            "--seconds", str(args.seconds), "--tokens", str(args.tokens), "--vocab-size", str(args.vocab_size),
            "--num-codebooks", str(args.num_codebooks), "--steps", str(args.steps), "--warmup",
            str(args.warmup), "--device", args.device]

    def child(extra):
        out = subprocess.run(base + extra, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            return {"error": (out.stderr.strip().splitlines() or ["?"])[-1][:200]}
        return json.loads(out.stdout.strip().splitlines()[-1])

    print(f"training step, {args.model_size} student, {args.batch_size} x {args.seconds:g} s, U={args.tokens}, "
          f"V={args.vocab_size}, {args.num_codebooks} x {args.codebook_size} indexes, {args.device}, "
          f"threads={torch.get_num_threads()}, best of {args.steps} after {args.warmup} warm-up, "
          "each configuration in a fresh process")
    print("| loss | precision | step time | peak memory (MiB) |")
    print("|---|---|---|---|")
    res = {}
    for loss_kind in ("full", "pruned"):
        for amp in ("none", "bf16"):
            r = res[(loss_kind, amp)] = child(["--one", f"{loss_kind},{amp}"])
            cell = (f"{r['seconds']:.2f} s | {r['peak_mib']:.0f}" if "seconds" in r else f"failed: {r['error']} | -")
            print(f"| {loss_kind} | {'float32' if amp == 'none' else 'bf16 autocast'} | {cell} |", flush=True)
    f32, pr = res[("full", "none")], res[("pruned", "none")]
    if "seconds" in f32 and "seconds" in pr:
        print(f"pruned / full (float32): time {pr['seconds'] / f32['seconds']:.3f}x, "
              f"peak memory {pr['peak_mib'] / f32['peak_mib']:.3f}x")
    for loss_kind in ("full", "pruned"):
        fl = child(["--flops", "--one", f"{loss_kind},none"])
        if "flops" in fl:
            print(f"FLOPs of one float32 step ({loss_kind} loss, forward + backward): {fl['flops'] / 1e9:.1f} "
                  f"GFLOP ({fl['params'] / 1e6:.1f} M parameters)")
    return 0


def compare_override(args) -> int:
    """The preset against the preset with ``args.override``: step times side by side."""
    from mvqkd.training.setup import parse_overrides

    if not args.override:
        raise SystemExit("--compare override needs at least one --override KEY=VALUE")
    device = torch.device(args.device)
    try:
        changed = parse_overrides(args.override)
    except ValueError as e:
        raise SystemExit(f"bench_train.py: {e}") from None
    models, opts = {}, {}
    for name, extra in (("preset", {}), ("override", changed)):
        models[name], opts[name] = _model_and_optimizer(args, device, **extra)
    feats, lens, tokens, idx = make_batch(args.batch_size, args.seconds, args.vocab_size,
                                          args.num_codebooks, args.codebook_size, device)

    def step(name):
        return _timed_step(models[name], opts[name], (feats, lens, tokens), idx, device)

    times = alternate(step, list(models), args.warmup, args.steps)
    labels = {"preset": "preset", "override": ", ".join(f"{k}={v}" for k, v in changed.items())}
    _report(args, device, models, times, labels, "override / preset")
    return 0


def compare_depthwise(args) -> int:
    """The student's depthwise convolutions as ``nn.Conv1d`` against the tap loop's forward
    (``mvqkd.student.depthwise``, taken with oneDNN off: ``MVQKD_PORTABLE_KERNELS=1``): step
    times side by side, and whether the two students, the same at the start and trained on the
    same batch, end with the same weights (they should: the loop keeps the convolution's
    floats and backward)."""
    import mvqkd.student.decoder as decoder_module
    import mvqkd.student.encoder as encoder_module

    device = torch.device(args.device)
    loop = encoder_module.depthwise_conv1d
    variants = {"conv": lambda conv, x: conv(x), "loop": loop}
    models, opts = {}, {}
    for name in variants:
        models[name], opts[name] = _model_and_optimizer(args, device)
    feats, lens, tokens, idx = make_batch(args.batch_size, args.seconds, args.vocab_size,
                                          args.num_codebooks, args.codebook_size, device)

    def step(name):
        encoder_module.depthwise_conv1d = decoder_module.depthwise_conv1d = variants[name]
        try:
            return _timed_step(models[name], opts[name], (feats, lens, tokens), idx, device)
        finally:
            encoder_module.depthwise_conv1d = decoder_module.depthwise_conv1d = loop

    times = alternate(step, list(models), args.warmup, args.steps)
    labels = {"conv": "nn.Conv1d", "loop": "tap loop + conv backward"}
    _report(args, device, models, times, labels, "loop / conv")
    weights = [m.state_dict() for m in models.values()]
    same = sum(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    print(f"weights after {args.warmup + args.steps} steps each: {same} of {len(weights[0])} tensors "
          f"identical{'' if not torch.backends.mkldnn.enabled else ' (oneDNN on: both ran nn.Conv1d)'}")
    return 0


def _report(args, device, models, times, labels, ratio_name) -> None:
    """Median and minimum step of each model, then the ratio of the second to the first."""
    print(f"device {device}, threads {torch.get_num_threads()}, model {args.model_size}, batch "
          f"{args.batch_size} x {args.seconds:g} s, V={args.vocab_size}, {args.num_codebooks} x "
          f"{args.codebook_size} indexes, {args.steps} timed steps each, alternating")
    for name, m in models.items():
        print(f"  {labels[name]:30s}: median step {statistics.median(times[name]) * 1000:8.1f} ms, min "
              f"{min(times[name]) * 1000:8.1f} ms ({sum(p.numel() for p in m.parameters()) / 1e6:.2f}M params)")
    first, second = list(models)
    for label, f in (("median", statistics.median), ("min", min)):
        print(f"ratio {ratio_name} ({label}): {f(times[second]) / f(times[first]):.3f}")


if __name__ == "__main__":
    sys.exit(main())
