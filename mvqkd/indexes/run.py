"""Resumable, parallel extraction of a whole CutSet into a shard store.

Work split: the input cuts (in manifest order) are cut into shards of ``shard_size``;
shard ``i`` belongs to global worker ``i % (world_size * num_workers)``, where
``world_size`` / ``rank`` come from ``torch.distributed`` (torchrun) and each rank
runs ``num_workers`` local processes. On GPU, global worker ``g`` uses
``cuda:(g % torch.cuda.device_count())``. When every shard has its done marker, rank 0
merges the shard manifests (in shard order) into one manifest, optionally joined onto
other cuts by id, and the per-cut failures into one report.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path

from mvqkd.indexes.store import (OutDirLock, ShardPaths, check_plan, read_jsonl, save_cuts_atomic,
                                 write_jsonl)
from mvqkd.indexes.targets import TargetSpec

logger = logging.getLogger(__name__)


@dataclass
class RunResult:
    manifest: Path
    report: Path
    num_input: int
    num_written: int
    num_failed: int


def _dist_info() -> tuple[int, int]:
    """(rank, world_size); joins the torchrun process group when launched by torchrun."""
    import torch.distributed as dist

    if dist.is_available() and not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group(backend="gloo", timeout=timedelta(days=7))
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def check_cut_ids(ids, what: str) -> None:
    """Cut ids become HDF5 keys: refuse (listing every offender at once) ids that are empty,
    ``.`` or ``..``, contain ``/``, have surrounding white space, or collide with another id
    after Unicode normalisation (NFC)."""
    import unicodedata

    bad, seen = [], {}
    for cid in ids:
        norm = unicodedata.normalize("NFC", str(cid))
        why = None
        if not cid or norm.strip() in ("", ".", ".."):
            why = "empty, '.' or '..'"
        elif "/" in cid:
            why = "contains '/' (HDF5 treats it as a group separator)"
        elif norm != norm.strip():
            why = "leading or trailing white space"
        elif norm in seen:
            why = f"duplicate of {seen[norm]!r}" if seen[norm] != cid else "duplicate"
        seen.setdefault(norm, cid)
        if why:
            bad.append(f"{cid!r}: {why}")
    if bad:
        listing = "\n  ".join(bad[:50]) + (f"\n  ... {len(bad) - 50} more" if len(bad) > 50 else "")
        raise ValueError(f"{what}: {len(bad)} cut id(s) cannot be stored (fix or rename them, e.g. "
                         f"with CutSet.modify_ids):\n  {listing}")


def _load_cuts(path):
    """The cuts to extract: a cuts manifest (not recordings / supervisions) whose ids are
    valid HDF5 keys and whose cuts all have audio; every problem is found before any work."""
    from mvqkd.data.cuts import load_cuts

    cuts = list(load_cuts(path, "--cuts").to_eager())
    check_cut_ids([c.id for c in cuts], f"--cuts {path}")
    no_audio = [c.id for c in cuts if not c.has_recording]
    if no_audio:
        raise ValueError(f"--cuts {path}: {len(no_audio)} cut(s) have no recording (audio is needed "
                         f"for the teacher), e.g. {no_audio[:5]}")
    return cuts


def _retry_failed(out_dir: Path, field: str, num_shards: int) -> int:
    """Forget the done marker of every shard that has failed cuts, so a run re-extracts it
    whole (the cuts that worked come out the same). Returns the number of shards reopened."""
    reopened = 0
    for i in range(num_shards):
        paths = ShardPaths(out_dir, field, i)
        if paths.is_done() and paths.failed.is_file() and read_jsonl(paths.failed):
            paths.done.unlink()
            reopened += 1
    return reopened


def _work(worker: int, cuts_path: str, spec: TargetSpec, out_dir: str, shards: list,
          opts: dict, threads: int | None) -> None:
    """Process ``shards`` (list of ``(index, start, stop)``) in one process."""
    import torch
    from mvqkd.logs import progress_bar

    from mvqkd.conventions import num_frames
    from mvqkd.indexes.pipeline import process_shard
    from mvqkd.teacher.model import load_teacher

    if threads:
        torch.set_num_threads(threads)
    device = opts["device"]
    if device == "auto" and torch.cuda.is_available():
        device = f"cuda:{worker % torch.cuda.device_count()}"
    cuts = _load_cuts(cuts_path)
    teacher = load_teacher(spec.teacher_dir, device=device, dtype=opts["dtype"])
    teacher.set_chunking(*opts.get("chunk", (None,)))
    target = spec.build(teacher)
    total = sum(num_frames(c.duration) for _, a, b in shards for c in cuts[a:b])
    with progress_bar(f"extract worker {worker}", total=total, unit="frame") as bar:
        for index, a, b in shards:
            process_shard(index, cuts[a:b], teacher, target, out_dir, opts["max_duration"],
                          opts["compression"], progress=bar)


def _plan(cuts_path, cuts, spec: TargetSpec, shard_size: int, compression) -> dict:
    """What a store holds and depends on; a resume must match it exactly."""
    from mvqkd.conventions import MAX_FRAME_MISMATCH, TEACHER_FRAME_SHIFT

    return {"cuts": str(Path(cuts_path).resolve()), "num_cuts": len(cuts), "first_cut": cuts[0].id,
            "last_cut": cuts[-1].id, "shard_size": shard_size, "compression": compression,
            **asdict(spec), "teacher_dir": str(Path(spec.teacher_dir).resolve()),
            "quantizer": str(Path(spec.quantizer).resolve()) if spec.quantizer else None,
            "frame_rule": f"num_frames(duration, {TEACHER_FRAME_SHIFT}); pad with the last frame "
                          f"or trim, at most {MAX_FRAME_MISMATCH} frames"}


def run_extraction(cuts_path, spec: TargetSpec, out_dir, *, num_workers: int = 1,
                   shard_size: int = 200, max_duration: float = 60.0, device: str = "auto",
                   dtype: str = "auto", compression: str | None = None, join_onto=None,
                   out_manifest=None, report=None, retry_failed: bool = False,
                   chunk_seconds: float | None = 60.0, chunk_overlap: float = 5.0,
                   chunk_mode: str = "windows") -> RunResult | None:
    """Extract ``spec.field`` for every cut of ``cuts_path`` into ``out_dir``.

    Rerunning with the same arguments after a crash or SIGKILL finishes only the
    shards without a done marker; the final manifest is identical to an uninterrupted
    run. A rerun whose quantizer, teacher (content) or frame rule differ from the store's
    plan is refused. ``retry_failed`` re-extracts the shards that have failed cuts. A
    second extraction into the same ``out_dir`` is refused while one runs. Returns the
    merged result on rank 0, ``None`` on other torchrun ranks.
    """
    cuts = _load_cuts(cuts_path)
    if not cuts:
        raise ValueError(f"{cuts_path}: no cuts")
    if join_onto is not None:
        from mvqkd.data.cuts import load_cuts

        load_cuts(join_onto, "--join-onto")  # a wrong file is refused before the teacher runs
    spec = spec.identify()
    out_dir = Path(out_dir)
    rank, world = _dist_info()
    lock = OutDirLock(out_dir)
    if rank == 0:
        lock.acquire()
    try:
        if rank == 0:
            plan = _plan(cuts_path, cuts, spec, shard_size, compression)
            if chunk_seconds is not None and max(c.duration for c in cuts) > chunk_seconds:
                # only where it changes arrays
                plan["chunking"] = ([chunk_seconds, chunk_overlap] if chunk_mode == "windows"
                                    else [chunk_seconds, chunk_mode])
            check_plan(out_dir, plan)
        return _extract_shards(cuts_path, cuts, spec, out_dir, rank, world, num_workers,
                               shard_size, retry_failed, join_onto, out_manifest, report,
                               {"device": device, "dtype": dtype, "max_duration": max_duration,
                                "chunk": (chunk_seconds, chunk_overlap, chunk_mode),
                                "compression": compression})
    finally:
        lock.release()


def _extract_shards(cuts_path, cuts, spec, out_dir, rank, world, num_workers, shard_size,
                    retry_failed, join_onto, out_manifest, report, opts) -> RunResult | None:
    (out_dir / "shards").mkdir(parents=True, exist_ok=True)  # every rank, before any write
    starts = list(range(0, len(cuts), shard_size))
    num_shards = len(starts)
    if retry_failed and rank == 0:
        logger.info("--retry-failed: re-extracting %d shard(s) with failed cuts",
                    _retry_failed(out_dir, spec.field, num_shards))
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    total_workers = world * num_workers
    mine = {rank * num_workers + w: [] for w in range(num_workers)}
    for index, a in enumerate(starts):
        g = index % total_workers
        if g in mine and not ShardPaths(out_dir, spec.field, index).is_done():
            mine[g].append((index, a, min(a + shard_size, len(cuts))))
    skipped = num_shards - sum(map(len, mine.values()))
    logger.info("%s: %d cuts in %d shards, %d already done on disk; %d worker(s) x %d rank(s)",
                spec.field, len(cuts), num_shards, skipped, num_workers, world)
    jobs = {g: s for g, s in mine.items() if s}
    if len(jobs) == 1 and num_workers == 1:
        (g, s), = jobs.items()
        _work(g, str(cuts_path), spec, str(out_dir), s, opts, None)
    elif jobs:
        import multiprocessing as mp

        threads = max(1, (os.cpu_count() or 1) // num_workers)
        with ProcessPoolExecutor(len(jobs), mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(_work, g, str(cuts_path), spec, str(out_dir), s, opts, threads)
                       for g, s in jobs.items()]
            for f in futures:
                f.result()
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        if rank != 0:
            return None
    return merge(out_dir, spec.field, num_shards, len(cuts), join_onto, out_manifest, report)


def merge(out_dir, field: str, num_shards: int, num_input: int, join_onto=None,
          out_manifest=None, report=None) -> RunResult:
    """Concatenate the shard manifests / failure lists (in shard order), optionally
    joining onto ``join_onto`` cuts by id; write both atomically."""
    from lhotse import CutSet

    from mvqkd.indexes.join import join_by_id

    out_dir = Path(out_dir)
    missing = [i for i in range(num_shards) if not ShardPaths(out_dir, field, i).is_done()]
    if missing:
        raise RuntimeError(f"{out_dir}: shards {missing[:10]} are not done; rerun to finish them")
    cuts, failures = [], []
    for i in range(num_shards):
        paths = ShardPaths(out_dir, field, i)
        cuts.extend(CutSet.from_file(paths.cuts) or [])  # an empty manifest reads as None
        failures.extend(read_jsonl(paths.failed))
    if join_onto is not None:
        target = CutSet.from_file(join_onto)
        cuts, join_failures = join_by_id(cuts, target, field, {f["cut_id"] for f in failures})
        failures.extend(join_failures)
        num_input = len(cuts) + len(failures)
    manifest = Path(out_manifest) if out_manifest else out_dir / "cuts.jsonl.gz"
    report = Path(report) if report else out_dir / "failed_cuts.jsonl"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    save_cuts_atomic(CutSet.from_cuts(cuts), manifest)
    write_jsonl(report, failures)
    return RunResult(manifest, report, num_input, len(cuts), len(failures))
