"""icefall's index cuts (written the way icefall's extract_codebook_indexes writes them:
MonoCut(id, start, duration, channel) + NumpyHdf5Writer.store_array(frame_shift=0.02,
temporal_dim=0, start=0), no codebook_indexes_info, paths relative to icefall's folder)
joined onto fbank cuts with speed-perturbation id repair, and trained on directly."""

from __future__ import annotations

import os

import numpy as np
import pytest
from lhotse import CutSet, MonoCut, NumpyHdf5Writer

from mvqkd.cli import main
from mvqkd.conventions import CODEBOOK_INDEXES, info_field, num_frames
from mvqkd.data.synthetic import WORDS, make_synthetic_cuts, train_tiny_bpe
from mvqkd.indexes.icefall import canonical_id, join_icefall_indexes, split_speed
from mvqkd.training.student import train


@pytest.mark.parametrize("cut_id, base, factor", [
    ("1089-134686-0000_sp0.9", "1089-134686-0000", "0.9"),
    ("1089-134686-0000-sp1.1", "1089-134686-0000", "1.1"),
    ("sp0.9_1089-134686-0000", "1089-134686-0000", "0.9"),
    ("sp0.9-abc", "abc", "0.9"),
    ("1089-134686-0000", "1089-134686-0000", None),
    ("spoken_word", "spoken_word", None),
])
def test_split_speed(cut_id, base, factor):
    assert split_speed(cut_id) == (base, factor)


def test_canonical_id_librispeech():
    assert canonical_id("1089-134686-0000-262_sp0.9", librispeech=True) == "1089-134686-0000_sp0.9"
    assert canonical_id("1089-134686-0000-262", librispeech=True) == "1089-134686-0000"
    assert canonical_id("my-utt", librispeech=True) == "my-utt"


def _icefall_index_cuts(cuts, icefall_dir, rename, frames_delta=-1, n=4, seed=0):
    """What icefall writes, from inside ``icefall_dir`` (relative storage paths)."""
    rng = np.random.default_rng(seed)
    out, arrays = [], {}
    cwd = os.getcwd()
    os.chdir(icefall_dir)
    try:
        os.makedirs("data/vq/splits", exist_ok=True)
        with NumpyHdf5Writer("data/vq/splits/clean-100") as writer:
            for c in cuts:
                t = num_frames(c.duration) + frames_delta  # HuBERT's conv frame count
                value = rng.integers(0, 256, size=(t, n)).astype(np.uint8)
                new = MonoCut(id=rename(c.id), start=0, duration=c.duration, channel=0)
                new.codebook_indexes = writer.store_array(key=new.id, value=value, frame_shift=0.02,
                                                          temporal_dim=0, start=0)
                arrays[c.id] = value
                out.append(new)
        CutSet.from_cuts(out).to_file("data/vq/librispeech_cuts_train-clean-100-vq.jsonl.gz")
    finally:
        os.chdir(cwd)
    return icefall_dir / "data/vq/librispeech_cuts_train-clean-100-vq.jsonl.gz", arrays


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("icefall")
    make_synthetic_cuts(d, num_cuts=8, min_duration=0.6, max_duration=1.5, with_indexes=False)
    train_tiny_bpe([" ".join(WORDS)] * 3, d / "bpe", 30)
    cuts = CutSet.from_file(d / "cuts.jsonl.gz")
    # the fbank cuts carry lhotse's speed-perturbed ids for half of them
    renamed = CutSet.from_cuts(c.with_id(f"{c.id}_sp0.9") if i % 2 else c for i, c in enumerate(cuts))
    renamed.to_file(d / "fbank_cuts.jsonl.gz")
    icefall = d / "icefall"
    icefall.mkdir()
    # icefall's ids spell the affix differently ('-sp0.9')
    vq, arrays = _icefall_index_cuts(renamed, icefall, lambda i: i.replace("_sp0.9", "-sp0.9"))
    return d, vq, arrays


def _cfg(d, manifest, exp, **kw):
    return {"train_cuts": str(manifest), "bpe_model": str(d / "bpe" / "bpe.model"), "exp_dir": str(exp),
            "kd": "mvq", "model_size": "tiny", "num_epochs": 1, "max_duration": 3.0, "num_workers": 0,
            "save_every_n": 0, "warmup_steps": 2, "lr": 3e-3, "tensorboard": False, "device": "cpu", **kw}


