"""Codebook-index cuts written by icefall's MVQ recipe, joined onto your fbank cuts.

icefall's ``extract_codebook_indexes`` writes one ``MonoCut(id, start, duration, channel)``
per training cut with only ``codebook_indexes`` (a TemporalArray in HDF5, frame shift
0.02 s, uint8 (T, N) from multi_quantization) and no ``codebook_indexes_info``; its
``join_manifests`` then copies the arrays onto the fbank cuts by id, repairing ids that
differ in the speed-perturbation affix. :func:`join_icefall_indexes` does the same with
checks:

- ids are matched exactly first, then by :func:`canonical_id` (the speed-perturbation
  affix in any of lhotse's spellings: ``_sp0.9``, ``-sp0.9``, ``sp0.9_`` prefix), then by
  the LibriSpeech utterance id (``spk-chapter-utt``) plus affix; a key two cuts share is
  an error naming both;
- the array's frame count must be within one teacher frame of ``round(duration / 0.02)``
  (icefall counts HuBERT's convolution frames, usually one fewer);
- relative storage paths (icefall writes them relative to ``egs/librispeech/ASR``) are
  resolved against ``storage_root`` and written absolute; a missing file is an error;
- the info mvqkd needs is filled in: ``num_codebooks`` from the arrays, ``codebook_size``
  (256 for multi_quantization), the quantizer id when the quantizer file is given.

Unmatched cuts on either side are counted, logged and listed, never dropped silently.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from mvqkd.conventions import CODEBOOK_INDEXES, TEACHER_FRAME_SHIFT, info_field, num_frames

logger = logging.getLogger(__name__)

_SP = r"sp(\d+(?:\.\d+)?)"
_SP_SUFFIX = re.compile(rf"^(?P<base>.+?)[_-]{_SP}$")
_SP_PREFIX = re.compile(rf"^{_SP}[_-](?P<base>.+)$")
_LIBRI_UTT = re.compile(r"^(\d+-\d+-\d+)(?:[-_].*)?$")


def split_speed(cut_id: str) -> tuple[str, str | None]:
    """``"1089-134686-0000_sp0.9"`` -> ``("1089-134686-0000", "0.9")``; no affix -> factor None."""
    m = _SP_SUFFIX.match(cut_id)
    if m:
        return m.group("base"), m.group(2)
    m = _SP_PREFIX.match(cut_id)
    if m:
        return m.group("base"), m.group(1)
    return cut_id, None


def canonical_id(cut_id: str, librispeech: bool = False) -> str:
    """The id with its speed affix spelled ``<base>_sp<factor>``; with ``librispeech``,
    the base cut down to the utterance id ``spk-chapter-utt`` when it has that form."""
    base, factor = split_speed(cut_id)
    if librispeech:
        m = _LIBRI_UTT.match(base)
        if m:
            base = m.group(1)
    return base if factor is None else f"{base}_sp{factor}"


def _keyed(cuts, librispeech: bool, what: str) -> dict:
    out: dict = {}
    for c in cuts:
        key = canonical_id(c.id, librispeech)
        if key in out:
            raise ValueError(f"{what}: cuts {out[key].id!r} and {c.id!r} both map to id {key!r}; "
                             "their ids cannot be matched unambiguously")
        out[key] = c
    return out


def match_ids(sources, targets) -> dict[str, object]:
    """``{target id: source cut}`` matched exactly, then by :func:`canonical_id`, then by
    LibriSpeech utterance id (see the module doc)."""
    by_id = {c.id: c for c in sources}
    matched = {t.id: by_id[t.id] for t in targets if t.id in by_id}
    for librispeech in (False, True):
        rest_t = [t for t in targets if t.id not in matched]
        if not rest_t:
            break
        used = {id(s) for s in matched.values()}
        rest_s = _keyed([s for s in sources if id(s) not in used], librispeech, "--indexes")
        for key, t in _keyed(rest_t, librispeech, "--onto").items():
            if key in rest_s:
                matched[t.id] = rest_s[key]
    return matched


def _resolve(arr, root: Path | None):
    """The array with an absolute storage path (relative ones resolved against ``root``)."""
    path = Path(arr.array.storage_path if hasattr(arr, "array") else arr.storage_path)
    if not path.is_absolute():
        path = (root or Path.cwd()) / path
    path = path.resolve()
    if not path.exists():
        raise FileNotFoundError(
            f"codebook index storage {path} not found; icefall writes paths relative to "
            "egs/librispeech/ASR: give that folder as --storage-root")
    inner = arr.array if hasattr(arr, "array") else arr
    inner.storage_path = str(path)
    return arr


def join_icefall_indexes(index_cuts, onto, storage_root=None, quantizer=None, codebook_size: int = 256):
    """Attach icefall ``codebook_indexes`` to ``onto`` cuts (see the module doc).

    Args:
        index_cuts: cuts with ``codebook_indexes`` (icefall's ``*-vq.jsonl.gz`` or its joined
            manifest).
        onto: the cuts to train on (fbank cuts, your ids).
        storage_root: folder that relative storage paths are relative to (default: cwd).
        quantizer: an mvqkd Quantizer (e.g. ``load_quantizer`` of icefall's file) whose id,
            codebook count and size are recorded and checked; None records ``quantizer_id``
            None.
    Returns:
        ``(joined cuts list, unmatched onto ids, unused index ids, frame mismatches)``.
    Raises:
        ValueError: arrays with different codebook counts, or not matching ``quantizer``.
    """
    root = Path(storage_root).resolve() if storage_root else None
    sources = [c for c in index_cuts if (c.custom or {}).get(CODEBOOK_INDEXES) is not None]
    if not sources:
        raise ValueError("--indexes: no cut carries codebook_indexes")
    onto = list(onto)
    matched = match_ids(sources, onto)
    widths = {int(s.custom[CODEBOOK_INDEXES].shape[1]) for s in matched.values()}
    if len(widths) > 1:
        raise ValueError(f"--indexes: arrays with different numbers of codebooks {sorted(widths)}")
    n = widths.pop() if widths else 0
    if quantizer is not None:
        if (quantizer.num_codebooks, quantizer.codebook_size) != (n, codebook_size) and n:
            raise ValueError(f"--quantizer {quantizer.id} has {quantizer.num_codebooks} x "
                             f"{quantizer.codebook_size} codebooks, the indexes have {n} x {codebook_size}")
    info = {"quantizer_id": quantizer.id if quantizer is not None else None, "num_codebooks": n,
            "codebook_size": codebook_size, "frame_shift": TEACHER_FRAME_SHIFT,
            "source": "icefall (mvqkd join-indexes)"}
    joined, mismatched = [], []
    for cut in onto:
        src = matched.get(cut.id)
        if src is None:
            continue
        arr = src.custom[CODEBOOK_INDEXES]
        if abs(arr.shape[0] - num_frames(cut.duration)) > 1 or abs(src.duration - cut.duration) > TEACHER_FRAME_SHIFT:
            mismatched.append(f"{cut.id}\t{arr.shape[0]} frames, index cut {src.id} {src.duration:.3f}s, "
                              f"cut {cut.duration:.3f}s")
            continue
        joined.append(cut.with_custom(CODEBOOK_INDEXES, _resolve(arr, root))
                      .with_custom(info_field(CODEBOOK_INDEXES), dict(info)))
    used = {id(s) for s in matched.values()}
    unused = [s.id for s in sources if id(s) not in used]
    unmatched = [c.id for c in onto if c.id not in matched]
    return joined, unmatched, unused, mismatched
