"""Train a demo HuBERT teacher with character CTC (``mvqkd finetune-teacher``).

The result is a ``HubertForCTC`` directory in ``save_pretrained`` layout (``config.json``,
weights, ``vocab.json`` + ``Wav2Vec2CTCTokenizer``, ``preprocessor_config.json``), which
:func:`mvqkd.teacher.model.load_teacher` loads like any HuggingFace checkpoint.

Vocabulary: ``<pad>`` = 0 (the CTC blank), ``<unk>`` = 1, ``|`` (word delimiter) = 2,
then ``'`` and ``A``..``Z``. Transcripts are upper case.

Files in ``out_dir``:
- the best-by-dev model (``save_pretrained``), rewritten whenever dev WER improves;
- ``train_state.pt``: model / optimizer / scheduler / RNG state after the last finished
  epoch; a rerun with the same ``out_dir`` resumes from it;
- ``finetune_log.json``: per epoch train loss, dev WER, wall time;
- ``teacher_wer.json``: final greedy CTC WER of the best model per evaluation set.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from mvqkd.decode.decode import load_cuts
from mvqkd.decode.wer import compute_error_stats
from mvqkd.teacher.make import SIZES, make_teacher
from mvqkd.teacher.model import SAMPLING_RATE, _read_normalize_flag, normalize_utterance
from mvqkd.training.sampling import build_sampler

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

STATE_FILE = "train_state.pt"
LOG_FILE = "finetune_log.json"
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
    fe = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SAMPLING_RATE, padding_value=0.0,
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
        cuts = load_cuts(cuts)
    for c in cuts:
        if len(c.supervisions) != 1:
            raise ValueError(f"{what}: cut {c.id!r} has {len(c.supervisions)} supervisions (need 1)")
        if not c.has_recording:
            raise ValueError(f"{what}: cut {c.id!r} has no recording (audio is needed)")
        if c.sampling_rate != SAMPLING_RATE:
            raise ValueError(f"{what}: cut {c.id!r} is {c.sampling_rate} Hz, expected {SAMPLING_RATE}")
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
    """``(B, U)`` character ids, padded with -100 (ignored by the CTC loss)."""
    seqs = [torch.tensor(encode_text(c.supervisions[0].text, vocab, c.id)) for c in cuts]
    return torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=-100)


def _eval_batches(cuts, max_duration: float, ascending: bool = False):
    """Batches of at most ``max_duration`` seconds in duration order (longest first by default)."""
    from lhotse.dataset import SimpleCutSampler

    return SimpleCutSampler(cuts.sort_by_duration(ascending=ascending), max_duration=max_duration, shuffle=False)


@torch.no_grad()
def _decode_cuts(model, cuts, cache, do_normalize, with_mask, max_duration, device, desc="decode"):
    """Greedy-decode ``cuts`` with a ``HubertForCTC``; returns (refs, hyps) word lists."""
    id2token = {i: t for t, i in vocabulary().items()}
    was_training = model.training
    model.eval()
    refs, hyps = [], []
    for batch in tqdm(_eval_batches(cuts, max_duration), desc=desc, leave=False):
        x, mask, lengths = collate(batch, cache, do_normalize, with_mask)
        logits = model(x.to(device), attention_mask=None if mask is None else mask.to(device)).logits
        frames = model._get_feat_extract_output_lengths(lengths)
        for c, ids in zip(batch, ctc_greedy(logits, frames, blank=model.config.pad_token_id)):
            refs.append(c.supervisions[0].text.split())
            hyps.append(ids_to_words(ids, id2token))
    model.train(was_training)
    return refs, hyps


def _load_ctc(model_dir, device):
    from transformers import AutoConfig, HubertForCTC

    model_dir = Path(model_dir)
    if not (model_dir / "vocab.json").is_file():
        raise FileNotFoundError(f"{model_dir} has no vocab.json: not a CTC teacher from finetune-teacher")
    config = AutoConfig.from_pretrained(str(model_dir))
    model = HubertForCTC.from_pretrained(str(model_dir)).to(device).eval()
    do_norm = _read_normalize_flag(model_dir, config.feat_extract_norm == "group")
    return model, do_norm, config.feat_extract_norm == "layer"


def ctc_wer(model_dir: str | Path, cuts, max_duration: float = 200.0, device: str = "cpu") -> dict:
    """Greedy CTC WER of a saved ``HubertForCTC`` teacher on ``cuts`` (CutSet or manifest path).

    Returns:
        ``dict(wer=percent, ins=..., del=..., sub=..., ref_words=...)``.
    """
    cuts = as_cutset(cuts, "eval cuts")
    model, do_norm, with_mask = _load_ctc(model_dir, device)
    refs, hyps = _decode_cuts(model, cuts, AudioCache(), do_norm, with_mask, max_duration, device)
    return score(refs, hyps)


# ----------------------------------------------------------------------------- model

def build_model(size: str, seed: int, init_from: str | Path | None):
    """A ``HubertForCTC`` over :func:`vocabulary`: random init with ``size`` (built by
    :func:`mvqkd.teacher.make.make_teacher`) or fine-tuned from the checkpoint ``init_from``.
    Returns ``(model, do_normalize)``."""
    from transformers import HubertConfig, HubertForCTC

    vocab = vocabulary()
    ctc = dict(vocab_size=len(vocab), pad_token_id=vocab[BLANK], ctc_loss_reduction="mean",
               ctc_zero_infinity=True, final_dropout=0.0)
    torch.manual_seed(seed)
    if init_from is not None:
        src = Path(init_from)
        if not (src / "config.json").is_file():
            raise FileNotFoundError(f"--init-from {src}: no config.json (save_pretrained layout expected)")
        model = HubertForCTC.from_pretrained(str(src), ignore_mismatched_sizes=True, **ctc)
        do_norm = _read_normalize_flag(src, model.config.feat_extract_norm == "group")
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


def _lr_lambda(warmup: int, total: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))
    return f


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state()}


def _set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    np.random.set_state(s["numpy"])


# ----------------------------------------------------------------------------- training

def finetune_teacher(
    train_cuts,
    dev_cuts,
    out_dir: str | Path,
    size: str = "small",
    max_duration: float = 100.0,
    time_budget: float | None = None,
    num_epochs: int = 3,
    seed: int = 0,
    device: str = "cpu",
    init_from: str | Path | None = None,
    lr: float = 2e-3,
    warmup_steps: int = 300,
    weight_decay: float = 0.01,
    grad_clip: float = 5.0,
    eval_cuts: dict | None = None,
    log_interval: int = 50,
    max_steps: int | None = None,
    sorta_grad: bool = True,
) -> Path:
    """Train a character-CTC ``HubertForCTC`` and keep the best-by-dev-WER model in ``out_dir``.

    Args:
        train_cuts, dev_cuts: lhotse CutSets (or manifest paths) with recordings (16 kHz mono)
            and one upper-case supervision per cut.
        out_dir: output directory (see the module docstring); resumes from its ``train_state.pt``.
        size: random-init size (``small`` demo, or ``tiny`` / ``base`` / ``large`` of make.py);
            ignored with ``init_from``.
        max_duration: seconds of audio per batch (dynamic bucketing by duration).
        time_budget: seconds of training for this call; when exceeded, training stops after
            the current step, dev is evaluated and the best model is kept.
        num_epochs: epochs (the cosine learning-rate schedule spans them).
        seed: model init, batch order and SpecAugment masks.
        init_from: an existing HF checkpoint directory to fine-tune instead of random init.
        lr, warmup_steps, weight_decay, grad_clip: AdamW, linear warm-up then cosine decay to 5 %.
        eval_cuts: ``{name: cuts}`` scored with the best model at the end (dev is always scored,
            as ``dev``); the result goes to ``teacher_wer.json``.
        max_steps: stop after this many optimizer steps in total; the schedule ends there.
        sorta_grad: first epoch in ascending duration order (later epochs: shuffled buckets).
    Returns:
        ``out_dir``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_cuts = as_cutset(train_cuts, "train cuts")
    dev_cuts = as_cutset(dev_cuts, "dev cuts")
    vocab = vocabulary()
    for c in train_cuts:  # fail before training on a transcript the vocabulary cannot spell
        encode_text(c.supervisions[0].text, vocab, c.id)
    dev = torch.device(device)

    model, do_norm = build_model(size, seed, init_from)
    with_mask = model.config.feat_extract_norm == "layer"
    model.to(dev).train()
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("HubertForCTC: %d layers, dim %d, %.2fM parameters", model.config.num_hidden_layers,
                model.config.hidden_size, n_params / 1e6)

    hours = sum(c.duration for c in train_cuts) / 3600
    steps_per_epoch = max(1, math.ceil(hours * 3600 / max_duration * 1.1))
    total_steps = steps_per_epoch * num_epochs
    if max_steps is not None:
        total_steps = min(total_steps, max_steps)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(min(warmup_steps, total_steps // 3 + 1), total_steps))
    # 10 duration buckets (fewer, or none, on a set too small to fill them)
    sampler = build_sampler(train_cuts, max_duration, shuffle=True, seed=seed, world_size=1, rank=0,
                            num_buckets=10, drop_last=False)
    # SortaGrad (Deep Speech 2): the first epoch goes from the shortest utterances up,
    # which shortens the all-blank plateau of CTC from scratch
    first_sampler = _eval_batches(train_cuts, max_duration, ascending=True) if sorta_grad else sampler

    history: list[dict] = []
    start_epoch, step, best = 1, 0, float("inf")
    state_path = out / STATE_FILE
    if state_path.is_file():
        st = torch.load(state_path, weights_only=False)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        _set_rng_state(st["rng"])
        start_epoch, step, best, history = st["epoch"] + 1, st["step"], st["best_wer"], st["history"]
        logger.info("resuming from %s: epoch %d done, step %d, best dev WER %.2f",
                    state_path, st["epoch"], step, best)
    else:
        write_processor(out, do_norm, with_mask)

    logger.info("training on %.2f h (%d cuts), %d epochs, ~%d steps/epoch, max %.0f s/batch",
                hours, len(train_cuts), num_epochs, steps_per_epoch, max_duration)
    cache = AudioCache()
    t0, c0 = time.time(), time.process_time()
    stop = False

    def evaluate_and_keep(epoch, loss_avg):
        nonlocal best
        refs, hyps = _decode_cuts(model, dev_cuts, cache, do_norm, with_mask, max_duration * 2, dev,
                                  desc=f"dev epoch {epoch}")
        res = score(refs, hyps)
        rec = dict(epoch=epoch, step=step, train_loss=loss_avg, dev=res,
                   elapsed_s=round(time.time() - t0, 1), cpu_s=round(time.process_time() - c0, 1))
        history.append(rec)
        logger.info("epoch %s step %d: train loss %.3f, dev WER %.2f%% (ins %d del %d sub %d)",
                    epoch, step, loss_avg, res["wer"], res["ins"], res["del"], res["sub"])
        if res["wer"] < best:
            best = res["wer"]
            model.save_pretrained(str(out))
            logger.info("new best dev WER %.2f%%: saved to %s", best, out)
        (out / LOG_FILE).write_text(json.dumps(history, indent=1))

    for epoch in range(start_epoch, num_epochs + 1):
        sampler.set_epoch(epoch)
        tot, n = 0.0, 0
        bar = tqdm(first_sampler if epoch == 1 else sampler, desc=f"teacher epoch {epoch}", leave=False)
        for batch in bar:
            x, mask, _ = collate(batch, cache, do_norm, with_mask)
            labels = labels_for(batch, vocab)
            loss = model(x.to(dev), attention_mask=None if mask is None else mask.to(dev),
                         labels=labels.to(dev)).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            opt.step()
            sched.step()
            step += 1
            tot, n = tot + loss.item(), n + 1
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{sched.get_last_lr()[0]:.2e}")
            if step % log_interval == 0:
                logger.info("epoch %d step %d: loss %.3f (avg %.3f), lr %.2e, %.0f s",
                            epoch, step, loss.item(), tot / n, sched.get_last_lr()[0], time.time() - t0)
            if (time_budget is not None and time.time() - t0 > time_budget) or \
                    (max_steps is not None and step >= max_steps):
                stop = True
                break
        bar.close()
        evaluate_and_keep(epoch if not stop else f"{epoch} (partial)", tot / max(n, 1))
        if stop:
            logger.info("stopping at step %d (time budget / max steps reached)", step)
            break
        torch.save(dict(model=model.state_dict(), optimizer=opt.state_dict(), scheduler=sched.state_dict(),
                        rng=_rng_state(), epoch=epoch, step=step, best_wer=best, history=history),
                   state_path)

    if not (out / "config.json").is_file():  # no evaluation ran (nothing left to train)
        model.save_pretrained(str(out))
    sets = {"dev": dev_cuts, **{k: as_cutset(v, k) for k, v in (eval_cuts or {}).items()}}
    wers = {name: ctc_wer(out, cuts, max_duration * 2, device) for name, cuts in sets.items()}
    wers["train_time_s"] = round(time.time() - t0, 1)
    (out / WER_FILE).write_text(json.dumps(wers, indent=1))
    logger.info("teacher WER: %s", {k: v["wer"] for k, v in wers.items() if isinstance(v, dict)})
    return out


__all__ = ["finetune_teacher", "ctc_wer", "ctc_greedy", "score", "vocabulary", "write_processor",
           "build_model", "DEMO_SIZES", "ALL_SIZES"]