def test_join_indexes_repairs_ids_and_trains(data, tmp_path, monkeypatch):
    d, vq, arrays = data
    out = tmp_path / "joined.jsonl.gz"
    monkeypatch.chdir(tmp_path)  # not the icefall folder: --storage-root resolves the paths
    assert main(["join-indexes", "--indexes", str(vq), "--onto", str(d / "fbank_cuts.jsonl.gz"),
                 "--storage-root", str(vq.parent.parent.parent), "--out", str(out)]) == 0
    joined = CutSet.from_file(out)
    assert len(joined) == 8
    onto_ids = [c.id for c in CutSet.from_file(d / "fbank_cuts.jsonl.gz")]
    assert [c.id for c in joined] == onto_ids  # the training ids and order are kept
    for c in joined:
        assert os.path.isabs(c.codebook_indexes.array.storage_path)
        np.testing.assert_array_equal(c.load_custom(CODEBOOK_INDEXES), arrays[c.id])
        assert c.custom[info_field(CODEBOOK_INDEXES)]["num_codebooks"] == 4
    assert (tmp_path / "joined.unmatched.txt").read_text() == ""
    result = train(_cfg(d, out, tmp_path / "exp"))
    assert result["history"]  # it trained on the icefall indexes


def test_train_directly_on_icefall_joined_manifest(data, tmp_path, caplog):
    """icefall's own join (fbank cuts + codebook_indexes, no info) is accepted: info inferred."""
    d, vq, arrays = data
    onto = CutSet.from_file(d / "fbank_cuts.jsonl.gz")
    joined, *_ = join_icefall_indexes(CutSet.from_file(vq), onto, storage_root=vq.parent.parent.parent)
    bare = CutSet.from_cuts(c.with_custom(info_field(CODEBOOK_INDEXES), None) for c in joined)
    bare.to_file(tmp_path / "icefall_joined.jsonl.gz")
    result = train(_cfg(d, tmp_path / "icefall_joined.jsonl.gz", tmp_path / "exp"))
    assert result["history"]
    assert "inferred 4 codebooks" in caplog.text
    # a genuine mismatch is still refused
    with pytest.raises(ValueError, match="num_codebooks"):
        train(_cfg(d, tmp_path / "icefall_joined.jsonl.gz", tmp_path / "exp2", num_codebooks=8))
    mixed = CutSet.from_cuts([*list(bare)[:4], *list(joined)[4:]])
    mixed.to_file(tmp_path / "mixed.jsonl.gz")
    with pytest.raises(ValueError, match="mix codebook_indexes with and without"):
        train(_cfg(d, tmp_path / "mixed.jsonl.gz", tmp_path / "exp3"))


def test_join_reports_unmatched_and_bad_frames(data, tmp_path):
    d, vq, _ = data
    onto = list(CutSet.from_file(d / "fbank_cuts.jsonl.gz"))
    extra = onto[0].with_id("not-extracted")
    index_cuts = list(CutSet.from_file(vq))
    short = index_cuts[1]
    bad = MonoCut(id=short.id, start=0, duration=short.duration, channel=0)
    bad.codebook_indexes = short.codebook_indexes.__class__(
        array=short.codebook_indexes.array, temporal_dim=0, frame_shift=0.02, start=0)
    bad.codebook_indexes.array.shape[0] -= 3  # three frames short: beyond the one-frame tolerance
    joined, unmatched, unused, mismatched = join_icefall_indexes(
        [index_cuts[0], bad, *index_cuts[2:]], [*onto, extra], storage_root=vq.parent.parent.parent)
    assert unmatched == ["not-extracted"]
    assert unused == []
    assert len(mismatched) == 1 and mismatched[0].startswith(onto[1].id)
    assert len(joined) == 7


def test_join_refuses_relative_paths_it_cannot_find(data, tmp_path):
    d, vq, _ = data
    with pytest.raises(FileNotFoundError, match="--storage-root"):
        join_icefall_indexes(CutSet.from_file(vq), CutSet.from_file(d / "fbank_cuts.jsonl.gz"),
                             storage_root=tmp_path)
