"""tools/compare_runs.py: run directories and manifests compared by contents, not bytes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import torch

TOOL = Path(__file__).resolve().parents[1] / "tools" / "compare_runs.py"


def make_run(root: Path, quantizer_id: str, weight: torch.Tensor) -> Path:
    (root / "exp/teacher").mkdir(parents=True)
    (root / "exp/teacher/model.safetensors").write_bytes(b"teacher-bytes")
    (root / "data/vq/shards").mkdir(parents=True)
    torch.save({"id": quantizer_id, "codebooks": torch.arange(6.0).view(2, 3)}, root / "data/vq/quantizer.pt")
    with h5py.File(root / "data/vq/shards/a.h5", "w") as f:
        f["cut-1"] = np.arange(8, dtype=np.uint8).reshape(4, 2)
    (root / "exp/seed1/mvq").mkdir(parents=True)
    model = {"w": weight, "b": torch.zeros(2, dtype=torch.bfloat16)}
    torch.save({"model": model}, root / "exp/seed1/mvq/epoch-1.pt")
    return root


def compare(*args: Path | str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True)


def test_same_contents_with_other_bytes_are_identical(tmp_path):
    w = torch.randn(3, 3)
    a = make_run(tmp_path / "a", "id-1", w)
    b = make_run(tmp_path / "b", "id-2", w.clone())  # another id: other bytes, same tensors
    out = compare(a, b)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "4/4 identical" in out.stdout
    assert "| data/vq/quantizer.pt | True | False |" in out.stdout


def test_one_changed_value_is_found_directly_and_through_a_manifest(tmp_path):
    w = torch.randn(3, 3)
    a = make_run(tmp_path / "a", "id", w)
    w2 = w.clone()
    w2[1, 2] = torch.nextafter(w2[1, 2], torch.tensor(10.0))  # the last bit of one value
    assert not torch.equal(w, w2)
    b = make_run(tmp_path / "b", "id", w2)
    out = compare(a, b)
    assert out.returncode == 1 and "3/4 identical" in out.stdout
    assert "| exp/seed1/mvq/epoch-1.pt | False |" in out.stdout

    manifest = tmp_path / "a.tsv"
    written = compare("--write-manifest", a)
    assert written.returncode == 0
    manifest.write_text(written.stdout)
    assert len([x for x in written.stdout.splitlines() if not x.startswith("#")]) == 4
    assert compare(manifest, a).returncode == 0
    out = compare(manifest, b)
    assert out.returncode == 1 and "3/4 identical" in out.stdout


def test_a_bad_manifest_line_names_the_file_and_line(tmp_path):
    bad = tmp_path / "m.tsv"
    bad.write_text("# header\nexp/teacher/model.safetensors abc\n")
    out = compare(bad, make_run(tmp_path / "r", "id", torch.zeros(1)))
    assert out.returncode != 0 and f"{bad}:2" in out.stderr


def test_a_skipped_entry_leaves_the_digest_as_without_it(tmp_path):
    """A student saved with an extra entry (the running mean of --average-period) differs
    from the same weights saved without it, unless --skip-entry names it; then it matches
    the other run directly and through that run's manifest."""
    w = torch.randn(3, 3)
    a = make_run(tmp_path / "a", "id", w)
    b = make_run(tmp_path / "b", "id", w.clone())
    ckpt = b / "exp/seed1/mvq/epoch-1.pt"
    torch.save({**torch.load(ckpt, weights_only=True), "model_avg": {"w": w.double()},
                "model_avg_count": 3}, ckpt)
    assert "3/4 identical" in compare(a, b).stdout
    out = compare("--skip-entry", "model_avg", a, b)
    assert out.returncode == 0 and "4/4 identical" in out.stdout, out.stdout + out.stderr
    manifest = tmp_path / "a.tsv"
    manifest.write_text(compare("--write-manifest", a).stdout)
    assert compare("--skip-entry", "model_avg", manifest, b).returncode == 0
    # a changed weight is still found
    torch.save({"model": {"w": w + 1, "b": torch.zeros(2, dtype=torch.bfloat16)}, "model_avg": {}}, ckpt)
    assert compare("--skip-entry", "model_avg", a, b).returncode == 1
