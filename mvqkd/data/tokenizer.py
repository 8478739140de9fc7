"""Sentencepiece BPE with icefall's conventions.

Ids: ``<blk>`` = 0 (transducer blank), ``<sos/eos>`` = 1, ``<unk>`` = 2; no bos/eos pieces.
``train_bpe`` writes ``OUT/bpe.model``, ``OUT/bpe.vocab`` and ``OUT/tokens.txt``
(``<piece> <id>`` per line, as icefall's lang dirs hold).
"""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def write_tokens(sp, path: Path) -> None:
    """icefall's / sherpa-onnx's ``tokens.txt`` of sentencepiece model ``sp``: ``<piece> <id>``
    per line, UTF-8 (pieces hold ``\u2581`` and the corpus's own letters)."""
    path.write_text("".join(f"{sp.id_to_piece(i)} {i}\n" for i in range(sp.get_piece_size())),
                    encoding="utf-8")


def train_bpe(texts_file: str | Path, out_dir: str | Path, vocab_size: int) -> Path:
    """Train a BPE model on ``texts_file`` (one transcript per line). Returns ``OUT/bpe.model``.

    Idempotent: an existing ``bpe.model`` is kept.
    """
    import sentencepiece as spm

    texts_file, out_dir = Path(texts_file), Path(out_dir)
    model = out_dir / "bpe.model"
    if model.exists():
        logger.info("%s exists, skipping", model)
        return model
    if not texts_file.is_file() or texts_file.stat().st_size == 0:
        raise ValueError(f"BPE training text {texts_file} is missing or empty")
    out_dir.mkdir(parents=True, exist_ok=True)
    spm.SentencePieceTrainer.train(
        input=str(texts_file), model_prefix=str(out_dir / "tmp.bpe"), model_type="bpe",
        vocab_size=vocab_size, character_coverage=1.0, input_sentence_size=100_000_000,
        user_defined_symbols=["<blk>", "<sos/eos>"], unk_id=2, bos_id=-1, eos_id=-1,
        num_threads=2, minloglevel=2, hard_vocab_limit=False,
    )
    for suffix in ("vocab", "model"):  # model last: its presence means "done"
        (out_dir / f"tmp.bpe.{suffix}").replace(out_dir / f"bpe.{suffix}")
    sp = load_bpe(model)
    write_tokens(sp, out_dir / "tokens.txt")
    logger.info("BPE model with %d pieces -> %s", sp.get_piece_size(), model)
    return model


def load_bpe(path: str | Path):
    """Load a sentencepiece model; checks icefall's id conventions."""
    import sentencepiece as spm

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"BPE model {path} not found (run the BPE stage of prepare.sh)")
    sp = spm.SentencePieceProcessor(model_file=str(path))
    if sp.piece_to_id("<blk>") != 0:
        raise ValueError(f"{path}: '<blk>' must have id 0 (icefall convention), got {sp.piece_to_id('<blk>')}")
    return sp


def write_transcripts(cut_manifests: list[str | Path], out: str | Path) -> Path:
    """Collect the supervision texts of the given cut/supervision manifests into one file."""
    from lhotse import load_manifest_lazy

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name("tmp." + out.name)
    with open(tmp, "w", encoding="utf-8") as f:
        for manifest in cut_manifests:
            for item in load_manifest_lazy(manifest):
                for sup in getattr(item, "supervisions", [item]):
                    if sup.text and sup.text.strip():
                        f.write(sup.text.strip() + "\n")
    tmp.replace(out)
    return out
