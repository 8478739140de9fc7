"""Teacher embeddings of a random subset of cuts, for training the quantizer.

One HDF5 file written by lhotse's ``NumpyHdf5Writer``: a float32 ``(T, D)`` array per
cut keyed by cut id, T the teacher's own frame count (no pad/trim). Read it with
``mvqkd.quantizer.io.load_embeddings``.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path

from mvqkd.indexes.audio import CutError
from mvqkd.conventions import num_frames
from mvqkd.indexes.pipeline import failure_record, iter_teacher_outputs
from mvqkd.indexes.store import write_jsonl

logger = logging.getLogger(__name__)


def select_subset(cuts: list, max_utts: int | None = None, max_frames: int | None = None,
                  seed: int = 0) -> list:
    """A seeded random subset: shuffle, then keep cuts until ``max_utts`` cuts or
    ``max_frames`` frames (estimated from durations) are reached; all cuts when both
    are None."""
    order = list(cuts)
    random.Random(seed).shuffle(order)
    out, frames = [], 0
    for c in order:
        if (max_utts is not None and len(out) >= max_utts) or (max_frames is not None and frames >= max_frames):
            break
        out.append(c)
        frames += num_frames(c.duration)
    return out


def dump_embeddings(cuts_path, teacher_dir, layer: int, out_path, max_utts: int | None = None,
                    max_frames: int | None = None, seed: int = 0, max_duration: float = 60.0,
                    device: str = "auto", dtype: str = "auto", report=None,
                    chunk_seconds: float | None = 60.0, chunk_overlap: float = 5.0,
                    chunk_mode: str = "windows") -> tuple[int, int]:
    """Write embeddings of a random subset to ``out_path`` (written to a temporary name,
    then renamed). Failed cuts go to ``report`` (default ``<out_path>.failed.jsonl``).

    Returns:
        ``(number of cuts written, number failed)``.
    """
    from lhotse import CutSet
    from lhotse.features.io import NumpyHdf5Writer
    from mvqkd.logs import progress_bar

    from mvqkd.teacher.model import load_teacher

    teacher = load_teacher(teacher_dir, device=device, dtype=dtype)
    teacher.set_chunking(chunk_seconds, chunk_overlap, chunk_mode)
    teacher.check_layer(layer)
    subset = select_subset(list(CutSet.from_file(cuts_path)), max_utts, max_frames, seed)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(".tmp-" + out_path.stem + ".h5")
    failures, written, frames = [], 0, 0
    with NumpyHdf5Writer(tmp) as writer, progress_bar(
            "embeddings", total=sum(num_frames(c.duration) for c in subset), unit="frame") as bar:
        for cut, emb in iter_teacher_outputs(subset, teacher, layer, max_duration):
            bar.update(num_frames(cut.duration))
            if isinstance(emb, CutError):
                failures.append(failure_record(cut.id, emb.kind, str(emb)))
                continue
            writer.write(cut.id, emb.numpy())
            written += 1
            frames += emb.shape[0]
    os.replace(tmp, out_path)
    report = Path(report) if report else out_path.with_name(out_path.name + ".failed.jsonl")
    write_jsonl(report, failures)
    logger.info("dump-embeddings: %d cuts (%d frames, dim %d) -> %s; %d failed (report %s)",
                written, frames, teacher.dim, out_path, len(failures), report)
    return written, len(failures)
