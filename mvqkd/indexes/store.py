"""The shard store: HDF5 shards through a lhotse writer, atomic renames, done markers.

Layout of an output directory::

    OUT/plan.json                      what was asked (a rerun must ask the same)
    OUT/shards/<field>-00000.h5        arrays of shard 0, keyed by cut id
    OUT/shards/cuts-00000.jsonl.gz     the cuts of shard 0 carrying the arrays
    OUT/shards/failed-00000.jsonl      per-cut errors of shard 0
    OUT/shards/00000.done              written last: shard 0 is complete

Every file is written under a ``.tmp`` name and renamed, and the done marker comes
after all renames, so a killed run never leaves a shard that looks complete; a rerun
redoes exactly the shards without a marker.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
from lhotse.features.io import NumpyHdf5Writer


class ShardWriter(NumpyHdf5Writer):
    """lhotse's ``NumpyHdf5Writer`` (same ``storage_type``, read back by lhotse's
    ``NumpyHdf5Reader``) writing compact object headers (``libver="latest"``) and,
    optionally, lossless gzip-compressed datasets."""

    def __init__(self, storage_path, compression: str | None = None):
        self.storage_path_ = Path(storage_path)
        self.hdf = h5py.File(self.storage_path_, mode="w", libver="latest")
        self.compression = compression

    def write(self, key: str, value: np.ndarray) -> str:
        opts = {"compression": self.compression, "shuffle": True} if self.compression else {}
        self.hdf.create_dataset(key, data=value, **opts)
        return key


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_jsonl(path: Path, records) -> None:
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


def read_jsonl(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def save_cuts_atomic(cuts, path: Path) -> None:
    """``cuts.to_file`` under a temporary name, then rename (suffix kept for lhotse)."""
    path = Path(path)
    tmp = path.with_name(".tmp-" + path.name)
    cuts.to_file(tmp)
    os.replace(tmp, path)


class ShardPaths:
    def __init__(self, out_dir: Path, field: str, index: int):
        d = Path(out_dir) / "shards"
        self.h5 = d / f"{field}-{index:05d}.h5"
        self.h5_tmp = d / f"{field}-{index:05d}.tmp.h5"
        self.cuts = d / f"cuts-{index:05d}.jsonl.gz"
        self.failed = d / f"failed-{index:05d}.jsonl"
        self.done = d / f"{index:05d}.done"

    def is_done(self) -> bool:
        return self.done.is_file()


def check_plan(out_dir: Path, plan: dict) -> None:
    """Write ``plan.json``, or check that an existing one asks for the same work."""
    path = Path(out_dir) / "plan.json"
    (Path(out_dir) / "shards").mkdir(parents=True, exist_ok=True)
    if path.is_file():
        old = json.loads(path.read_text())
        if old != plan:
            diff = sorted(k for k in set(old) | set(plan) if old.get(k) != plan.get(k))
            raise ValueError(
                f"{out_dir} holds a run with different settings ({', '.join(diff)}); "
                "rerun with the same arguments to resume, or choose a new --out-dir"
            )
        return
    atomic_write_text(path, json.dumps(plan, indent=1, sort_keys=True) + "\n")
