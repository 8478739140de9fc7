"""Attaching stored arrays onto other cuts (e.g. fbank cuts) by cut id."""

from __future__ import annotations

import logging

from mvqkd.conventions import checksum_field, info_field, num_frames
from mvqkd.indexes.pipeline import failure_record

logger = logging.getLogger(__name__)


def join_by_id(source, target, field: str, already_failed=()) -> tuple[list, list[dict]]:
    """Copy ``field`` and ``field + "_info"`` from ``source`` cuts onto ``target`` cuts
    with the same id.

    Args:
        source: cuts carrying ``field`` (the extraction output).
        target: cuts to attach to (e.g. fbank cuts); their order is kept.
        field: ``codebook_indexes`` or ``teacher_embeddings``.
        already_failed: cut ids already in a failure report (not reported twice).
    Returns:
        ``(joined cuts, failures)``. A target cut without a source cut, or whose
        duration / start disagrees with the stored array, is left out and reported;
        a source cut absent from ``target`` is reported too. Nothing is dropped silently.
    """
    by_id = {c.id: c for c in source}
    joined, failures, seen = [], [], set()
    for cut in target:
        src = by_id.get(cut.id)
        if src is None:
            if cut.id in already_failed:
                continue
            failures.append(failure_record(cut.id, "not_extracted", f"no {field} for this cut id"))
            continue
        seen.add(cut.id)
        arr = src.custom[field]
        want = num_frames(cut.duration)
        if arr.shape[0] != want or abs(arr.start - cut.start) > 1e-3:
            failures.append(failure_record(
                cut.id, "join_mismatch",
                f"{field} has {arr.shape[0]} frames from {arr.start:.3f}s but the cut spans "
                f"{want} frames from {cut.start:.3f}s",
            ))
            continue
        out = cut.with_custom(field, arr).with_custom(info_field(field), src.custom[info_field(field)])
        if checksum_field(field) in src.custom:
            out = out.with_custom(checksum_field(field), src.custom[checksum_field(field)])
        joined.append(out)
    for cut_id in by_id:
        if cut_id not in seen:
            failures.append(failure_record(cut_id, "not_in_join_target", "cut id missing from the --join-onto cuts"))
    return joined, failures
