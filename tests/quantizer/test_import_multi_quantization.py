"""Importing icefall's quantizer: a multi_quantization state_dict, checked against the
package itself (its decode and its encode are the independent truth)."""

import random

import pytest
import torch

from mvqkd.cli import main
from tests.quantizer.conftest import make_gaussian

mq = pytest.importorskip("multi_quantization")


@pytest.fixture(scope="module")
def mq_file(tmp_path_factory):
    """A multi_quantization quantizer trained briefly (dim 32, 2 bytes per frame: 2 x 256),
    saved as icefall saves it."""
    torch.manual_seed(0)
    random.seed(0)
    data = torch.from_numpy(make_gaussian(6000, 32, seed=1))
    data = data - data.mean(0)  # multi_quantization has no input mean
    trainer = mq.QuantizerTrainer(dim=32, bytes_per_frame=2, device=torch.device("cpu"),
                                  phase_one_iters=60, phase_two_iters=60)
    gen = torch.Generator().manual_seed(0)
    while not trainer.done():
        trainer.step(data[torch.randint(0, len(data), (600,), generator=gen)])
    quantizer = trainer.get_quantizer()
    path = tmp_path_factory.mktemp("mq") / "quantizer.pt"
    torch.save(quantizer.state_dict(), path)
    return path, quantizer, data


def test_decode_identical_to_multi_quantization(mq_file):
    from mvqkd.quantizer import load_quantizer

    path, ref, _ = mq_file
    q = load_quantizer(path)  # the raw icefall file is accepted directly
    assert (q.num_codebooks, q.codebook_size, q.dim) == (2, 256, 32)
    assert q.id == ref.get_id()
    codes = torch.randint(0, 256, (500, 2))
    with torch.no_grad():
        expected = ref.decode(codes)
    torch.testing.assert_close(q.decode(codes), expected, rtol=1e-6, atol=1e-6)


def test_import_cli_and_index_identical_encoder(mq_file, tmp_path):
    from mvqkd.quantizer import load_quantizer

    path, ref, data = mq_file
    out = tmp_path / "q_mq.pt"
    assert main(["import-quantizer", str(path), "--out", str(out)]) == 0
    q = load_quantizer(out)
    assert q.encoder == "multi_quantization"
    x = data[:1000]
    with torch.no_grad():
        expected = ref.encode(x, refine_indexes_iters=5, as_bytes=False)
    codes = q.encode(x)
    assert codes.dtype == torch.uint8
    assert torch.equal(codes.long(), expected)
    # the raw file directly: the same encoder
    assert torch.equal(load_quantizer(path).encode(x), codes)
    # --encoder mvqkd: same codebooks, mvqkd's search (valid codes, ICM-optimal per codebook)
    out2 = tmp_path / "q.pt"
    assert main(["import-quantizer", str(path), "--out", str(out2), "--encoder", "mvqkd"]) == 0
    q2 = load_quantizer(out2)
    assert q2.encoder == "mvqkd" and q2.id == q.id
    torch.testing.assert_close(q2.codebooks, q.codebooks)
    ours = q2.encode(x).long()
    err = ((q2.decode(ours) - x) ** 2).sum(-1)
    for m in range(2):  # no single-codebook change lowers a frame's error (ICM's fixed point)
        for k in range(0, 256, 17):
            alt = ours.clone()
            alt[:, m] = k
            assert bool((((q2.decode(alt) - x) ** 2).sum(-1) >= err - 1e-4).all())


def test_import_refuses_other_files(tmp_path, caplog):
    bad = tmp_path / "model.pt"
    torch.save({"encoder.weight": torch.zeros(2, 2)}, bad)
    assert main(["import-quantizer", str(bad), "--out", str(tmp_path / "q.pt")]) == 1
    assert "not a multi_quantization Quantizer state_dict" in caplog.text and str(bad) in caplog.text
    from mvqkd.quantizer import load_quantizer

    with pytest.raises(ValueError, match="nor a multi_quantization state_dict"):
        load_quantizer(bad)
