"""DDP helpers: torchrun environment, device choice, collective reductions.

Under ``torchrun`` the environment holds ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``;
the process group uses ``nccl`` on CUDA and ``gloo`` on CPU.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str | None = None) -> DistInfo:
    """Read the torchrun environment, pick the device, init the process group if needed.

    ``device``: ``cpu``, ``cuda`` or ``cuda:K``; None = CUDA when available. Under DDP
    on CUDA, each process uses GPU ``LOCAL_RANK`` (of ``torch.cuda.device_count()``).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_available() and dist.is_initialized():
        world_size, rank = dist.get_world_size(), dist.get_rank()
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"--device {device}: CUDA is not available on this machine")
        if world_size > 1:
            n = torch.cuda.device_count()
            if local_rank >= n:
                raise RuntimeError(f"LOCAL_RANK {local_rank} but only {n} GPU(s) visible")
            dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    info = DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
        info.initialized_here = True
        logger.info("DDP: rank %d / %d, backend %s, device %s", rank, world_size, backend, dev)
    return info


def cleanup_distributed(info: DistInfo) -> None:
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def all_true(flag: bool, info: DistInfo) -> bool:
    """True when ``flag`` is True on every rank (a MIN all-reduce)."""
    if info.world_size == 1:
        return flag
    t = torch.tensor([1 if flag else 0], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def barrier(info: DistInfo) -> None:
    if info.world_size > 1:
        dist.barrier()
