import h5py
import numpy as np
import pytest
import torch

from mvqkd.quantizer import load_quantizer, train_quantizer
from mvqkd.quantizer.io import load_embeddings
from mvqkd.quantizer.metrics import relative_error
from tests.conftest import run_cli


def _write_h5(path, arrays):
    """Write like lhotse's NumpyHdf5Writer: one dataset per utterance keyed by cut id."""
    from lhotse import NumpyHdf5Writer

    with NumpyHdf5Writer(path) as w:
        for key, a in arrays.items():
            w.store_array(key, a)


def test_load_npy_and_hdf5_agree(gauss, tmp_path):
    np.save(tmp_path / "x.npy", gauss[:100])
    _write_h5(tmp_path / "x.h5", {"cut-a": gauss[:60], "cut-b": gauss[60:100]})
    a = load_embeddings(tmp_path / "x.npy")
    b = load_embeddings(tmp_path / "x.h5")
    assert a.dtype == np.float32 and a.shape == (100, 32)
    np.testing.assert_array_equal(a, gauss[:100])
    np.testing.assert_array_equal(b, gauss[:100])
    assert load_embeddings(tmp_path / "x.h5", max_frames=70).shape == (70, 32)
    assert load_embeddings(tmp_path / "x.npy", max_frames=70).shape == (70, 32)


def test_nonfinite_rows_rejected_or_dropped(gauss, tmp_path, caplog):
    x = gauss[:50].copy()
    x[7, 3] = np.nan
    x[20, 0] = np.inf
    np.save(tmp_path / "bad.npy", x)
    with pytest.raises(ValueError, match=r"2 of 50 frames contain NaN/Inf \(first rows: \[7, 20\]\)"):
        load_embeddings(tmp_path / "bad.npy")
    with caplog.at_level("WARNING"):
        y = load_embeddings(tmp_path / "bad.npy", drop_nonfinite=True)
    assert y.shape == (48, 32) and "dropped 2 of 50 frames" in caplog.text
    with pytest.raises(ValueError, match="2 of 50 training frames contain NaN/Inf"):
        train_quantizer(x, 1, 4, iters=1, progress=False)


def test_empty_embeddings_rejected(tmp_path):
    np.save(tmp_path / "empty.npy", np.zeros((0, 8), np.float32))
    with pytest.raises(ValueError, match="empty embeddings file"):
        load_embeddings(tmp_path / "empty.npy")
    with h5py.File(tmp_path / "empty.h5", "w"):
        pass
    with pytest.raises(ValueError, match="empty embeddings file"):
        load_embeddings(tmp_path / "empty.h5")
    with pytest.raises(ValueError, match="empty"):
        train_quantizer(np.zeros((0, 8), np.float32), 1, 4, progress=False)


def test_zero_byte_and_garbage_npy_give_a_message_not_a_traceback(tmp_path):
    (tmp_path / "zero.npy").write_bytes(b"")
    (tmp_path / "junk.npy").write_bytes(b"not numpy at all")
    for name, want in (("zero.npy", "empty file (0 bytes)"), ("junk.npy", "cannot read as a .npy array")):
        proc = run_cli("train-quantizer", "--embeddings", tmp_path / name, "--num-codebooks", "1",
                       "--out", tmp_path / "q.pt", check=False)
        assert proc.returncode == 1 and want in proc.stderr and "Traceback" not in proc.stderr


def test_dim_mismatch_names_both_dims(small_q):
    with pytest.raises(ValueError, match="embedding dim 31 does not match the quantizer's dim 32"):
        small_q.encode(torch.zeros(3, 31))


def test_fewer_frames_than_codewords(gauss):
    with pytest.raises(ValueError, match="100 training frames are fewer than codebook_size=256"):
        train_quantizer(gauss[:100], 2, 256, progress=False)


def test_not_a_quantizer_file(tmp_path, gauss):
    np.save(tmp_path / "x.npy", gauss[:5])
    torch.save({"model": torch.zeros(3)}, tmp_path / "ckpt.pt")
    for p in (tmp_path / "x.npy", tmp_path / "ckpt.pt"):
        with pytest.raises(ValueError, match="is (not|neither) an mvqkd quantizer file"):
            load_quantizer(p)
    with pytest.raises(FileNotFoundError):
        load_quantizer(tmp_path / "missing.pt")


def test_cli_end_to_end(gauss, tmp_path):
    np.save(tmp_path / "x.npy", gauss[:1500])
    _write_h5(tmp_path / "x.h5", {"u1": gauss[:700], "u2": gauss[700:1500]})
    q_path, codes_path, png = tmp_path / "q.pt", tmp_path / "codes.npy", tmp_path / "r.png"
    out = run_cli("train-quantizer", "--embeddings", tmp_path / "x.h5", "--num-codebooks", 2,
                  "--codebook-size", 16, "--out", q_path, "--iters", 2, "--seed", 1).stdout
    assert "held-out relative error" in out
    q = load_quantizer(q_path)
    run_cli("quantize", "--quantizer", q_path, "--embeddings", tmp_path / "x.npy", "--out", codes_path)
    codes = np.load(codes_path)
    assert codes.dtype == np.uint8 and codes.shape == (1500, 2)
    np.testing.assert_array_equal(codes, q.encode(torch.from_numpy(gauss[:1500])).numpy())
    rep = run_cli("quantizer-report", q_path, "--embeddings", tmp_path / "x.npy", "--plot", png).stdout
    x = torch.from_numpy(gauss[:1500])
    want = relative_error(x, q.decode(torch.from_numpy(codes)))
    assert f"relative error      {want:.4f}" in rep
    assert "dead codewords" in rep and "perplexity" in rep
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
    bad = run_cli("quantize", "--quantizer", tmp_path / "x.npy", "--embeddings", tmp_path / "x.npy",
                  "--out", codes_path, check=False)
    assert bad.returncode == 1 and "is not an mvqkd quantizer file" in bad.stderr


def test_cli_normalize_per_dim(gauss, tmp_path):
    np.save(tmp_path / "x.npy", gauss[:1500])
    q_path = tmp_path / "q.pt"
    run_cli("train-quantizer", "--embeddings", tmp_path / "x.npy", "--num-codebooks", 2,
            "--codebook-size", 16, "--out", q_path, "--iters", 1, "--normalize", "per-dim")
    q = load_quantizer(q_path)
    assert q.history["args"]["normalize"] == "per-dim"
    # trained on a random 95% of the frames (the rest is held out): about std(dim) x sqrt(32)
    assert q.scale.shape == (32,)
    np.testing.assert_allclose(q.scale.numpy(), gauss[:1500].std(0) * np.sqrt(32), rtol=0.05)
    bad = run_cli("train-quantizer", "--embeddings", tmp_path / "x.npy", "--num-codebooks", 2,
                  "--out", q_path, "--normalize", "pca", check=False)
    assert bad.returncode == 2 and "--normalize" in bad.stderr
