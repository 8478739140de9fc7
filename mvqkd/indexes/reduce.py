"""Float teacher embeddings at the storage of codebook indexes: the equal-storage control.

``reduce_embeddings`` reads the ``teacher_embeddings`` of a manifest (``mvqkd
dump-embeddings --all``), standardises each dimension, fits PCA on a seeded sample of
frames and stores the first ``dims`` principal components of every frame as float16
(``dims`` x 2 bytes per frame: ``dims = N / 2`` matches N one-byte codebooks). The result
is an ordinary ``teacher_embeddings`` manifest (shards, CRC-32s, info with ``pca_dims``),
so ``mvqkd train --kd l2`` regresses it like any float target. The projection
(``mean``, ``std``, ``components`` (D, dims)) is saved to ``OUT/pca.pt``.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import torch

from mvqkd.conventions import TEACHER_EMBEDDINGS, array_checksum, checksum_field, info_field

logger = logging.getLogger(__name__)


def fit_pca(cuts: list, dims: int, sample_frames: int, seed: int) -> dict:
    """Per-dimension standardisation and the top ``dims`` principal directions of a seeded
    sample of at most ``sample_frames`` frames: ``{"mean", "std": (D,), "components":
    (D, dims), "explained": share of the standardised variance kept}``."""
    order = list(cuts)
    random.Random(seed).shuffle(order)
    frames, n = [], 0
    for c in order:
        a = np.asarray(c.load_custom(TEACHER_EMBEDDINGS), dtype=np.float64)
        frames.append(a)
        n += a.shape[0]
        if n >= sample_frames:
            break
    x = np.concatenate(frames)[:sample_frames]
    if not 1 <= dims <= x.shape[1]:
        raise ValueError(f"--dims {dims}: the embeddings have {x.shape[1]} dimensions")
    mean, std = x.mean(0), x.std(0)
    std[std < 1e-6] = 1.0
    z = (x - mean) / std
    _, s, vt = np.linalg.svd(z - z.mean(0), full_matrices=False)
    var = s ** 2
    return {"mean": torch.from_numpy(mean).float(), "std": torch.from_numpy(std).float(),
            "components": torch.from_numpy(vt[:dims].T.copy()).float(),
            "explained": float(var[:dims].sum() / var.sum())}


def project(pca: dict, emb: np.ndarray) -> np.ndarray:
    """(T, D) embeddings -> (T, dims) float16 principal components."""
    z = (torch.as_tensor(np.asarray(emb, dtype=np.float32)) - pca["mean"]) / pca["std"]
    return (z @ pca["components"]).numpy().astype(np.float16)


def reduce_embeddings(cuts_path, out_dir, dims: int, out_manifest=None, sample_frames: int = 200_000,
                      seed: int = 0, shard_size: int = 200) -> Path:
    """Write the ``dims``-component embeddings of every cut of ``cuts_path`` to ``out_dir``
    (see the module docstring); returns the output manifest."""
    from lhotse import CutSet
    from lhotse.array import Array, TemporalArray

    from mvqkd.data.cuts import load_cuts
    from mvqkd.data.labels import load_checked
    from mvqkd.indexes.store import ShardWriter, save_cuts_atomic

    cuts = list(load_cuts(cuts_path, "--cuts"))
    missing = [c.id for c in cuts if not c.has_custom(TEACHER_EMBEDDINGS)]
    if missing:
        raise ValueError(f"--cuts {cuts_path}: {len(missing)} cuts have no teacher_embeddings "
                         f"(write them with mvqkd dump-embeddings --all), e.g. {missing[:3]}")
    out_dir = Path(out_dir)
    (out_dir / "shards").mkdir(parents=True, exist_ok=True)
    pca = fit_pca(cuts, dims, sample_frames, seed)
    torch.save({k: v for k, v in pca.items()}, out_dir / "pca.pt")
    logger.info("PCA to %d dims keeps %.1f%% of the standardised variance", dims, 100 * pca["explained"])
    out = []
    for start in range(0, len(cuts), shard_size):
        path = out_dir / "shards" / f"{TEACHER_EMBEDDINGS}-{start // shard_size:05d}.h5"
        writer = ShardWriter(path)
        for c in cuts[start:start + shard_size]:
            arr = project(pca, load_checked(c, TEACHER_EMBEDDINGS))
            key = writer.write(c.id, arr)
            src = c.custom[TEACHER_EMBEDDINGS]
            ta = TemporalArray(array=Array(storage_type=writer.name, storage_path=str(path.resolve()),
                                           storage_key=key, shape=list(arr.shape)),
                               temporal_dim=0, frame_shift=src.frame_shift, start=src.start)
            info = {**c.custom[info_field(TEACHER_EMBEDDINGS)], "dim": dims,
                    "pca_of_dim": int(pca["mean"].numel()), "pca_explained": round(pca["explained"], 4)}
            out.append(c.with_custom(TEACHER_EMBEDDINGS, ta).with_custom(info_field(TEACHER_EMBEDDINGS), info)
                       .with_custom(checksum_field(TEACHER_EMBEDDINGS), array_checksum(arr)))
        writer.close()
    manifest = Path(out_manifest) if out_manifest else out_dir / "cuts.jsonl.gz"
    save_cuts_atomic(CutSet.from_cuts(out), manifest)
    return manifest
