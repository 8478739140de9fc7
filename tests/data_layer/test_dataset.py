"""Training data pipeline: filtering with counts, index checks, batch collation, SpecAugment."""

import logging

import numpy as np
import pytest
import torch
from lhotse import CutSet
from lhotse.features.io import NumpyHdf5Writer
from lhotse.utils import fastcopy

from mvqkd.data.dataset import KDDataset, prepare_training_cuts
from mvqkd.data.tokenizer import load_bpe
from mvqkd.data.specaug import SpecAugment
from mvqkd.data.synthetic import WORDS, make_synthetic_cuts, train_tiny_bpe


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("kdcuts")
    cuts = make_synthetic_cuts(d, num_cuts=6, num_codebooks=3, codebook_size=8, embedding_dim=5)
    bpe = train_tiny_bpe([" ".join(WORDS)] * 3, d / "bpe", 30)
    return d, cuts, load_bpe(bpe)


def _with_text(cut, text):
    return fastcopy(cut, supervisions=[fastcopy(cut.supervisions[0], text=text)])


def test_empty_and_too_long_transcripts_filtered_with_counts(data, caplog):
    _, cuts, sp = data
    cuts = list(cuts)
    n_frames = int(cuts[1].num_frames)
    enc_frames = (n_frames + 3) // 4  # the student's 4x subsampling: ceil(T / 4)
    long_text = " ".join(["CAT"] * (enc_frames + 5))  # >= 1 token per word
    assert len(sp.encode(long_text)) > enc_frames
    modified = [_with_text(cuts[0], "  "), _with_text(cuts[1], long_text)] + cuts[2:]
    with caplog.at_level(logging.INFO, logger="mvqkd"):
        kept, stats = prepare_training_cuts(CutSet.from_cuts(modified), sp, kd="mvq")
    assert stats.total == 6 and stats.kept == 4 == len(kept)
    assert stats.dropped == {"empty transcript": 1, "more tokens than encoder frames": 1}
    assert {c.id for c in kept} == {c.id for c in cuts[2:]}
    assert "dropped empty transcript: 1" in caplog.text


def test_cuts_longer_than_a_batch_are_dropped_with_counts_and_names(data, caplog):
    """lhotse's sampler gives a cut longer than --max-duration a batch of its own (checked
    here: it does), past the budget: such cuts are dropped before training, counted, named."""
    from mvqkd.data.sampling import build_sampler

    _, cuts, sp = data
    cuts = list(cuts)
    longest = max(c.duration for c in cuts)
    limit = sorted(c.duration for c in cuts)[-3]  # the two longest cuts exceed it
    assert limit < longest
    over = sorted(c.id for c in cuts if c.duration > limit)
    assert len(over) == 2
    batches = list(build_sampler(CutSet.from_cuts(cuts), limit, False, 0, 1, 0))
    assert any(sum(c.duration for c in b) > limit for b in batches)  # what the filter prevents
    with caplog.at_level(logging.INFO, logger="mvqkd"):
        kept, stats = prepare_training_cuts(CutSet.from_cuts(cuts), sp, kd="mvq", max_duration=limit)
    assert stats.kept == len(kept) == len(cuts) - 2
    assert stats.dropped == {f"longer than --max-duration {limit:g} s": 2}
    assert all(c.duration <= limit for c in kept)
    assert all(cid in caplog.text for cid in over) and "raise --max-duration" in caplog.text
    kept, stats = prepare_training_cuts(CutSet.from_cuts(cuts), sp, kd="mvq", max_duration=longest)
    assert stats.kept == len(cuts)  # a cut exactly at the limit fits


def test_missing_indexes_error_names_cut_or_skip_counts(data):
    _, cuts, sp = data
    cuts = list(cuts)
    bare = fastcopy(cuts[2], custom={})
    cs = CutSet.from_cuts(cuts[:2] + [bare] + cuts[3:])
    with pytest.raises(ValueError, match=rf"cut {bare.id} has no 'codebook_indexes'"):
        prepare_training_cuts(cs, sp, kd="mvq")
    kept, stats = prepare_training_cuts(cs, sp, kd="mvq", skip_missing_indexes=True)
    assert stats.dropped == {"no codebook_indexes": 1} and len(kept) == 5
    # The baseline does not need indexes at all.
    kept, stats = prepare_training_cuts(cs, sp, kd="none")
    assert len(kept) == 6
    # l1/l2/cosine need the float embeddings instead.
    with pytest.raises(ValueError, match=rf"cut {bare.id} has no 'teacher_embeddings'"):
        prepare_training_cuts(cs, sp, kd="l2")


@pytest.mark.parametrize("delta,ok", [(1, True), (-1, True), (2, False), (-3, False)])
def test_index_frame_count_tolerance(data, tmp_path, delta, ok):
    _, cuts, sp = data
    cuts = list(cuts)
    want = int(round(cuts[0].duration / 0.02))
    with NumpyHdf5Writer(tmp_path / "bad") as w:
        arr = w.store_array("x", np.zeros((want + delta, 3), np.uint8), frame_shift=0.02,
                            temporal_dim=0)
    bad = fastcopy(cuts[0], custom={**cuts[0].custom, "codebook_indexes": arr})
    cs = CutSet.from_cuts([bad] + cuts[1:])
    if ok:
        prepare_training_cuts(cs, sp, kd="mvq")
    else:
        with pytest.raises(ValueError, match=rf"cut {bad.id}: 'codebook_indexes' has "
                                             rf"{want + delta} frames"):
            prepare_training_cuts(cs, sp, kd="mvq")


