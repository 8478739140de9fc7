"""The ``mvqkd`` command: a thin dispatcher over the library.

Each layer owns a ``commands`` module exposing ``register(subparsers)``, which
adds its sub-commands and sets ``func`` to a handler taking the parsed
``argparse.Namespace``. Command modules import nothing heavy at module level
(torch, lhotse, transformers are imported inside the handlers) so that
``mvqkd --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

#: one per layer, in the layer order of docs/DEVELOPING.md
COMMAND_MODULES = [
    "mvqkd.data.commands",
    "mvqkd.teacher.commands",
    "mvqkd.quantizer.commands",
    "mvqkd.indexes.commands",
    "mvqkd.training.commands",
    "mvqkd.decode.commands",
]


#: what ``MVQKD_PORTABLE_KERNELS=1`` sets (a value already in the environment wins): torch's
#: own CPU kernels at AVX2, MKL's conditional numerical reproducibility mode at AVX2, and the
#: AVX2 (Haswell) kernels of numpy's OpenBLAS (the PCA's SVD of ``reduce-embeddings``)
PORTABLE_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2,STRICT", "OPENBLAS_CORETYPE": "Haswell"}
_portable_applied = False


def portable_kernels() -> bool:
    """With ``MVQKD_PORTABLE_KERNELS=1``: the same CPU float results on every x86-64 processor
    with AVX2, whatever its newer instructions (AVX-512, AMX). torch's kernels, MKL and oneDNN
    otherwise pick code paths by processor, and a model trained with the same command and seed
    comes out different on another CPU (docs/RESULTS.md: "Runs D and E", and "Run AF" for AMD).
    Sets :data:`PORTABLE_ENV` (on a processor that is not Intel's MKL honours ``MKL_CBWR`` only
    after :func:`mvqkd.mkl_vendor.pin_mkl_branch`, called here) and turns oneDNN and NNPACK off
    (their convolutions then run as torch's own im2col + MKL GEMM; NNPACK, which torch picks
    for a batch of 16 or more, is a separate kernel library whose sums round differently and
    which MKL's mode does not cover). Logs the branch MKL reports, and warns if it is not AVX2.
    Must run before torch and numpy are imported; returns whether it applied (a second call in
    the same process, e.g. a second ``main()``, is a no-op that returns True). On a processor
    the setting cannot apply to (another architecture, or x86-64 without AVX2 / FMA, where its
    kernels would stop with an illegal instruction: :func:`mvqkd.mkl_vendor.unportable_reason`)
    it warns, sets nothing and returns False, so that the README's command runs there too."""
    global _portable_applied
    if os.environ.get("MVQKD_PORTABLE_KERNELS", "0") in ("", "0"):
        return False
    if _portable_applied:
        return True
    from mvqkd.mkl_vendor import mkl_branch, pin_mkl_branch, unportable_reason

    reason = unportable_reason()
    if reason:
        logging.getLogger(__name__).warning(
            "MVQKD_PORTABLE_KERNELS=1 not applied: %s. This processor's own kernels run, and results "
            "will differ in the last bits from those of x86-64 processors with AVX2 (the published "
            "tables); set MVQKD_PORTABLE_KERNELS=0 (run.sh --portable-kernels false) to silence this", reason)
        return False
    for lib in ("torch", "numpy"):
        if lib in sys.modules:
            raise RuntimeError(f"MVQKD_PORTABLE_KERNELS=1 must take effect before {lib} is imported")
    for key, value in PORTABLE_ENV.items():
        os.environ.setdefault(key, value)
    shim = pin_mkl_branch()  # a processor that is not Intel's: make MKL honour MKL_CBWR
    import torch

    torch.backends.mkldnn.enabled = False
    torch.backends.nnpack.set_flags(False)
    _portable_applied = True
    log = logging.getLogger(__name__)
    branch = mkl_branch()
    log.info("portable CPU kernels: %s (MKL branch: %s%s), oneDNN and NNPACK off",
             ", ".join(f"{k}={os.environ[k]}" for k in PORTABLE_ENV), branch,
             f", vendor check answered by {shim}" if shim else "")
    if branch is not None and os.environ["MKL_CBWR"] == PORTABLE_ENV["MKL_CBWR"] and branch != "AVX2 strict":
        log.warning("MKL runs its %s branch, not AVX2 strict: matrix products will differ in the last "
                    "bits from other processors'", branch)
    return True


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mvqkd",
        description=(
            "MVQ-KD toolkit: synthesise or prepare a corpus, extract teacher codebook "
            "indexes, train a transducer student that predicts them, decode and score."
        ),
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")
    parser.add_argument("--verbose", action="store_true",
                        help="debug logging, and third-party reports (transformers' load report)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verbose:
        os.environ["MVQKD_VERBOSE"] = "1"
        args.log_level = "DEBUG"
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s [%(name)s] %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    portable_kernels()
    rc = args.func(args)
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
