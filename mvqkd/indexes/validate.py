"""``mvqkd validate``: check a manifest of cuts carrying codebook indexes."""

from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np

from mvqkd.conventions import num_frames
from mvqkd.indexes.targets import INDEXES


@dataclass
class Problem:
    cut_id: str
    kind: str
    message: str

    def __str__(self) -> str:
        return f"{self.cut_id}: [{self.kind}] {self.message}"


def _check_cut(cut, field: str, quantizer_id: str | None, reference: dict | None) -> list[Problem]:
    custom = cut.custom or {}
    if field not in custom:
        return [Problem(cut.id, "missing_field", f"no {field!r} field")]
    info = custom.get(field + "_info")
    if not isinstance(info, dict):
        return [Problem(cut.id, "missing_info", f"no {field + '_info'!r} dict")]
    out = []
    if quantizer_id is not None and info.get("quantizer_id") != quantizer_id:
        out.append(Problem(cut.id, "wrong_quantizer",
                           f"quantizer id {info.get('quantizer_id')!r}, expected {quantizer_id!r}"))
    if reference is not None and info != reference:
        out.append(Problem(cut.id, "inconsistent_info", f"info {info} differs from the first cut's {reference}"))
    try:
        arr = cut.load_custom(field)
    except Exception as e:
        return out + [Problem(cut.id, "unloadable", f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")]
    want_t = num_frames(cut.duration)
    if arr.ndim != 2 or arr.shape[0] != want_t:
        out.append(Problem(cut.id, "wrong_shape", f"shape {arr.shape}, expected ({want_t}, N) for {cut.duration:.3f}s"))
    if field == INDEXES:
        n, k = info.get("num_codebooks"), info.get("codebook_size", 256)
        dtype = np.uint8 if k <= 256 else np.int16
        if arr.dtype != dtype:
            out.append(Problem(cut.id, "wrong_dtype", f"dtype {arr.dtype}, expected {np.dtype(dtype)}"))
        if arr.ndim == 2 and arr.shape[1] != n:
            out.append(Problem(cut.id, "wrong_shape", f"{arr.shape[1]} codebooks, info says {n}"))
        if arr.size and int(arr.max()) >= k:
            out.append(Problem(cut.id, "out_of_range", f"code {int(arr.max())} >= codebook size {k}"))
    elif arr.dtype != np.float16 or not np.isfinite(arr).all():
        out.append(Problem(cut.id, "wrong_dtype", f"expected finite float16, got {arr.dtype}"))
    return out


def validate_cuts(cuts, quantizer=None, field: str = INDEXES) -> tuple[int, list[Problem]]:
    """Check every cut: ``field`` exists, loads, has shape ``(round(duration/0.02), N)``
    and the right dtype, and its info matches ``quantizer`` (a path or an object with
    ``.id``) and the other cuts.

    Returns:
        ``(number of cuts checked, problems)``.
    """
    qid = None
    if quantizer is not None:
        if not hasattr(quantizer, "id"):
            from mvqkd.quantizer import load_quantizer

            quantizer = load_quantizer(quantizer)
        qid = quantizer.id
    problems, n, reference = [], 0, None
    for cut in cuts:
        n += 1
        problems.extend(_check_cut(cut, field, qid, reference))
        if reference is None and isinstance((cut.custom or {}).get(field + "_info"), dict):
            reference = cut.custom[field + "_info"]
    return n, problems


def format_report(num_cuts: int, problems: list[Problem], max_lines: int = 50) -> str:
    if not problems:
        return f"OK: {num_cuts} cuts checked, no problems"
    kinds = collections.Counter(p.kind for p in problems)
    bad = len({p.cut_id for p in problems})
    lines = [f"FAILED: {bad} of {num_cuts} cuts have problems ("
             + ", ".join(f"{k}: {v}" for k, v in sorted(kinds.items())) + ")"]
    lines += [f"  {p}" for p in problems[:max_lines]]
    if len(problems) > max_lines:
        lines.append(f"  ... {len(problems) - max_lines} more")
    return "\n".join(lines)
