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

from mvqkd.indexes.store import ShardPaths, check_plan, read_jsonl, save_cuts_atomic, write_jsonl
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


def _load_cuts(path):
    from lhotse import CutSet

    cuts = CutSet.from_file(path).to_eager()
    seen = set()
    for c in cuts:
        if c.id in seen:
            raise ValueError(f"{path}: duplicate cut id {c.id!r}; cut ids must be unique")
        seen.add(c.id)
    return list(cuts)


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
    target = spec.build(teacher)
    total = sum(num_frames(c.duration) for _, a, b in shards for c in cuts[a:b])
    with progress_bar(f"extract worker {worker}", total=total, unit="frame") as bar:
        for index, a, b in shards:
            process_shard(index, cuts[a:b], teacher, target, out_dir, opts["max_duration"],
                          opts["compression"], progress=bar)


def run_extraction(cuts_path, spec: TargetSpec, out_dir, *, num_workers: int = 1,
                   shard_size: int = 200, max_duration: float = 60.0, device: str = "auto",
                   dtype: str = "auto", compression: str | None = None, join_onto=None,
                   out_manifest=None, report=None) -> RunResult | None:
    """Extract ``spec.field`` for every cut of ``cuts_path`` into ``out_dir``.

    Rerunning with the same arguments after a crash or SIGKILL finishes only the
    shards without a done marker; the final manifest is identical to an uninterrupted
    run. Returns the merged result on rank 0, ``None`` on other torchrun ranks.
    """
    spec.check()
    out_dir = Path(out_dir)
    cuts = _load_cuts(cuts_path)
    if not cuts:
        raise ValueError(f"{cuts_path}: no cuts")
    plan = {"cuts": str(Path(cuts_path).resolve()), "num_cuts": len(cuts), "first_cut": cuts[0].id,
            "last_cut": cuts[-1].id, "shard_size": shard_size, "compression": compression,
            **asdict(spec), "teacher_dir": str(Path(spec.teacher_dir).resolve()),
            "quantizer": str(Path(spec.quantizer).resolve()) if spec.quantizer else None}
    rank, world = _dist_info()
    if rank == 0:
        check_plan(out_dir, plan)
    (out_dir / "shards").mkdir(parents=True, exist_ok=True)  # every rank, before any write
    starts = list(range(0, len(cuts), shard_size))
    num_shards = len(starts)
    total_workers = world * num_workers
    mine = {rank * num_workers + w: [] for w in range(num_workers)}
    for index, a in enumerate(starts):
        g = index % total_workers
        if g in mine and not ShardPaths(out_dir, spec.field, index).is_done():
            mine[g].append((index, a, min(a + shard_size, len(cuts))))
    skipped = num_shards - sum(map(len, mine.values()))
    logger.info("%s: %d cuts in %d shards, %d already done on disk; %d worker(s) x %d rank(s)",
                spec.field, len(cuts), num_shards, skipped, num_workers, world)
    opts = {"device": device, "dtype": dtype, "max_duration": max_duration, "compression": compression}
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
