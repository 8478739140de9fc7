"""Cuts -> audio -> teacher layer -> stored arrays, one shard at a time.

:func:`iter_teacher_outputs` is shared by ``extract``, ``dump-embeddings`` and the
benchmark: it loads audio (one batch ahead, in a thread), batches by total duration
and yields per-cut embeddings or per-cut errors. :func:`process_shard` writes one
shard of the store (see :mod:`mvqkd.indexes.store`).
"""

from __future__ import annotations

import collections
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, Sequence

import numpy as np
import torch

from mvqkd.indexes.audio import CutError, load_cut_audio
from mvqkd.conventions import (SAMPLE_RATE, TEACHER_FRAME_SHIFT, array_checksum, checksum_field,
                               fit_frames, num_frames)
from mvqkd.indexes.store import ShardPaths, ShardWriter, atomic_write_text, save_cuts_atomic, write_jsonl

logger = logging.getLogger(__name__)

#: converted-but-unwritten cuts kept in flight per shard (bounds memory)
MAX_PENDING = 16


def _load_chunk(cuts, chunk: Sequence[int]) -> list:
    out = []
    for i in chunk:
        try:
            out.append((i, load_cut_audio(cuts[i])))
        except CutError as e:
            out.append((i, e))
    return out


def _checked(cut, emb: torch.Tensor):
    if not torch.isfinite(emb).all():
        return CutError("nonfinite_teacher_output", "teacher output contains NaN or Inf")
    return emb


def _run_teacher(teacher, cuts, loaded, layer: int, max_samples: int):
    """Yield (cut, (T, D) tensor | CutError) for successfully loaded audio; a failing
    batch is retried one utterance at a time so that only the bad cut fails."""
    wavs = [a for _, a in loaded]
    try:
        results = list(teacher.extract_many(wavs, layer, max_samples))
    except Exception:
        results = []
        for j, wav in enumerate(wavs):
            try:
                results.append((j, teacher.extract([wav], layer)[0]))
            except Exception as e:
                err = CutError("teacher_error", f"{type(e).__name__}: {e}")
                yield cuts[loaded[j][0]], err
    for j, emb in results:
        cut = cuts[loaded[j][0]]
        yield cut, _checked(cut, emb)


def iter_teacher_outputs(cuts: Sequence, teacher, layer: int, max_duration: float) -> Iterator:
    """Yield ``(cut, emb)`` for every cut, ``emb`` a float32 ``(T, D)`` tensor or a
    :class:`CutError`. Batches hold at most ``max_duration`` seconds of (padded) audio."""
    max_samples = int(max_duration * SAMPLE_RATE)
    chunks = teacher.batches([max(1, round(c.duration * SAMPLE_RATE)) for c in cuts], max_samples)
    if not chunks:
        return
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(_load_chunk, cuts, chunks[0])
        for k in range(len(chunks)):
            loaded = future.result()
            if k + 1 < len(chunks):
                future = pool.submit(_load_chunk, cuts, chunks[k + 1])
            ok = [(i, a) for i, a in loaded if not isinstance(a, CutError)]
            for i, a in loaded:
                if isinstance(a, CutError):
                    yield cuts[i], a
            yield from _run_teacher(teacher, cuts, ok, layer, max_samples)


def failure_record(cut_id: str, kind: str, error: str) -> dict:
    return {"cut_id": cut_id, "kind": kind, "error": error}


def process_shard(index: int, cuts: Sequence, teacher, target, out_dir, max_duration: float,
                  compression: str | None = None, progress=None) -> None:
    """Write shard ``index`` of ``out_dir`` for ``cuts`` (arrays, cuts, failures, done)."""
    from lhotse import CutSet
    from lhotse.array import Array, TemporalArray

    paths = ShardPaths(out_dir, target.field, index)
    arrays, checksums, failures = {}, {}, {}
    writer = ShardWriter(paths.h5, compression)

    def finish(cut, converted) -> None:
        try:
            codes = converted.result()
        except Exception as e:
            failures[cut.id] = failure_record(cut.id, "convert_error", f"{type(e).__name__}: {e}")
            return
        try:
            arr = fit_frames(codes, num_frames(cut.duration))
        except ValueError as e:
            failures[cut.id] = failure_record(cut.id, "frame_mismatch", str(e))
            return
        arr = np.ascontiguousarray(arr)
        key = writer.write(cut.id, arr)
        checksums[cut.id] = array_checksum(arr)
        arrays[cut.id] = TemporalArray(
            array=Array(storage_type=writer.name, storage_path=str(paths.h5.resolve()),  # absolute
                        storage_key=key, shape=list(arr.shape)),
            temporal_dim=0, frame_shift=TEACHER_FRAME_SHIFT, start=cut.start,
        )

    # the quantizer runs in a thread, overlapping the teacher's next batch; the
    # HDF5 writes stay in this thread, in order
    pending: collections.deque = collections.deque()
    ok = False
    try:
        with ThreadPoolExecutor(1) as pool:
            for cut, emb in iter_teacher_outputs(cuts, teacher, target.layer, max_duration):
                if progress is not None:
                    progress.update(num_frames(cut.duration))
                if isinstance(emb, CutError):
                    failures[cut.id] = failure_record(cut.id, emb.kind, str(emb))
                    continue
                pending.append((cut, pool.submit(target.convert, emb)))
                while pending and (len(pending) > MAX_PENDING or pending[0][1].done()):
                    finish(*pending.popleft())
            while pending:
                finish(*pending.popleft())
        ok = True
    finally:
        if ok:
            writer.close()  # writes the shard file (atomically)
        else:
            writer.discard()
    done = [
        c.with_custom(target.field, arrays[c.id]).with_custom(target.info_field, dict(target.info))
        .with_custom(checksum_field(target.field), checksums[c.id])
        for c in cuts if c.id in arrays
    ]
    save_cuts_atomic(CutSet.from_cuts(done), paths.cuts)
    write_jsonl(paths.failed, [failures[c.id] for c in cuts if c.id in failures])
    atomic_write_text(paths.done, f"{len(done)} cuts, {len(failures)} failed\n")
    if failures:
        logger.warning("shard %d: %d of %d cuts failed", index, len(failures), len(cuts))
