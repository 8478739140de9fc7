"""CLI for the quantizer layer: train-quantizer, quantize, quantizer-report."""

from __future__ import annotations

import argparse
import json
import logging

logger = logging.getLogger("mvqkd.quantizer")


def _load(args):
    from mvqkd.quantizer.io import load_embeddings

    return load_embeddings(args.embeddings, max_frames=args.max_frames, drop_nonfinite=args.drop_nonfinite)


def _train(args) -> int:
    from mvqkd.quantizer.train import train_quantizer

    x = _load(args)
    logger.info("training on %d frames of dim %d from %s", x.shape[0], x.shape[1], args.embeddings)
    q = train_quantizer(
        x, args.num_codebooks, args.codebook_size, iters=args.iters, time_budget=args.time_budget,
        seed=args.seed, device=args.device, method=args.method, estimator=args.estimator,
        beam=args.beam, icm_iters=args.icm_iters, normalize=args.normalize,
    )
    q.save(args.out)
    print(f"Quantizer {q.id} ({q.num_codebooks} x {q.codebook_size}, dim {q.dim}) -> {args.out}; "
          f"held-out relative error {q.history['heldout_rel_err']:.4f}")
    return 0


def _quantize(args) -> int:
    import numpy as np

    from mvqkd.quantizer.model import load_quantizer

    q = load_quantizer(args.quantizer, device=args.device)
    x = _load(args)
    codes = q.encode(x).cpu().numpy()
    np.save(args.out, codes)
    print(f"{codes.shape[0]} frames -> {args.out} ({codes.dtype}, {codes.shape[1]} codes/frame)")
    return 0


def _report(args) -> int:
    from mvqkd.quantizer.metrics import plot_training, report, usage_counts
    from mvqkd.quantizer.model import load_quantizer

    q = load_quantizer(args.quantizer, device=args.device)
    x = _load(args)
    r = report(q, x)
    if args.json:
        print(json.dumps(r, indent=1))
    else:
        print(f"quantizer {r['quantizer_id']}: {r['num_codebooks']} x {r['codebook_size']}, dim {r['dim']}, "
              f"{r['bits_per_frame']:.0f} bits/frame, {r['frames']} frames")
        print(f"relative error      {r['relative_error']:.4f}")
        print(f"dead codewords      {r['dead_total']} (of {r['num_codebooks'] * r['codebook_size']})")
        print(f"mean entropy (bits) {r['mean_entropy_bits']:.3f}")
        print("codebook  entropy_bits  perplexity  dead")
        for m, (e, p, d) in enumerate(zip(r["entropy_bits"], r["perplexity"], r["dead"])):
            print(f"{m:8d}  {e:12.3f}  {p:10.1f}  {d:4d}")
    if args.plot:
        import torch

        plot_training(q, args.plot, counts=usage_counts(q.encode(torch.as_tensor(x)), q.codebook_size))
        print(f"plot -> {args.plot}")
    return 0


def _add_input(p) -> None:
    p.add_argument("--embeddings", required=True,
                   help="embeddings: .npy float array (frames, D) or HDF5 with one (T, D) array per "
                        "utterance (lhotse NumpyHdf5Writer)")
    p.add_argument("--max-frames", type=int, default=None, help="use at most this many frames")
    p.add_argument("--drop-nonfinite", action="store_true",
                   help="drop frames containing NaN/Inf (logging the count) instead of failing")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")


def register(subparsers) -> None:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = subparsers.add_parser(
        "train-quantizer", formatter_class=fmt,
        help="train an additive multi-codebook quantizer on teacher embeddings",
        description="Residual k-means init, then alternating beam-search encoding and joint "
                    "least-squares codebook updates, re-seeding dead codewords; keeps the model "
                    "with the best held-out relative error.")
    _add_input(p)
    p.add_argument("--num-codebooks", type=int, required=True, help="N, one of 1 2 4 8 16 32 (bytes/frame)")
    p.add_argument("--codebook-size", type=int, default=256, help="K entries per codebook (<=256: uint8 codes)")
    p.add_argument("--out", required=True, help="output quantizer file (.pt)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--time-budget", type=float, default=None,
                   help="stop after this many wall-clock seconds and keep the best model so far")
    g.add_argument("--iters", type=int, default=None, help="training iterations (default 10)")
    p.add_argument("--seed", type=int, default=0, help="random seed (training is deterministic for it)")
    p.add_argument("--method", choices=["lsq", "sgd"], default="lsq",
                   help="lsq: alternating encode / joint least squares; sgd: Adam through --estimator")
    p.add_argument("--estimator", choices=["nsvq", "ste"], default="nsvq",
                   help="gradient estimator for --method sgd (NSVQ noise substitution or straight-through)")
    p.add_argument("--beam", type=int, default=4, help="beam width of the encoder search")
    p.add_argument("--icm-iters", type=int, default=1, help="ICM refinement passes after the beam search")
    p.add_argument("--normalize", choices=["global", "per-dim"], default="global",
                   help="input normalisation: global = subtract the per-dim mean, divide by one scale "
                        "(minimises the raw squared error); per-dim = standardise each dimension "
                        "(every dimension counts alike, as for L2-KD with --kd-normalize)")
    p.set_defaults(func=_handle(_train))

    p = subparsers.add_parser("quantize", formatter_class=fmt,
                              help="encode embeddings to codebook indexes (.npy, uint8 (frames, N))")
    p.add_argument("--quantizer", required=True, help="quantizer file from train-quantizer")
    _add_input(p)
    p.add_argument("--out", required=True, help="output .npy of codes (frames, N)")
    p.set_defaults(func=_handle(_quantize))

    p = subparsers.add_parser("quantizer-report", formatter_class=fmt,
                              help="relative error, entropy/perplexity, dead codewords of a quantizer")
    p.add_argument("quantizer", help="quantizer file from train-quantizer")
    _add_input(p)
    p.add_argument("--plot", default=None, help="write a PNG with the training curve and codeword usage")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_handle(_report))


def _handle(fn):
    """Wrap a handler: expected user errors become a logged message and exit code 1."""

    def run(args) -> int:
        try:
            return fn(args)
        except (ValueError, FileNotFoundError) as e:
            logger.error("%s", e)
            return 1

    return run
