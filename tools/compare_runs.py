#!/usr/bin/env python
"""Did two runs of the demo (run.sh) produce the same models and labels?

Compares, between two run directories, the teacher (``exp/teacher/model.safetensors``),
every ``.pt`` and ``.h5`` file under ``data/vq``, ``data/kd`` and ``data/kd_pca``, and the
students' checkpoints ``exp/seed*/*/epoch-*.pt``; files missing from the second run are
skipped. Contents, not bytes, decide: each file gets a *content digest* (sha256 over its
tensors' names, dtypes, shapes and values, loaded with ``weights_only=True``; over an HDF5
file's dataset names and arrays; over the bytes of the safetensors file), so a quantizer
file's id or an HDF5 timestamp may differ while the contents are the same (byte equality
is shown too).

A run can also be checked against a *manifest* (one ``path<TAB>content digest`` line per
file), so that a later run can be compared with one whose directory is gone:

    python tools/compare_runs.py RUN_A RUN_B                  # two run directories
    python tools/compare_runs.py --write-manifest RUN > M.tsv # record a run's contents
    python tools/compare_runs.py M.tsv RUN_B                  # a run against a manifest
    python tools/compare_runs.py --skip-entry model_avg M.tsv RUN_B

``--skip-entry KEY`` leaves a top-level entry of every ``.pt`` file out of its digest: e.g.
``model_avg``, the running mean that ``mvqkd train --average-period`` stores beside the
weights, to compare the students of a run with it against a run without it.
Prints a markdown table and "N/M identical"; exit status 1 when any compared file differs.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path


def file_sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()[:16]


def _update(h, name: str, array) -> None:
    """Feed one named array (numpy) into the hash: its name, dtype, shape and bytes."""
    import numpy as np

    a = np.ascontiguousarray(array)
    h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
    h.update(a.tobytes())


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


def content_digest(p: Path, skip: tuple[str, ...] = ()) -> tuple[str, str]:
    """(digest of the file's contents, what was hashed) for a .pt, .h5 or other file; the
    top-level entries ``skip`` of a .pt file's dict are left out."""
    h = hashlib.sha256()
    if p.suffix == ".pt":
        import torch

        obj = torch.load(p, map_location="cpu", weights_only=True)
        if isinstance(obj, dict):
            obj = {k: v for k, v in obj.items() if k not in skip}
        named = dict(tensors(obj))
        for name in sorted(named):
            t = named[name].detach().cpu()
            _update(h, name, t.view(torch.uint8) if t.dtype == torch.bfloat16 else t.numpy())
        return h.hexdigest()[:16], f"{len(named)} tensors"
    if p.suffix == ".h5":
        import h5py

        arrays = {}

        def keep(name, obj):
            if isinstance(obj, h5py.Dataset):
                arrays[name] = obj[()]

        with h5py.File(p, "r") as f:
            f.visititems(keep)
        for name in sorted(arrays):
            _update(h, name, arrays[name])
        return h.hexdigest()[:16], f"{len(arrays)} arrays"
    return file_sha(p), "file bytes"


def files_to_compare(run: Path) -> list[Path]:
    rels = [Path("exp/teacher/model.safetensors")]
    for d in ("data/vq", "data/kd", "data/kd_pca"):
        rels += sorted(p.relative_to(run) for p in (run / d).rglob("*") if p.suffix in (".h5", ".pt"))
    rels += sorted(p.relative_to(run) for p in run.glob("exp/seed*/*/epoch-*.pt"))
    return [r for r in rels if (run / r).is_file()]


def read_manifest(path: Path) -> dict[str, str]:
    out = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 2:
            raise SystemExit(f"ERROR: {path}:{n}: expected 'path<TAB>digest', got {line!r}")
        out[parts[0]] = parts[1]
    return out


def digests(run: Path, skip: tuple[str, ...] = ()) -> dict[str, tuple[str, str, str]]:
    """path -> (content digest, file sha256, what) for every file of a run directory."""
    out = {}
    for rel in files_to_compare(run):
        digest, what = content_digest(run / rel, skip)
        out[str(rel)] = (digest, file_sha(run / rel), what)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_a", type=Path, help="a run directory, or a manifest written by --write-manifest")
    ap.add_argument("run_b", type=Path, nargs="?", help="the run directory to compare with it")
    ap.add_argument("--write-manifest", action="store_true", help="print RUN_A's manifest instead")
    ap.add_argument("--skip-entry", action="append", default=[], metavar="KEY",
                    help="leave this top-level entry of every .pt file out of its digest "
                         "(repeatable; e.g. model_avg)")
    args = ap.parse_args()
    skip = tuple(args.skip_entry)
    if args.write_manifest:
        print("# path\tcontent digest (tools/compare_runs.py)")
        for rel, (digest, _, _) in digests(args.run_a, skip).items():
            print(f"{rel}\t{digest}")
        return 0
    if args.run_b is None:
        ap.error("give two runs (or a manifest and a run), or --write-manifest RUN")
    if args.run_a.is_file():
        a = {rel: (d, None, "manifest") for rel, d in read_manifest(args.run_a).items()}
    else:
        a = digests(args.run_a, skip)
    b = digests(args.run_b, skip)
    rows = [(rel, a[rel][0] == b[rel][0], a[rel][1] == b[rel][1] if a[rel][1] else "-", b[rel][2])
            for rel in a if rel in b]
    print("| file | contents identical | bytes identical | compared |\n|---|---|---|---|")
    for rel, ok, same_bytes, what in rows:
        print(f"| {rel} | {ok} | {same_bytes} | {what} |")
    print(f"{sum(r[1] for r in rows)}/{len(rows)} identical")
    return 0 if all(r[1] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
