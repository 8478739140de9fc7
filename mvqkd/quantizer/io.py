"""Reading embeddings for quantizer training / coding.

Accepted files:
- ``.npy``: a float array (frames, D);
- HDF5 (``.h5`` / ``.hdf5``, as lhotse's ``NumpyHdf5Writer`` writes it): one (T, D)
  float dataset per utterance, keyed by cut id; they are concatenated in key order.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


def _load_hdf5(path: Path, max_frames: int | None) -> np.ndarray:
    import h5py

    arrays, total, dims = [], 0, set()
    with h5py.File(path, "r") as f:
        keys = []
        f.visit(lambda k: keys.append(k) if isinstance(f[k], h5py.Dataset) else None)
        for k in sorted(keys):
            a = np.asarray(f[k])
            if a.ndim != 2:
                raise ValueError(f"{path}: dataset {k!r} has shape {a.shape}, expected (T, D)")
            dims.add(a.shape[1])
            if len(dims) > 1:
                raise ValueError(f"{path}: datasets have different dims {sorted(dims)} (at {k!r})")
            arrays.append(a)
            total += a.shape[0]
            if max_frames is not None and total >= max_frames:
                break
    if not arrays:
        raise ValueError(f"{path}: empty embeddings file (no (T, D) datasets)")
    return np.concatenate(arrays)


def load_embeddings(path, max_frames: int | None = None, drop_nonfinite: bool = False) -> np.ndarray:
    """Read embeddings as one (frames, D) float32 array.

    Args:
        path: ``.npy`` or HDF5 file.
        max_frames: keep at most this many frames (the first ones, in key order).
        drop_nonfinite: drop frames with NaN/Inf (logging how many) instead of failing.
    Raises:
        FileNotFoundError, ValueError (empty file, wrong shape, NaN/Inf rows).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"embeddings file not found: {path}")
    if path.suffix == ".npy":
        if path.stat().st_size == 0:
            raise ValueError(f"{path}: empty file (0 bytes); write the embeddings again "
                             "(mvqkd dump-embeddings)")
        try:
            x = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, EOFError, OSError) as e:
            raise ValueError(f"{path}: cannot read as a .npy array ({type(e).__name__}: {e}); "
                             "expected a float (frames, D) array or an HDF5 file from "
                             "mvqkd dump-embeddings") from None
        if x.ndim != 2:
            raise ValueError(f"{path}: array has shape {x.shape}, expected (frames, D)")
    else:
        try:
            x = _load_hdf5(path, max_frames)
        except OSError as e:
            raise ValueError(f"{path}: neither .npy nor a readable HDF5 file ({e})")
    if max_frames is not None:
        x = x[:max_frames]
    x = np.array(x, dtype=np.float32)  # copy: writable, off the memory map
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{path}: empty embeddings file (shape {x.shape})")
    finite = np.isfinite(x).all(1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        if not drop_nonfinite:
            raise ValueError(
                f"{path}: {len(bad)} of {x.shape[0]} frames contain NaN/Inf (first rows: "
                f"{bad[:5].tolist()}); pass drop_nonfinite=True (--drop-nonfinite) to drop them"
            )
        logger.warning("%s: dropped %d of %d frames containing NaN/Inf", path, len(bad), x.shape[0])
        x = x[finite]
        if x.shape[0] == 0:
            raise ValueError(f"{path}: no finite frames left")
    return x
