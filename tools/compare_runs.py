#!/usr/bin/env python
"""Did two runs of the demo (run.sh) produce the same models and labels?

Compares, between two run directories, the teacher (``exp/teacher/model.safetensors`` by
sha256), every ``.pt`` (tensors by ``torch.equal``, loaded with ``weights_only=True``) and
``.h5`` file (arrays by ``numpy.array_equal``) under ``data/vq``, ``data/kd`` and
``data/kd_pca``, and the students' checkpoints ``exp/seed*/*/epoch-*.pt`` (their tensors);
files missing from the second run are skipped. Contents, not bytes, decide: a quantizer
file's id or an HDF5 timestamp may differ while every tensor is the same (both are shown).

    python tools/compare_runs.py RUN_A RUN_B
Prints a markdown table and "N/M identical"; exit status 1 when any compared file differs.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()[:16]


def same_h5(a: Path, b: Path) -> tuple[bool, str]:
    import h5py
    import numpy as np

    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        if sorted(fa) != sorted(fb):
            return False, "different keys"
        return all(np.array_equal(fa[k][()], fb[k][()]) for k in fa), f"{len(fa)} arrays"


def tensors(obj, prefix=""):
    import torch

    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from tensors(v, f"{prefix}/{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from tensors(v, f"{prefix}/{i}")


def same_pt(a: Path, b: Path) -> tuple[bool, str]:
    import torch

    ta = dict(tensors(torch.load(a, map_location="cpu", weights_only=True)))
    tb = dict(tensors(torch.load(b, map_location="cpu", weights_only=True)))
    if ta.keys() != tb.keys():
        return False, "different tensor names"
    return all(torch.equal(ta[k], tb[k]) for k in ta), f"{len(ta)} tensors"


def files_to_compare(run: Path) -> list[Path]:
    rels = [Path("exp/teacher/model.safetensors")]
    for d in ("data/vq", "data/kd", "data/kd_pca"):
        rels += sorted(p.relative_to(run) for p in (run / d).rglob("*") if p.suffix in (".h5", ".pt"))
    rels += sorted(p.relative_to(run) for p in run.glob("exp/seed*/*/epoch-*.pt"))
    return rels


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_a", type=Path)
    ap.add_argument("run_b", type=Path)
    args = ap.parse_args()
    rows = []
    for rel in files_to_compare(args.run_a):
        a, b = args.run_a / rel, args.run_b / rel
        if not a.is_file() or not b.is_file():
            continue
        sha_a, sha_b = sha(a), sha(b)
        if a.suffix == ".h5":
            ok, what = same_h5(a, b)
        elif a.suffix == ".pt":
            ok, what = same_pt(a, b)
        else:
            ok, what = sha_a == sha_b, f"sha256 {sha_a}"
        rows.append((rel, ok, sha_a == sha_b, what))
    print("| file | contents identical | bytes identical | compared |\n|---|---|---|---|")
    for rel, ok, same_bytes, what in rows:
        print(f"| {rel} | {ok} | {same_bytes} | {what} |")
    print(f"{sum(r[1] for r in rows)}/{len(rows)} identical")
    return 0 if all(r[1] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
