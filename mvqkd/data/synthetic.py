"""A tiny synthetic training set: fbank cuts with transcripts, random codebook indexes
(and optionally float teacher embeddings) stored as the extraction layer stores them
(lhotse ``NumpyHdf5Writer`` TemporalArrays, FORMATS.md), plus a small BPE model.

Used by the training tests and ``tools/bench_train.py``; small enough for CPU in seconds.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from mvqkd.conventions import (CODEBOOK_INDEXES, NUM_MEL_BINS, SAMPLE_RATE, TEACHER_EMBEDDINGS,
                               TEACHER_FRAME_SHIFT, array_checksum, checksum_field, num_frames)

logger = logging.getLogger(__name__)

WORDS = "THE CAT SAT ON A MAT DOG RAN TO RED BIG SUN".split()


def train_tiny_bpe(texts: list[str], out_dir: str | Path, vocab_size: int = 30) -> Path:
    """Train a sentencepiece model on ``texts`` with ``<blk>``=0, ``<sos/eos>``=1, ``<unk>``=2."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    texts_file = out_dir / "transcript_words.txt"
    texts_file.write_text("\n".join(texts) + "\n")
    from mvqkd.data.tokenizer import train_bpe

    return Path(train_bpe(texts_file, out_dir, vocab_size))


def make_synthetic_cuts(
    out_dir: str | Path,
    num_cuts: int = 8,
    min_duration: float = 1.0,
    max_duration: float = 2.0,
    num_codebooks: int = 4,
    codebook_size: int = 16,
    quantizer_id: str = "q-synthetic",
    with_indexes: bool = True,
    embedding_dim: int | None = None,
    seed: int = 0,
):
    """Write ``num_cuts`` cuts of noise audio with 80-bin fbank under ``out_dir``.

    Each cut gets a random upper-case transcript; with ``with_indexes`` a random uint8
    ``codebook_indexes`` TemporalArray (round(duration / 0.02), N) and its
    ``codebook_indexes_info``; with ``embedding_dim`` a float16 ``teacher_embeddings``
    (T50, D). The audio is noise whose spectral tilt depends on the first word, so a
    model can learn something. Returns the eager CutSet (also saved as ``cuts.jsonl.gz``).
    """
    import soundfile as sf
    from lhotse import CutSet, Fbank, FbankConfig, Recording
    from lhotse.features.io import NumpyHdf5Writer
    from lhotse.supervision import SupervisionSegment

    out_dir = Path(out_dir)
    (out_dir / "wav").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sr = SAMPLE_RATE
    cuts = []
    for i in range(num_cuts):
        dur = round(float(rng.uniform(min_duration, max_duration)), 2)
        words = [WORDS[j] for j in rng.integers(0, len(WORDS), size=int(rng.integers(1, 4)))]
        audio = rng.standard_normal(int(dur * sr)).astype(np.float32) * 0.1
        audio = np.convolve(audio, np.ones(1 + WORDS.index(words[0])) / 4, mode="same")
        path = out_dir / "wav" / f"utt{i}.wav"
        sf.write(path, audio.astype(np.float32), sr)
        rec = Recording.from_file(path, recording_id=f"utt{i}")
        sup = SupervisionSegment(
            id=f"utt{i}", recording_id=rec.id, start=0, duration=rec.duration, text=" ".join(words)
        )
        cut = rec.to_cut()
        cut.supervisions = [sup]
        cuts.append(cut)
    cuts = CutSet.from_cuts(cuts).compute_and_store_features(
        Fbank(FbankConfig(num_mel_bins=NUM_MEL_BINS)),
        storage_path=out_dir / "feats",
        storage_type=NumpyHdf5Writer,  # lilcom is optional; plain HDF5 here
        num_jobs=1,
        progress_bar=False,
    )
    if with_indexes or embedding_dim:
        cuts = _attach_teacher_arrays(
            cuts, out_dir, rng, num_codebooks, codebook_size, quantizer_id,
            with_indexes, embedding_dim, NumpyHdf5Writer,
        )
    cuts = cuts.to_eager()
    cuts.to_file(out_dir / "cuts.jsonl.gz")
    return cuts


def _attach_teacher_arrays(
    cuts, out_dir, rng, num_codebooks, codebook_size, quantizer_id, with_indexes, dim, writer_cls
):
    from lhotse import CutSet

    out = []
    with writer_cls(out_dir / "teacher_arrays") as writer:
        for cut in cuts:
            t50 = num_frames(cut.duration)
            if with_indexes:
                idx = rng.integers(0, codebook_size, size=(t50, num_codebooks)).astype(np.uint8)
                cut.codebook_indexes = writer.store_array(
                    f"{cut.id}-idx", idx, frame_shift=TEACHER_FRAME_SHIFT, temporal_dim=0
                )
                cut.custom[checksum_field(CODEBOOK_INDEXES)] = array_checksum(idx)
                cut.codebook_indexes_info = {
                    "quantizer_id": quantizer_id,
                    "num_codebooks": num_codebooks,
                    "codebook_size": codebook_size,
                    "teacher": "synthetic",
                    "layer": 0,
                }
            if dim:
                emb = rng.standard_normal((t50, dim)).astype(np.float16)
                cut.teacher_embeddings = writer.store_array(
                    f"{cut.id}-emb", emb, frame_shift=TEACHER_FRAME_SHIFT, temporal_dim=0
                )
                cut.custom[checksum_field(TEACHER_EMBEDDINGS)] = array_checksum(emb)
                cut.teacher_embeddings_info = {"teacher": "synthetic", "layer": 0, "dim": dim}
            out.append(cut)
    return CutSet.from_cuts(out)