def test_quantizer_mismatch_refused(data):
    _, cuts, sp = data
    with pytest.raises(ValueError, match="quantizer_id='q-synthetic' does not match"):
        prepare_training_cuts(cuts, sp, kd="mvq", quantizer_id="another-quantizer")
    with pytest.raises(ValueError, match="num_codebooks=3 does not match"):
        prepare_training_cuts(cuts, sp, kd="mvq", num_codebooks=8)
    _, stats = prepare_training_cuts(cuts, sp, kd="mvq", quantizer_id="q-synthetic",
                                     num_codebooks=3)
    assert stats.index_info["codebook_size"] == 8
    # Mixed ids inside one manifest: refused, naming the odd cut.
    cuts = list(cuts)
    odd = fastcopy(cuts[3], custom={**cuts[3].custom, "codebook_indexes_info": {
        **cuts[3].codebook_indexes_info, "quantizer_id": "other"}})
    with pytest.raises(ValueError, match=rf"cut {odd.id}: codebook_indexes_info quantizer_id"):
        prepare_training_cuts(CutSet.from_cuts(cuts[:3] + [odd] + cuts[4:]), sp, kd="mvq")


def test_batch_shapes_padding_and_values(data):
    d, cuts, sp = data
    batch = KDDataset(sp, kd="mvq")[cuts.subset(first=4)]
    ids = batch["cut_ids"]
    by_id = {c.id: c for c in cuts}
    durs = [by_id[i].duration for i in ids]
    assert durs == sorted(durs, reverse=True)
    B = len(ids)
    assert batch["features"].shape[0] == B and batch["features"].shape[2] == 80
    idx = batch["codebook_indexes"]
    assert idx.dtype == torch.long and idx.shape[2] == 3
    import h5py  # independent read of the stored arrays

    for b, cid in enumerate(ids):
        ta = by_id[cid].codebook_indexes
        with h5py.File(ta.array.storage_path + ".h5" if not ta.array.storage_path.endswith(".h5")
                       else ta.array.storage_path) as f:
            truth = torch.from_numpy(f[ta.array.storage_key][()].astype(np.int64))
        assert torch.equal(idx[b, : truth.shape[0]], truth)
        assert (idx[b, truth.shape[0]:] == -100).all()
        assert int(batch["feature_lens"][b]) == by_id[cid].num_frames
        assert batch["tokens"][b] == sp.encode(by_id[cid].supervisions[0].text)
    emb = KDDataset(sp, kd="cosine")[cuts.subset(first=4)]
    assert emb["codebook_indexes"] is None and emb["teacher_embeddings"].shape[2] == 5
    for b, cid in enumerate(emb["cut_ids"]):
        n = int(emb["teacher_lens"][b])
        assert n == by_id[cid].teacher_embeddings.shape[0]
        assert (emb["teacher_embeddings"][b, n:] == 0).all()


def test_on_the_fly_features_match_stored(data):
    _, cuts, sp = data
    sub = cuts.subset(first=2)
    stored = KDDataset(sp, kd="none")[sub]
    otf = KDDataset(sp, kd="none", on_the_fly_feats=True)[sub]
    assert stored["cut_ids"] == otf["cut_ids"]
    for b in range(2):
        n = min(int(stored["feature_lens"][b]), int(otf["feature_lens"][b]))
        assert abs(int(stored["feature_lens"][b]) - int(otf["feature_lens"][b])) <= 1
        # the last frame depends on how each path pads the signal edge
        assert torch.allclose(stored["features"][b, : n - 1], otf["features"][b, : n - 1], atol=1e-3)


def test_specaug_no_time_warp_while_distilling_and_padding_untouched():
    with pytest.raises(ValueError, match="time warping is disabled while distilling"):
        SpecAugment(time_warp_factor=80, distilling=True)
    torch.manual_seed(0)
    x = torch.randn(3, 200, 80)
    lens = torch.tensor([200, 150, 90])
    y = SpecAugment(p=1.0, distilling=True)(x, lens)
    for b, n in enumerate(lens.tolist()):
        assert torch.equal(y[b, n:], x[b, n:])  # padding untouched
        changed = (y[b, :n] != x[b, :n])
        # Each changed entry is the utterance mean (masking, no warping).
        assert torch.allclose(y[b, :n][changed], x[b, :n].mean().expand(int(changed.sum())))
        masked_frames = changed.all(dim=1).sum()
        assert masked_frames <= int(0.15 * n)  # time-mask budget
        assert changed.any()
    # The baseline may warp: frames move, the padding still stays as it was.
    yw = SpecAugment(p=1.0, time_warp_factor=20, num_freq_masks=0, num_time_masks=0)(x, lens)
    assert not torch.equal(yw[0], x[0]) and torch.equal(yw[2, 90:], x[2, 90:])


def test_embedding_stats_match_numpy_and_constant_dims_get_std_1(data, tmp_path):
    from mvqkd.data.dataset import embedding_stats

    _, cuts, _ = data
    cuts = list(cuts)
    frames = np.concatenate([c.load_custom("teacher_embeddings") for c in cuts]).astype(np.float64)
    mean, std = embedding_stats(cuts)
    assert mean.shape == std.shape == (5,) and mean.dtype == torch.float32
    np.testing.assert_allclose(mean.numpy(), frames.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(std.numpy(), frames.std(0), rtol=1e-5)
    with NumpyHdf5Writer(tmp_path / "const") as w:
        arr = w.store_array("c", np.full((10, 5), 3.0, np.float32), frame_shift=0.02, temporal_dim=0)
    const = fastcopy(cuts[0], custom={"teacher_embeddings": arr})
    mean, std = embedding_stats([const])
    assert mean.tolist() == [3.0] * 5 and std.tolist() == [1.0] * 5
    with pytest.raises(ValueError, match=rf"cut {cuts[1].id} has no 'teacher_embeddings'"):
        embedding_stats([const, fastcopy(cuts[1], custom={})])
