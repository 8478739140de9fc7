"""Verifying teacher labels (codebook indexes, float embeddings) whenever training reads them.

A label array is trusted only if it matches what extraction wrote: the storage file exists
(checked for every cut before step 1, :func:`missing_label_files`), and each array read has
the manifest's shape and dtype, codes below the codebook size, finite values, and the
CRC-32 stored next to it (``<field>_crc32``, :func:`mvqkd.conventions.checksum_field`),
:func:`check_labels`. An HDF5 shard truncated or rewritten while training runs reads back
as zeros or other values: the checksum catches it. A failure raises :class:`BadLabelsError`
naming the cut and the file; with ``--skip-bad-indexes`` the cut is skipped and logged.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

import numpy as np

from mvqkd.conventions import CODEBOOK_INDEXES, array_checksum, checksum_field, info_field

logger = logging.getLogger(__name__)


class BadLabelsError(ValueError):
    """Teacher labels that do not match their manifest (message names the cut and file)."""


def label_file(cut, field: str) -> str | None:
    """The storage file of a cut's label array (None for in-memory arrays)."""
    arr = (cut.custom or {}).get(field)
    inner = getattr(arr, "array", arr)
    return getattr(inner, "storage_path", None)


def missing_label_files(cuts, field: str) -> dict[str, list[str]]:
    """``{file: [cut ids]}`` for the label files that do not exist (one ``stat`` per file)."""
    by_file: dict[str, list[str]] = defaultdict(list)
    for cut in cuts:
        path = label_file(cut, field)
        if path:
            by_file[path].append(cut.id)
    return {p: ids for p, ids in by_file.items() if not Path(p).is_file()}


def _problem(cut, field: str, arr: np.ndarray) -> str | None:
    """What is wrong with a loaded label array, or None."""
    info = (cut.custom or {}).get(info_field(field)) or {}
    if arr.ndim != 2:
        return f"has shape {arr.shape}, expected (frames, N)"
    if field == CODEBOOK_INDEXES:
        n, k = info.get("num_codebooks"), int(info.get("codebook_size", 256))
        want = np.uint8 if k <= 256 else np.int16
        if n is not None and arr.shape[1] != int(n):
            return f"has {arr.shape[1]} codebooks, the manifest says {n}"
        if arr.dtype != want:
            return f"has dtype {arr.dtype}, expected {np.dtype(want)}"
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= k):
            return f"holds codes outside [0, {k})"
    elif not np.isfinite(arr).all():
        return "holds NaN/Inf values"
    crc = (cut.custom or {}).get(checksum_field(field))
    if crc is not None and array_checksum(arr) != int(crc):
        return "does not match the checksum written at extraction (the file changed or was truncated)"
    return None


def check_labels(cut, field: str, arr: np.ndarray) -> None:
    """Raise :class:`BadLabelsError` unless ``arr`` is the label array the manifest describes."""
    why = _problem(cut, field, arr)
    if why:
        raise BadLabelsError(f"cut {cut.id}: '{field}' in {label_file(cut, field)} {why}. "
                             "Re-extract it (mvqkd extract), or pass --skip-bad-indexes to skip "
                             "such cuts")


def load_checked(cut, field: str) -> np.ndarray:
    """Load and verify a cut's label array; unreadable files raise :class:`BadLabelsError`."""
    try:
        arr = np.asarray(cut.load_custom(field))
    except Exception as e:  # h5py / lhotse raise several kinds for a vanished or broken file
        raise BadLabelsError(f"cut {cut.id}: cannot read '{field}' from {label_file(cut, field)} "
                             f"({type(e).__name__}: {e}). Re-extract it, or pass "
                             "--skip-bad-indexes to skip such cuts") from e
    check_labels(cut, field, arr)
    return arr
