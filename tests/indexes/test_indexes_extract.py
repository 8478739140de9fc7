"""extract / dump-embeddings through the library: content, bad input, join, validate."""

from __future__ import annotations

import hashlib
import json
import shutil
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from lhotse import CutSet

from mvqkd.indexes.audio import load_cut_audio
from mvqkd.conventions import fit_frames, num_frames
from mvqkd.indexes.make_cuts import cuts_from_audio_dir
from mvqkd.indexes.run import run_extraction
from mvqkd.indexes.targets import EMBEDDINGS, INDEXES, TargetSpec
from mvqkd.indexes.validate import validate_cuts
from mvqkd.quantizer import load_quantizer
from mvqkd.teacher.model import load_teacher
from tests.indexes.indexes_helpers import LAYER, write_tone


def _reference(cut, teacher, quantizer=None):
    """One cut alone, without the pipeline: teacher -> (quantizer) -> pad/trim."""
    emb = teacher.extract([load_cut_audio(cut)], LAYER)[0]
    out = quantizer.encode(emb).numpy() if quantizer is not None else emb.half().numpy()
    return fit_frames(out, num_frames(cut.duration))


@pytest.fixture(scope="module")
def extracted(cuts_path, tiny_teacher, quantizer_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("ext")
    spec = TargetSpec(INDEXES, str(tiny_teacher), LAYER, str(quantizer_path))
    result = run_extraction(cuts_path, spec, out, shard_size=3, max_duration=3.0, device="cpu")
    return result


def _content_hash(folder) -> str:
    """BLAKE2b (8 bytes) over config.json and the weight files, as documented in FORMATS.md."""
    h = hashlib.blake2b(digest_size=8)
    for f in [Path(folder) / "config.json"] + sorted(Path(folder).glob("*.safetensors")):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def test_extract_matches_one_cut_at_a_time(extracted, cuts_path, tiny_teacher, quantizer_path):
    teacher, q = load_teacher(tiny_teacher, device="cpu"), load_quantizer(quantizer_path)
    assert extracted.num_failed == 0
    out = CutSet.from_file(extracted.manifest)
    src = CutSet.from_file(cuts_path)
    assert [c.id for c in out] == [c.id for c in src]
    for cut in out:
        arr = cut.load_codebook_indexes()
        assert arr.dtype == np.uint8 and arr.shape == (round(cut.duration / 0.02 + 1e-9), 4)
        np.testing.assert_array_equal(arr, _reference(cut, teacher, q))
        ta = cut.codebook_indexes
        assert ta.frame_shift == 0.02 and ta.start == 0
        assert cut.codebook_indexes_info == {"quantizer_id": q.id, "num_codebooks": 4, "codebook_size": 16,
                                             "teacher": "tiny", "layer": LAYER,
                                             "teacher_path": str(Path(tiny_teacher).resolve()),
                                             "teacher_hash": _content_hash(tiny_teacher)}
        # the CRC-32 of the stored bytes, checked whenever training reads the array
        assert cut.codebook_indexes_crc32 == zlib.crc32(np.ascontiguousarray(arr).tobytes())
    n, problems = validate_cuts(out, quantizer_path)
    assert n == len(src) and problems == []


def test_bad_inputs_are_reported_and_the_job_continues(tmp_path, tiny_teacher, quantizer_path, caplog, capsys):
    d = tmp_path / "audio"
    d.mkdir()
    write_tone(d / "good.wav", 0.7)
    write_tone(d / "rate22k.wav", 0.6, sr=22050)
    write_tone(d / "stereo.wav", 0.5, channels=2)
    write_tone(d / "short.wav", 300 / 16000)
    write_tone(d / "corrupt.wav", 0.5)
    x = np.zeros(8000, np.float32)
    x[100] = np.inf
    import soundfile as sf

    sf.write(d / "inf.wav", x, 16000, subtype="FLOAT")
    cuts = cuts_from_audio_dir(d)
    (d / "corrupt.wav").write_bytes(b"RIFF\x00\x00garbage" * 10)
    cuts.to_file(tmp_path / "cuts.jsonl.gz")
    caplog.set_level("INFO")
    spec = TargetSpec(INDEXES, str(tiny_teacher), LAYER, str(quantizer_path))
    r = run_extraction(tmp_path / "cuts.jsonl.gz", spec, tmp_path / "out", shard_size=2, device="cpu")
    report = {f["cut_id"]: f["kind"] for f in map(json.loads, r.report.read_text().splitlines())}
    assert report == {"corrupt": "unreadable_audio", "short": "too_short", "inf": "nonfinite_audio"}
    assert r.num_failed == 3 and r.num_written == 3 and r.num_input == 6
    assert sorted(c.id for c in CutSet.from_file(r.manifest)) == ["good", "rate22k", "stereo"]
    assert "resampling 22050 Hz" in caplog.text and "downmixing 2 channels" in caplog.text
    # the command: same arguments resume (nothing left to do); exit status 1 and a counting final line
    from mvqkd.cli import main as cli

    rc = cli(["extract", "--cuts", str(tmp_path / "cuts.jsonl.gz"), "--teacher", str(tiny_teacher),
              "--layer", str(LAYER), "--quantizer", str(quantizer_path), "--out-dir", str(tmp_path / "out"),
              "--shard-size", "2", "--device", "cpu"])
    assert rc == 1
    assert capsys.readouterr().out.strip().splitlines()[-1].endswith(
        f"3 cuts written to {r.manifest}; 3 failed (report: {r.report})")


def test_nonfinite_teacher_output_is_a_per_cut_failure(tmp_path, cuts_path, tiny_teacher, quantizer_path):
    from transformers import AutoModel

    broken = tmp_path / "broken"
    model = AutoModel.from_pretrained(tiny_teacher)
    with torch.no_grad():
        model.encoder.layers[0].feed_forward.output_dense.bias.fill_(float("inf"))
    model.save_pretrained(broken)
    shutil.copy(tiny_teacher / "preprocessor_config.json", broken)
    spec = TargetSpec(INDEXES, str(broken), LAYER, str(quantizer_path))
    r = run_extraction(cuts_path, spec, tmp_path / "out", device="cpu")
    kinds = {json.loads(line)["kind"] for line in r.report.read_text().splitlines()}
    assert kinds == {"nonfinite_teacher_output"} and r.num_failed == len(CutSet.from_file(cuts_path))


def test_quantizer_dim_mismatch_is_refused_before_any_work(tmp_path, cuts_path, tiny_teacher):
    from mvqkd.quantizer import train_quantizer

    q = train_quantizer(torch.randn(300, 32), 2, 4, iters=1, progress=False)
    q.save(tmp_path / "q32.pt")
    spec = TargetSpec(INDEXES, str(tiny_teacher), LAYER, str(tmp_path / "q32.pt"))
    with pytest.raises(ValueError, match="expects dim 32 but teacher .* gives dim 64"):
        run_extraction(cuts_path, spec, tmp_path / "out", device="cpu")
    assert not (tmp_path / "out").exists()


def test_join_onto_other_cuts_by_id(extracted, cuts_path, tmp_path):
    src = list(CutSet.from_file(cuts_path))
    # target: reversed order, one cut missing, one unknown cut, one with a different duration
    target = src[::-1][:-1]
    target[0] = target[0].truncate(duration=target[0].duration - 0.2, preserve_id=True)
    unknown = src[1].with_id("unknown")
    target = CutSet.from_cuts(target + [unknown])
    from mvqkd.indexes.join import join_by_id

    joined, failures = join_by_id(CutSet.from_file(extracted.manifest), target, INDEXES)
    by_id = {c.id: c for c in CutSet.from_file(extracted.manifest)}
    assert [c.id for c in joined] == [c.id for c in target][1:-1]
    for c in joined:
        np.testing.assert_array_equal(c.load_codebook_indexes(), by_id[c.id].load_codebook_indexes())
        assert c.codebook_indexes_info == by_id[c.id].codebook_indexes_info
    assert {(f["cut_id"], f["kind"]) for f in failures} == {
        (target[0].id, "join_mismatch"), ("unknown", "not_extracted"), (src[0].id, "not_in_join_target")}


def test_validate_catches_wrong_id_truncated_array_missing_key(extracted, quantizer_path, tmp_path):
    import dataclasses

    out = tmp_path / "planted"
    shutil.copytree(extracted.manifest.parent / "shards", out)
    cuts = []
    for c in CutSet.from_file(extracted.manifest):  # point at the copied shards
        ta = c.codebook_indexes
        moved = dataclasses.replace(ta.array, storage_path=str(out / ta.array.storage_path.split("/")[-1]))
        cuts.append(c.with_custom("codebook_indexes", dataclasses.replace(ta, array=moved)))
    wrong, trunc, gone, nofield = cuts[2], cuts[1], cuts[4], cuts[6]
    wrong.codebook_indexes_info = dict(wrong.codebook_indexes_info, quantizer_id="0123456789abcdef")
    for cut, keep in [(trunc, 3), (gone, None)]:
        with h5py.File(cut.codebook_indexes.array.storage_path, "r+") as f:
            data = f[cut.id][:]
            del f[cut.id]
            if keep is not None:
                f.create_dataset(cut.id, data=data[:-keep])
    del nofield.custom["codebook_indexes"]
    n, problems = validate_cuts(cuts, quantizer_path)
    assert n == len(cuts)
    assert {(p.cut_id, p.kind) for p in problems} == {
        (wrong.id, "wrong_quantizer"), (wrong.id, "inconsistent_info"), (trunc.id, "wrong_shape"),
        (gone.id, "unloadable"), (nofield.id, "missing_field")}


def test_dump_embeddings_subset_and_all(cuts_path, tiny_teacher, tmp_path):
    from mvqkd.indexes.embeddings import dump_embeddings, select_subset
    from mvqkd.quantizer.io import load_embeddings

    teacher = load_teacher(tiny_teacher, device="cpu")
    all_cuts = list(CutSet.from_file(cuts_path))
    written, failed = dump_embeddings(cuts_path, tiny_teacher, LAYER, tmp_path / "emb.h5", max_utts=3, seed=5)
    subset = select_subset(all_cuts, max_utts=3, seed=5)
    assert (written, failed) == (3, 0) and len({c.id for c in subset}) == 3
    assert select_subset(all_cuts, max_utts=3, seed=5) == subset  # seeded
    assert len(select_subset(all_cuts, max_frames=60, seed=5)) == 1 + sum(
        1 for k in range(1, len(subset)) if sum(num_frames(c.duration) for c in subset[:k]) < 60)
    with h5py.File(tmp_path / "emb.h5") as f:
        assert sorted(f) == sorted(c.id for c in subset)
        for c in subset:
            ref = teacher.extract([load_cut_audio(c)], LAYER)[0].numpy()
            np.testing.assert_allclose(f[c.id][:], ref, atol=1e-5)
    assert load_embeddings(tmp_path / "emb.h5").shape[1] == 64
    r = run_extraction(cuts_path, TargetSpec(EMBEDDINGS, str(tiny_teacher), LAYER), tmp_path / "all",
                       device="cpu", join_onto=cuts_path)
    out = CutSet.from_file(r.manifest)
    assert r.num_failed == 0 and len(out) == len(all_cuts)
    for c in out:
        np.testing.assert_allclose(c.load_teacher_embeddings().astype(np.float32),
                                   _reference(c, teacher).astype(np.float32), atol=1e-2)
        assert c.teacher_embeddings_info == {"teacher": "tiny", "layer": LAYER, "dim": 64,
                                             "teacher_path": str(Path(tiny_teacher).resolve()),
                                             "teacher_hash": _content_hash(tiny_teacher)}
    assert validate_cuts(out, field=EMBEDDINGS)[1] == []


def test_reduce_embeddings_is_the_pca_of_the_standardised_embeddings(tiny_teacher, cuts_path, tmp_path):
    """reduce-embeddings stores the top principal components (numpy's SVD, independently)."""
    from mvqkd.indexes.reduce import reduce_embeddings

    r = run_extraction(cuts_path, TargetSpec(EMBEDDINGS, str(tiny_teacher), LAYER), tmp_path / "all",
                       device="cpu")
    src = CutSet.from_file(r.manifest)
    out = reduce_embeddings(r.manifest, tmp_path / "pca", 4, sample_frames=10 ** 6)
    x = np.concatenate([c.load_teacher_embeddings() for c in src]).astype(np.float64)
    std = x.std(0)
    std[std < 1e-6] = 1.0
    z = (x - x.mean(0)) / std
    _, s, vt = np.linalg.svd(z - z.mean(0), full_matrices=False)
    reduced = CutSet.from_file(out)
    got = np.concatenate([c.load_teacher_embeddings() for c in reduced]).astype(np.float64)
    want = z @ vt[:4].T
    # principal directions are defined up to sign
    for k in range(4):
        sign = np.sign(np.dot(got[:, k], want[:, k]))
        np.testing.assert_allclose(sign * got[:, k], want[:, k], atol=2e-2 * np.abs(want[:, k]).max())
    assert all(c.teacher_embeddings_info["dim"] == 4 for c in reduced)
    assert validate_cuts(reduced, field=EMBEDDINGS)[1] == []
    assert abs(reduced[0].teacher_embeddings_info["pca_explained"] - (s[:4] ** 2).sum() / (s ** 2).sum()) < 1e-3


def test_extract_cli_front_end_chunking_gives_the_whole_file_codes(tmp_path, tiny_teacher, quantizer_path):
    """`mvqkd extract --chunk-mode front-end` on a 25 s recording in 8 s chunks writes the codes of a
    whole-file pass (--chunk-seconds 1e9); the plan records the mode, and a resume with the
    other mode is refused."""
    from mvqkd.cli import main

    (tmp_path / "audio").mkdir()
    write_tone(tmp_path / "audio" / "long.wav", 25.0, seed=3)
    cuts = tmp_path / "cuts.jsonl.gz"
    assert main(["make-cuts", str(tmp_path / "audio"), "--out", str(cuts)]) == 0
    common = ["extract", "--cuts", str(cuts), "--teacher", str(tiny_teacher), "--layer", str(LAYER),
              "--quantizer", str(quantizer_path), "--device", "cpu"]
    assert main(common + ["--out-dir", str(tmp_path / "whole"), "--chunk-seconds", "1e9"]) == 0
    assert main(common + ["--out-dir", str(tmp_path / "front"), "--chunk-seconds", "8",
                          "--chunk-mode", "front-end"]) == 0
    assert main(common + ["--out-dir", str(tmp_path / "windows"), "--chunk-seconds", "8", "--chunk-overlap", "2"]) == 0
    codes = {name: CutSet.from_file(tmp_path / name / "cuts.jsonl.gz")[0].load_codebook_indexes()
             for name in ("whole", "front", "windows")}
    assert codes["front"].shape == (1250, 4)
    np.testing.assert_array_equal(codes["front"], codes["whole"])
    assert (codes["windows"] != codes["whole"]).any()  # the default mode's windows do change codes
    assert json.loads((tmp_path / "front" / "plan.json").read_text())["chunking"] == [8.0, "front-end"]
    with pytest.raises(ValueError, match="chunking: was \\[8.0, 'front-end'\\], now \\[8.0, 5.0\\]"):
        run_extraction(cuts, TargetSpec(INDEXES, str(tiny_teacher), LAYER, str(quantizer_path)),
                       tmp_path / "front", device="cpu", chunk_seconds=8.0)
