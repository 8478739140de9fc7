"""CLI for the quantizer layer: train-quantizer, quantize, quantizer-report, import-quantizer."""

from __future__ import annotations

import dataclasses
import json
import logging

from mvqkd.options import add_options, add_parser, from_args, user_errors
from mvqkd.quantizer.config import QuantizerConfig

logger = logging.getLogger("mvqkd.quantizer")


def _load(args):
    from mvqkd.quantizer.io import load_embeddings

    return load_embeddings(args.embeddings, max_frames=args.max_frames, drop_nonfinite=args.drop_nonfinite)


def _train(args) -> int:
    from mvqkd.quantizer.train import train_quantizer

    cfg = from_args(QuantizerConfig, args)
    if cfg.iters is not None and cfg.time_budget is not None:
        raise ValueError("give --iters or --time-budget, not both")
    x = _load(args)
    logger.info("training on %d frames of dim %d from %s", x.shape[0], x.shape[1], args.embeddings)
    q = train_quantizer(x, device=args.device, **dataclasses.asdict(cfg))
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


def _import(args) -> int:
    import torch

    from mvqkd.quantizer.imported import from_multi_quantization, is_multi_quantization_state

    try:
        state = torch.load(args.input, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # pickle / zip errors of all kinds
        raise ValueError(f"{args.input}: cannot read as a tensor state_dict ({type(e).__name__}: {e})") from e
    if not is_multi_quantization_state(state):
        keys = sorted(state)[:8] if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{args.input}: not a multi_quantization Quantizer state_dict (icefall saves "
                         f"torch.save(quantizer.state_dict(), path)); found {keys}")
    q = from_multi_quantization(state, source=args.input, encoder=args.encoder)
    q.save(args.out)
    print(f"Quantizer {q.id} ({q.num_codebooks} x {q.codebook_size}, dim {q.dim}, encoder {q.encoder}) "
          f"-> {args.out}")
    return 0


def _add_input(p) -> None:
    p.add_argument("--embeddings", required=True,
                   help="embeddings: .npy float array (frames, D) or HDF5 with one (T, D) array per "
                        "utterance (lhotse NumpyHdf5Writer)")
    p.add_argument("--max-frames", type=int, default=None, help="use at most this many frames")
    p.add_argument("--drop-nonfinite", action="store_true",
                   help="drop frames containing NaN/Inf (logging the count) instead of failing")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")


def register(subparsers) -> None:
    p = add_parser(
        subparsers, "train-quantizer",
        help="train an additive multi-codebook quantizer on teacher embeddings",
        description="Residual k-means init, then alternating beam-search encoding and joint "
                    "least-squares codebook updates, re-seeding dead codewords; keeps the model "
                    "with the best held-out relative error.",
        epilog="example:\n  mvqkd train-quantizer --embeddings data/vq/embeddings.h5 --num-codebooks 8 "
               "--iters 10 --out data/vq/quantizer.pt")
    _add_input(p)
    p.add_argument("--out", required=True, help="output quantizer file (.pt)")
    add_options(p, QuantizerConfig)
    p.set_defaults(func=user_errors(1)(_train))

    p = add_parser(subparsers, "quantize",
                   help="encode embeddings to codebook indexes (.npy, uint8 (frames, N))",
                   description="Encode the frames of an embeddings file with a quantizer.",
                   epilog="example:\n  mvqkd quantize --quantizer data/vq/quantizer.pt --embeddings "
                          "emb.npy --out codes.npy")
    p.add_argument("--quantizer", required=True, help="quantizer file from train-quantizer")
    _add_input(p)
    p.add_argument("--out", required=True, help="output .npy of codes (frames, N)")
    p.set_defaults(func=user_errors(1)(_quantize))

    p = add_parser(subparsers, "quantizer-report",
                   help="relative error, entropy/perplexity, dead codewords of a quantizer",
                   description="Measure a quantizer on embeddings (held-out ones, ideally).",
                   epilog="example:\n  mvqkd quantizer-report data/vq/quantizer.pt --embeddings "
                          "data/vq/embeddings.h5 --plot q.png")
    p.add_argument("quantizer", help="quantizer file from train-quantizer")
    _add_input(p)
    p.add_argument("--plot", default=None, help="write a PNG with the training curve and codeword usage")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=user_errors(1)(_report))

    p = add_parser(
        subparsers, "import-quantizer",
        help="convert a multi_quantization quantizer (icefall's MVQ recipe) to an mvqkd quantizer file",
        description="Reads torch.save(quantizer.state_dict()) of multi_quantization.Quantizer (what "
                    "icefall's recipe writes) with weights_only loading, and writes an mvqkd quantizer "
                    "that decodes every code to the same vector. It encodes with multi_quantization's "
                    "own encoder by default (index-identical to icefall; the package must be installed "
                    "when encoding); --encoder mvqkd uses mvqkd's beam search + ICM over the same "
                    "codebooks instead (no extra package; other codes, measured slightly worse "
                    "reconstruction on multi_quantization-trained codebooks). Every --quantizer "
                    "option also accepts the original file directly (default encoder).",
        epilog="example:\n  mvqkd import-quantizer icefall/exp/mem/quantizer.pt --out data/vq/quantizer.pt\n"
               "  mvqkd import-quantizer quantizer.pt --out q_mvqkd.pt --encoder mvqkd")
    p.add_argument("input", help="multi_quantization state_dict file (.pt)")
    p.add_argument("--out", required=True, help="output mvqkd quantizer file")
    p.add_argument("--encoder", choices=["multi_quantization", "mvqkd"], default="multi_quantization",
                   help="how the imported quantizer encodes embeddings")
    p.set_defaults(func=user_errors(1)(_import))
