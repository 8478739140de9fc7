"""Samplers for training: lhotse ``DynamicBucketingSampler`` plus exact-resume bookkeeping.

A DataLoader with workers pulls batches from the sampler ahead of the training loop
(prefetching), so ``sampler.state_dict()`` at checkpoint time would describe batches
not trained on yet. :class:`SnapshotSampler` records the sampler's state right after it
yields each batch; the training loop pops one snapshot per consumed batch, so the saved
state resumes exactly after the last batch that was trained on.
"""

from __future__ import annotations

import copy
import warnings
from collections import deque


def build_sampler(cuts, max_duration: float, shuffle: bool, seed: int, world_size: int,
                  rank: int, num_buckets: int = 30, drop_last: bool | None = None):
    """A lhotse ``DynamicBucketingSampler`` over ``cuts`` (batches of <= ``max_duration`` s).

    ``world_size`` / ``rank`` shard batches across DDP processes (the lhotse equivalent of
    ``DistributedSampler``). ``drop_last`` (default: only when ``world_size > 1``) keeps every
    rank at the same number of batches; lhotse drops the last partial batch of *each bucket*,
    so the number of buckets is capped to hold at least 4 full batches each (and a quarter of
    the cuts) -- otherwise a small corpus with a large ``max_duration`` yields no batch at all.
    A set too small for two buckets gets lhotse's ``SimpleCutSampler`` with the same arguments.
    """
    from lhotse.dataset import DynamicBucketingSampler, SimpleCutSampler

    if drop_last is None:
        drop_last = world_size > 1
    total = sum(c.duration for c in cuts)
    num_buckets = min(num_buckets, len(cuts) // 4, int(total / (4 * max_duration)))
    common = dict(max_duration=max_duration, shuffle=shuffle, seed=seed, world_size=world_size,
                  rank=rank, drop_last=drop_last)
    if num_buckets < 2:
        return SimpleCutSampler(cuts, **common)
    with warnings.catch_warnings():  # "eagerly read CutSet": ours is filtered in memory
        warnings.filterwarnings("ignore", message=".*eagerly read CutSet.*")
        return DynamicBucketingSampler(cuts, num_buckets=num_buckets, **common)


def curriculum_sampler(cuts, max_duration: float, world_size: int = 1, rank: int = 0,
                       drop_last: bool | None = None):
    """SortaGrad (Deep Speech 2): batches of at most ``max_duration`` seconds going from the
    shortest cuts to the longest, in a fixed order (for the first epoch)."""
    from lhotse.dataset import SimpleCutSampler

    if drop_last is None:
        drop_last = world_size > 1
    return SimpleCutSampler(cuts.sort_by_duration(ascending=True), max_duration=max_duration,
                            shuffle=False, world_size=world_size, rank=rank, drop_last=drop_last)


class SnapshotSampler:
    """Iterate a lhotse sampler, remembering its state after each yielded batch.

    ``pop_state()`` returns (and forgets) the state after the oldest batch not popped yet:
    call it once per batch the training loop consumes.
    """

    def __init__(self, sampler):
        self.sampler = sampler
        self._states = deque()

    def __iter__(self):
        self._states.clear()
        for batch in self.sampler:
            self._states.append(copy.deepcopy(self.sampler.state_dict()))
            yield batch

    def pop_state(self) -> dict:
        return self._states.popleft()
