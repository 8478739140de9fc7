"""mvqkd summarize: WERs averaged over seeds and the ratios between systems, checked against
hand-computed values on a fake experiment tree."""

from pathlib import Path

import pytest

from mvqkd.decode import summary
from mvqkd.decode.results import write_wer_summary


@pytest.fixture(scope="module")
def tool():
    return summary


def write_summary(folder: Path, test_set: str, wer: float):
    folder.mkdir(parents=True, exist_ok=True)
    write_wer_summary(folder / f"wer-summary-{test_set}.txt", {"greedy_search_epoch-6-avg-1": wer})


def test_mean_over_seeds_and_ratios(tool, tmp_path):
    wer = {"baseline": (40.0, 50.0), "mvq": (30.0, 33.0), "l2": (32.0, 30.0)}
    for system, per_seed in wer.items():
        for seed, w in zip((1, 2), per_seed):
            write_summary(tmp_path / f"seed{seed}" / system / "greedy_search", "test-clean", w)
    (tmp_path / "teacher").mkdir()
    (tmp_path / "teacher" / "teacher_wer.json").write_text(  # as finetune-teacher writes it
        '{"dev": {"wer": 57.5}, "test-clean": {"wer": 62.25}, "train_time_s": 900.0}')
    md, wers = tool.summarize(tmp_path, ["baseline", "mvq", "l2"], "greedy_search", {}, ["1", "2"])
    assert wers["mvq"]["test-clean"] == [30.0, 33.0]
    assert wers["mvq"]["test-other"] == []
    rows = {line.split(" | ")[0].lstrip("| "): line for line in md.splitlines()}
    # baseline mean 45, MVQ mean 31.5 -> 0.7x; L2 mean 31 -> MVQ / L2 = 1.016x
    assert "| 31.50 (30.00, 33.00) | - | - | 0.700x | 1.016x |" in rows["MVQ-KD (codebook indexes)"]
    assert "| 45.00 (40.00, 50.00) |" in rows["baseline (no KD)"]
    assert "mean of seeds 1 2" in md
    assert "| teacher (CTC greedy) | 62.25 | - | 57.50 | - | - |" in md


def test_single_run_layout_without_seeds(tool, tmp_path):
    write_summary(tmp_path / "baseline" / "greedy_search", "test-clean", 20.0)
    write_summary(tmp_path / "mvq" / "greedy_search", "test-clean", 15.0)
    md, _ = tool.summarize(tmp_path, ["baseline", "mvq"], "greedy_search", {})
    assert "| 15.00 | - | - | 0.750x | - |" in md


def test_equal_storage_row_dev_ratio_and_storage(tool, tmp_path):
    """The l2-pca row, the dev-clean ratio to L2-KD and the bytes of every label store."""
    for system, (tc, dev) in {"mvq": (30.0, 36.0), "l2": (30.0, 30.0), "l2-pca": (40.0, 45.0)}.items():
        write_summary(tmp_path / system / "greedy_search", "test-clean", tc)
        write_summary(tmp_path / system / "greedy_search", "dev-clean", dev)
    stores = {}
    for name, size in (("mvq", 1000), ("l2", 24000), ("l2-pca", 1000)):
        d = tmp_path / "labels" / name
        d.mkdir(parents=True)
        (d / "a.h5").write_bytes(b"\0" * size)
        stores[name] = d
    md, _ = tool.summarize(tmp_path, ["mvq", "l2", "l2-pca"], "greedy_search", stores)
    rows = {line.split(" | ")[0].lstrip("| "): line for line in md.splitlines()}
    assert rows["MVQ-KD (codebook indexes)"].endswith("| 1.000x | 1.200x |")  # 30/30, dev 36/30
    assert "| 40.00 | - | 45.00 |" in rows["L2-KD at the indexes' storage (PCA, float16)"]
    assert "l2 labels take 24.00x the bytes of the MVQ indexes." in md
    assert "l2-pca labels take 1.00x the bytes of the MVQ indexes." in md


def test_store_that_was_not_built_is_named_not_listed_as_zero(tool, tmp_path):
    """`run.sh --systems mvq` passes the L2 stores too; a folder that does not exist gets no
    table row of zero bytes and zero hours, but a line saying it was not found."""
    write_summary(tmp_path / "mvq" / "greedy_search", "test-clean", 30.0)
    d = tmp_path / "labels" / "mvq"
    d.mkdir(parents=True)
    (d / "a.h5").write_bytes(b"\0" * 500)
    absent = tmp_path / "labels" / "kd"
    md, _ = tool.summarize(tmp_path, ["mvq"], "greedy_search", {"mvq": d, "l2": absent})
    assert f"| mvq ({d}) | 500 |" in md
    assert f"| l2 ({absent})" not in md
    assert f"l2 labels: {absent} not found, not listed." in md


def test_checkpoints_pick_one_decode_among_several(tool, tmp_path):
    """A folder decoded from epoch 5 alone and from epochs 4-5 averaged: --checkpoints chooses
    by the file suffix's leading epoch-E-avg-A; without it the choice is refused."""
    folder = tmp_path / "mvq" / "modified_beam_search"
    folder.mkdir(parents=True)
    for avg, wer in ((1, 30.0), (2, 27.5)):
        name = f"wer-summary-test-clean-epoch-5-avg-{avg}-modified_beam_search-beam-size-4.txt"
        write_wer_summary(folder / name, {"beam_size_4": wer})
    _, wers = tool.summarize(tmp_path, ["mvq"], "modified_beam_search", {}, checkpoints="epoch-5-avg-2")
    assert wers["mvq"]["test-clean"] == [27.5]
    _, wers = tool.summarize(tmp_path, ["mvq"], "modified_beam_search", {}, checkpoints="epoch-5-avg-1")
    assert wers["mvq"]["test-clean"] == [30.0]
    _, wers = tool.summarize(tmp_path, ["mvq"], "modified_beam_search", {}, checkpoints="epoch-4-avg-1")
    assert wers["mvq"]["test-clean"] == []
    with pytest.raises(ValueError, match="several decodes of test-clean"):
        tool.summarize(tmp_path, ["mvq"], "modified_beam_search", {})


def test_the_averaged_model_decode_is_read_only_when_asked(tool, tmp_path):
    folder = tmp_path / "mvq" / "modified_beam_search"
    folder.mkdir(parents=True)
    base = "wer-summary-test-clean-epoch-5-avg-2-modified_beam_search-beam-size-4"
    write_wer_summary(folder / f"{base}.txt", {"beam_size_4": 30.0})
    write_wer_summary(folder / f"{base}-use-averaged-model.txt", {"beam_size_4": 26.0})  # icefall's suffix
    _, plain = tool.summarize(tmp_path, ["mvq"], "modified_beam_search", {}, checkpoints="epoch-5-avg-2")
    _, avg = tool.summarize(tmp_path, ["mvq"], "modified_beam_search", {}, checkpoints="epoch-5-avg-2",
                            averaged=True)
    assert plain["mvq"]["test-clean"] == [30.0] and avg["mvq"]["test-clean"] == [26.0]
