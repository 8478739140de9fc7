"""The training sampler never silently yields nothing (regression: drop_last with buckets)."""

from lhotse import CutSet
from lhotse.testing.dummies import dummy_cut

from mvqkd.data.sampling import build_sampler


def _cuts(n=400):
    return CutSet.from_cuts(dummy_cut(i, duration=2.0 + (i % 7) * 0.5) for i in range(n))


def test_single_process_covers_every_cut_once():
    cuts = _cuts()
    total = sum(c.duration for c in cuts)
    # max_duration close to a bucket's total: every bucket holds about one partial batch
    for max_duration in (total / 30, total / 10, 60.0):
        batches = list(build_sampler(cuts, max_duration, True, 0, 1, 0, num_buckets=30))
        ids = [c.id for b in batches for c in b]
        assert sorted(ids) == sorted(c.id for c in cuts), max_duration
        assert all(sum(c.duration for c in b) <= max_duration for b in batches)


def test_ddp_ranks_are_disjoint_and_nearly_complete():
    cuts = _cuts()
    per_rank = [[c.id for b in build_sampler(cuts, 60.0, True, 0, 2, r) for c in b] for r in (0, 1)]
    assert not set(per_rank[0]) & set(per_rank[1])
    assert len(per_rank[0]) + len(per_rank[1]) >= 0.8 * len(cuts)
