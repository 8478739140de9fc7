"""The shard store: HDF5 shards through a lhotse writer, atomic renames, done markers, a lock.

Layout of an output directory::

    OUT/plan.json                      what was asked, and what it depends on (quantizer id,
                                       teacher content hash, frame rule): a rerun must match
    OUT/.lock                          held by the running extraction (pid, host, start)
    OUT/shards/<field>-00000.h5        arrays of shard 0, keyed by cut id
    OUT/shards/cuts-00000.jsonl.gz     the cuts of shard 0 carrying the arrays
    OUT/shards/failed-00000.jsonl      per-cut errors of shard 0
    OUT/shards/00000.done              written last: shard 0 is complete

Every file is written under a temporary name, flushed to disk (fsync) and renamed, and
the done marker comes after all renames, so a killed run (or a full disk) never leaves a
shard that looks complete; a rerun redoes exactly the shards without a marker. A shard's
HDF5 image is built in memory and written with plain file writes, so a write error (disk
full, file-size limit) is a Python ``OSError`` naming the file, never a crash inside HDF5.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import h5py
import numpy as np
from lhotse.features.io import NumpyHdf5Writer


def fsync_write(path: Path, data: bytes | str) -> None:
    """Write ``path`` atomically: a temporary file, fsync, rename, fsync of the folder.

    Raises:
        OSError: naming ``path`` (the temporary file is removed).
    """
    path = Path(path)
    tmp = path.with_name(f".tmp-{os.getpid()}-" + path.name)
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OSError(e.errno, f"cannot write {path}: {e.strerror or e}") from e


class ShardWriter(NumpyHdf5Writer):
    """lhotse's ``NumpyHdf5Writer`` (same ``storage_type``, read back by lhotse's
    ``NumpyHdf5Reader``) with compact object headers (``libver="latest"``), optionally
    lossless gzip-compressed datasets, and the file built in memory: :meth:`close` writes
    it with :func:`fsync_write` (the shard's arrays are small next to the host's memory)."""

    def __init__(self, storage_path, compression: str | None = None):
        self.storage_path_ = Path(storage_path)
        self.hdf = h5py.File(self.storage_path_.name, mode="w", libver="latest", driver="core",
                             backing_store=False)
        self.compression = compression
        self._closed = False

    def write(self, key: str, value: np.ndarray) -> str:
        opts = {"compression": self.compression, "shuffle": True} if self.compression else {}
        self.hdf.create_dataset(key, data=value, **opts)
        return key

    def close(self) -> None:
        """Write the file (atomically) and release the in-memory image."""
        if self._closed:
            return
        self._closed = True
        self.hdf.flush()
        image = self.hdf.id.get_file_image()
        self.hdf.close()
        fsync_write(self.storage_path_, image)

    def discard(self) -> None:
        """Drop the in-memory file without writing anything."""
        if not self._closed:
            self._closed = True
            self.hdf.close()


def atomic_write_text(path: Path, text: str) -> None:
    fsync_write(path, text)


def write_jsonl(path: Path, records) -> None:
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


def read_jsonl(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def save_cuts_atomic(cuts, path: Path) -> None:
    """``cuts.to_file`` under a temporary name, fsync, rename (suffix kept for lhotse)."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{os.getpid()}-" + path.name)
    try:
        cuts.to_file(tmp)
        fsync_write(path, tmp.read_bytes())
    finally:
        tmp.unlink(missing_ok=True)


class ShardPaths:
    def __init__(self, out_dir: Path, field: str, index: int):
        d = Path(out_dir) / "shards"
        self.h5 = d / f"{field}-{index:05d}.h5"
        self.cuts = d / f"cuts-{index:05d}.jsonl.gz"
        self.failed = d / f"failed-{index:05d}.jsonl"
        self.done = d / f"{index:05d}.done"

    def is_done(self) -> bool:
        return self.done.is_file()


def check_plan(out_dir: Path, plan: dict) -> None:
    """Write ``plan.json``, or check that an existing one asks for the same work; a
    difference is refused with both values of every differing key."""
    path = Path(out_dir) / "plan.json"
    (Path(out_dir) / "shards").mkdir(parents=True, exist_ok=True)
    if path.is_file():
        old = json.loads(path.read_text())
        if old != plan:
            diff = sorted(k for k in set(old) | set(plan) if old.get(k) != plan.get(k))
            lines = "; ".join(f"{k}: was {old.get(k)!r}, now {plan.get(k)!r}" for k in diff)
            raise ValueError(
                f"{out_dir} holds a run with different settings ({lines}). Resuming would mix "
                "two kinds of arrays in one manifest: rerun with the same inputs, or choose a "
                "new --out-dir"
            )
        return
    atomic_write_text(path, json.dumps(plan, indent=1, sort_keys=True) + "\n")


class OutDirLock:
    """``OUT/.lock``, created exclusively: a second extraction into the same folder is
    refused (without relying on HDF5's file locking, which NFS setups often disable). A
    lock left by a process that no longer runs on this host is taken over with a warning."""

    def __init__(self, out_dir: Path):
        self.path = Path(out_dir) / ".lock"
        self.held = False

    def _owner(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def _stale(self, owner: dict) -> bool:
        if owner.get("host") != socket.gethostname():
            return False
        try:
            os.kill(int(owner.get("pid", -1)), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, ValueError):
            return False
        return False

    def acquire(self) -> None:
        import logging

        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()})
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if self._stale(owner):
                    logging.getLogger(__name__).warning(
                        "%s: taking over the lock of process %s, which no longer runs", self.path,
                        owner.get("pid"))
                    self.path.unlink(missing_ok=True)
                    continue
                raise RuntimeError(
                    f"{self.path.parent} is being written by another extraction (process "
                    f"{owner.get('pid')} on {owner.get('host')}); wait for it to finish, or use "
                    f"another --out-dir. If no such process runs, remove {self.path}"
                ) from None
            with os.fdopen(fd, "w") as f:
                f.write(me)
            self.held = True
            return

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()
