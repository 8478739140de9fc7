"""The demo teacher's model side: a character-CTC ``HubertForCTC`` (the training loop that
fine-tunes it is :mod:`mvqkd.training.finetune`).

The model is saved as a ``HubertForCTC`` directory in ``save_pretrained`` layout
(``config.json``, weights, ``vocab.json`` + ``Wav2Vec2CTCTokenizer``,
``preprocessor_config.json``), which :func:`mvqkd.teacher.model.load_teacher` loads like
any HuggingFace checkpoint.

Vocabulary: ``<pad>`` = 0 (the CTC blank), ``<unk>`` = 1, ``|`` (word delimiter) = 2,
then ``'`` and ``A``..``Z``. Transcripts are upper case.

Here: the vocabulary and processor files, the model (random init in a demo size or
from a checkpoint), batches of waveforms and labels, greedy CTC decoding and WER.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from mvqkd.conventions import IGNORE_INDEX, SAMPLE_RATE
from mvqkd.data.cuts import load_cuts
from mvqkd.data.wer import compute_error_stats
from mvqkd.logs import progress, quiet_transformers
from mvqkd.teacher.make import SIZES, make_teacher
from mvqkd.teacher.model import normalize_utterance, read_normalize_flag

logger = logging.getLogger(__name__)

BLANK = "<pad>"
UNK = "<unk>"
DELIM = "|"
CHARS = "'ABCDEFGHIJKLMNOPQRSTUVWXYZ"

#: demo sizes (same keys as :data:`mvqkd.teacher.make.SIZES`); layer-norm front-end and
#: pre-norm transformer, so padded batches are exact and training from scratch is stable.
#: ``conv_dim`` (per conv layer, narrow at the high frame rates, where the front-end costs
#: most) replaces the uniform ``conv_channels`` of make.py after the config is built
_DEMO_FRONT_END = dict(conv_channels=128, conv_dim=(32, 32, 64, 64, 128, 128, 128),
                       num_conv_pos_embeddings=32, feat_extract_norm="layer",
                       do_stable_layer_norm=True, do_normalize=True)
DEMO_SIZES = {
    # ~2M parameters, for the demo (2 CPU cores, ~15 minutes)
    "small": dict(_DEMO_FRONT_END, hidden_size=192, num_hidden_layers=4, num_attention_heads=4,
                  intermediate_size=768, num_conv_pos_embedding_groups=8),
    # 15M parameters, ~3x the step time of "small": the same front-end under a 1024-wide,
    # 2-layer transformer, so that its float embeddings are as wide as HuBERT-large's (the
    # storage comparison of MVQ-KD vs L2-KD depends on the teacher's width, not its depth)
    "wide": dict(_DEMO_FRONT_END, hidden_size=1024, num_hidden_layers=2, num_attention_heads=8,
                 intermediate_size=1024, num_conv_pos_embedding_groups=16),
}
ALL_SIZES = {**SIZES, **DEMO_SIZES}

WER_FILE = "teacher_wer.json"


# ----------------------------------------------------------------------------- vocabulary

def vocabulary() -> dict[str, int]:
    """Token -> id (see the module docstring)."""
    tokens = [BLANK, UNK, DELIM, *CHARS]
    return {t: i for i, t in enumerate(tokens)}


def write_processor(out_dir: str | Path, do_normalize: bool, return_attention_mask: bool):
    """Write ``vocab.json``, the CTC tokenizer and the feature extractor to ``out_dir``
    (``Wav2Vec2Processor.save_pretrained``); returns the processor."""
    from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2Processor

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab_file = out / "vocab.json"
    vocab_file.write_text(json.dumps(vocabulary(), indent=1))
    tok = Wav2Vec2CTCTokenizer(str(vocab_file), unk_token=UNK, pad_token=BLANK,
                               word_delimiter_token=DELIM, bos_token=None, eos_token=None)
    fe = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0,
                                  do_normalize=do_normalize, return_attention_mask=return_attention_mask)
    proc = Wav2Vec2Processor(feature_extractor=fe, tokenizer=tok)
    proc.save_pretrained(str(out))
    fe.save_pretrained(str(out))  # preprocessor_config.json, read by load_teacher
    tok.save_pretrained(str(out))
    return proc


def encode_text(text: str, vocab: dict[str, int], where: str = "") -> list[int]:
    """Character ids of an upper-case transcript; spaces become ``|``. Characters outside
    the vocabulary raise ``ValueError`` naming ``where`` (a cut id)."""
    words = text.split()
    ids: list[int] = []
    for k, w in enumerate(words):
        if k:
            ids.append(vocab[DELIM])
        for ch in w:
            if ch not in vocab:
                raise ValueError(f"{where}: character {ch!r} of transcript {text!r} is not in the "
                                 f"teacher vocabulary ({CHARS!r}, upper case)")
            ids.append(vocab[ch])
    return ids


# ----------------------------------------------------------------------------- decoding / scoring

def ctc_greedy(log_probs: torch.Tensor, lengths: torch.Tensor, blank: int = 0) -> list[list[int]]:
    """Greedy CTC: best token per frame, repeats merged, blanks removed.

    Args:
        log_probs: ``(B, T, V)`` logits or log-probabilities.
        lengths: ``(B,)`` valid frames per utterance.
    Returns:
        B lists of token ids.
    """
    best = log_probs.argmax(dim=-1).cpu()  # (B, T)
    out = []
    for b in range(best.shape[0]):
        seq = best[b, : int(lengths[b])].tolist()
        out.append([t for i, t in enumerate(seq) if t != blank and (i == 0 or t != seq[i - 1])])
    return out


def ids_to_words(ids: Sequence[int], id2token: dict[int, str]) -> list[str]:
    """Token ids -> words (split at ``|``)."""
    return "".join(id2token[i] for i in ids).replace(DELIM, " ").split()


def score(refs: Sequence[Sequence[str]], hyps: Sequence[Sequence[str]]) -> dict:
    """WER (percent) and error counts of word sequences, aligned with kaldialign."""
    st = compute_error_stats((str(i), r, h) for i, (r, h) in enumerate(zip(refs, hyps, strict=True)))
    return {"wer": st.wer, "ins": st.num_ins, "del": st.num_del, "sub": st.num_sub,
            "ref_words": st.ref_words}


# ----------------------------------------------------------------------------- data

def as_cutset(cuts, what: str):
    """A CutSet from a CutSet or a manifest path, checked for one supervision and a recording."""
    from lhotse import CutSet

    if not isinstance(cuts, CutSet):
        cuts = load_cuts(cuts, what)
    for c in cuts:
        if len(c.supervisions) != 1:
            raise ValueError(f"{what}: cut {c.id!r} has {len(c.supervisions)} supervisions (need 1)")
        if not c.has_recording:
            raise ValueError(f"{what}: cut {c.id!r} has no recording (audio is needed)")
        if c.sampling_rate != SAMPLE_RATE:
            raise ValueError(f"{what}: cut {c.id!r} is {c.sampling_rate} Hz, expected {SAMPLE_RATE}")
    return cuts


class AudioCache:
    """Waveforms by cut id, kept in memory as float16 after the first read (5 h ~ 0.6 GB)."""

    def __init__(self):
        self._wavs: dict[str, np.ndarray] = {}

    def get(self, cut) -> np.ndarray:
        wav = self._wavs.get(cut.id)
        if wav is None:
            audio = cut.load_audio()
            if audio.shape[0] != 1:
                raise ValueError(f"cut {cut.id!r} has {audio.shape[0]} channels, expected mono")
            wav = audio[0].astype(np.float16)
            self._wavs[cut.id] = wav
        return wav


def collate(cuts, cache: AudioCache, do_normalize: bool, with_mask: bool):
    """Padded waveforms ``(B, S)``, attention mask ``(B, S)`` (or None) and sample counts ``(B,)``."""
    wavs = [torch.from_numpy(cache.get(c).astype(np.float32)) for c in cuts]
    if do_normalize:
        wavs = [normalize_utterance(w) for w in wavs]
    lengths = torch.tensor([w.numel() for w in wavs])
    x = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True)
    mask = (torch.arange(x.shape[1])[None] < lengths[:, None]).long() if with_mask else None
    return x, mask, lengths


def labels_for(cuts, vocab: dict[str, int]) -> torch.Tensor:
    """``(B, U)`` character ids, padded with ``IGNORE_INDEX`` (ignored by the CTC loss)."""
    seqs = [torch.tensor(encode_text(c.supervisions[0].text, vocab, c.id)) for c in cuts]
    return torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=IGNORE_INDEX)


def eval_batches(cuts, max_duration: float, ascending: bool = False):
    """Batches of at most ``max_duration`` seconds in duration order (longest first by default)."""
    from lhotse.dataset import SimpleCutSampler

    return SimpleCutSampler(cuts.sort_by_duration(ascending=ascending), max_duration=max_duration, shuffle=False)


@torch.no_grad()
def decode_cuts(model, cuts, cache, do_normalize, with_mask, max_duration, device, desc="decode"):
    """Greedy-decode ``cuts`` with a ``HubertForCTC``; returns (refs, hyps) word lists."""
    id2token = {i: t for t, i in vocabulary().items()}
    was_training = model.training
    model.eval()
    refs, hyps = [], []
    for batch in progress(eval_batches(cuts, max_duration), desc=desc, unit="batch"):
        x, mask, lengths = collate(batch, cache, do_normalize, with_mask)
        logits = model(x.to(device), attention_mask=None if mask is None else mask.to(device)).logits
        frames = model._get_feat_extract_output_lengths(lengths)
        for c, ids in zip(batch, ctc_greedy(logits, frames, blank=model.config.pad_token_id)):
            refs.append(c.supervisions[0].text.split())
            hyps.append(ids_to_words(ids, id2token))
    model.train(was_training)
    return refs, hyps


def load_ctc_model(model_dir, device):
    """``(HubertForCTC in eval mode, do_normalize, with_attention_mask)`` from a directory."""
    from transformers import AutoConfig, HubertForCTC

    quiet_transformers()
    model_dir = Path(model_dir)
    if not (model_dir / "vocab.json").is_file():
        raise FileNotFoundError(f"{model_dir} has no vocab.json: not a CTC teacher from finetune-teacher")
    config = AutoConfig.from_pretrained(str(model_dir))
    model = HubertForCTC.from_pretrained(str(model_dir)).to(device).eval()
    do_norm = read_normalize_flag(model_dir, config.feat_extract_norm == "group")
    return model, do_norm, config.feat_extract_norm == "layer"


def ctc_wer(model_dir: str | Path, cuts, max_duration: float = 200.0, device: str = "cpu") -> dict:
    """Greedy CTC WER of a saved ``HubertForCTC`` teacher on ``cuts`` (CutSet or manifest path).

    Returns:
        ``dict(wer=percent, ins=..., del=..., sub=..., ref_words=...)``.
    """
    cuts = as_cutset(cuts, "eval cuts")
    model, do_norm, with_mask = load_ctc_model(model_dir, device)
    refs, hyps = decode_cuts(model, cuts, AudioCache(), do_norm, with_mask, max_duration, device)
    return score(refs, hyps)


# ----------------------------------------------------------------------------- model

def build_ctc_model(size: str, seed: int, init_from: str | Path | None):
    """A ``HubertForCTC`` over :func:`vocabulary`: random init with ``size`` (built by
    :func:`mvqkd.teacher.make.make_teacher`) or fine-tuned from the checkpoint ``init_from``.
    Returns ``(model, do_normalize)``."""
    from transformers import HubertConfig, HubertForCTC

    quiet_transformers()
    vocab = vocabulary()
    ctc = dict(vocab_size=len(vocab), pad_token_id=vocab[BLANK], ctc_loss_reduction="mean",
               ctc_zero_infinity=True, final_dropout=0.0)
    torch.manual_seed(seed)
    if init_from is not None:
        src = Path(init_from)
        if not (src / "config.json").is_file():
            raise FileNotFoundError(f"--init-from {src}: no config.json (save_pretrained layout expected)")
        model = HubertForCTC.from_pretrained(str(src), ignore_mismatched_sizes=True, **ctc)
        do_norm = read_normalize_flag(src, model.config.feat_extract_norm == "group")
        if model.config.feat_extract_norm == "group":
            logger.warning("%s has a group-norm front-end: padded batches are not exact", src)
    else:
        if size not in ALL_SIZES:
            raise ValueError(f"--size {size!r}: choose one of {', '.join(ALL_SIZES)}")
        spec = dict(ALL_SIZES[size])
        conv_dim = spec.pop("conv_dim", None)
        with tempfile.TemporaryDirectory() as tmp:
            make_teacher(tmp, "tiny", seed=seed, **spec)
            config = HubertConfig.from_pretrained(tmp)
        if conv_dim is not None:
            config.conv_dim = list(conv_dim)
        do_norm = spec["do_normalize"]
        for k, v in {**ctc, "mask_time_prob": 0.0}.items():  # no SpecAugment: well under one
            setattr(config, k, v)  # pass over the data, it only slows the escape from all-blank
        torch.manual_seed(seed)
        model = HubertForCTC(config)
    model.config.architectures = ["HubertForCTC"]
    return model, do_norm
