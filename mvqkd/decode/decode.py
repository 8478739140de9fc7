"""Decode cut sets with a transducer and write icefall's result files.

Cuts may carry precomputed fbank or only audio (80-bin fbank is then computed on the fly,
as in training), and one or more supervisions (their texts joined are the reference) or
none (untranscribed: recognition only, no error statistics). A cut with audio longer than
``max_segment_seconds`` is decoded in segments cut at its pauses (:func:`split_long_cuts`),
its hypothesis the segments' joined.

:func:`run_decode` is ``mvqkd decode``: for each method it writes, under ``OUT_DIR``
(default ``EXP_DIR/<method>``), icefall's files for every set, named with the setting
(:func:`suffix`) so that decodes with other settings never overwrite each other, and a
``log-decode-<suffix>-<date>.txt``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from mvqkd.data.cuts import load_cuts
from mvqkd.data.dataset import KDDataset, cut_text
from mvqkd.decode.config import BEAM_SIZE, DECODE_MAX_SEGMENT_SECONDS, FAST_BEAM_DEFAULTS, DecodeConfig
from mvqkd.decode.search import SEARCH_METHODS, search
from mvqkd.logs import FileLog, progress_bar

logger = logging.getLogger(__name__)

Result = tuple  # (cut_id, ref words | None, hyp words)


def make_loader(cuts, sp, max_duration: float):
    """Batches of at most ``max_duration`` seconds, longest cuts first (little padding), as
    :class:`~mvqkd.data.dataset.KDDataset` dicts (stored or on-the-fly fbank)."""
    from lhotse.dataset import SimpleCutSampler

    sampler = SimpleCutSampler(cuts.sort_by_duration(ascending=False), max_duration=max_duration,
                               shuffle=False)
    return torch.utils.data.DataLoader(KDDataset(sp, "none"), sampler=sampler, batch_size=None,
                                       num_workers=0)


def split_long_cuts(cuts, max_segment_seconds: float = DECODE_MAX_SEGMENT_SECONDS):
    """``(cuts, parts)``: ``cuts`` with every cut that has audio and is longer than
    ``max_segment_seconds`` replaced by its segments (:func:`mvqkd.decode.segments.segment_bounds`
    on its audio, channels averaged; ids ``<cut id>_seg<k>``, no supervisions), and ``parts``:
    {cut id: its segment ids in order} for the cuts that were split."""
    from lhotse import CutSet
    from lhotse.utils import fastcopy

    from mvqkd.decode.segments import segment_bounds

    out, parts, ids = [], {}, {c.id for c in cuts}
    for c in cuts:
        if not max_segment_seconds or c.duration <= max_segment_seconds or not c.has_recording:
            out.append(c)
            continue
        audio = c.load_audio()
        bounds = segment_bounds(audio.mean(axis=0) if audio.shape[0] > 1 else audio[0], max_segment_seconds,
                                c.sampling_rate)
        parts[c.id] = []
        taken = sorted(ids & {f"{c.id}_seg{k}" for k in range(len(bounds))})
        if taken:
            raise ValueError(f"cut {c.id} is split into segments named {c.id}_seg<k>, but the set already "
                             f"has cuts named {', '.join(taken)}: rename them, or decode with "
                             "--max-segment-seconds 0")
        for k, (start, end) in enumerate(bounds):
            seg = c.truncate(offset=start / c.sampling_rate, duration=(end - start) / c.sampling_rate,
                             preserve_id=True).drop_supervisions()
            out.append(fastcopy(seg, id=f"{c.id}_seg{k}"))
            parts[c.id].append(out[-1].id)
        logger.info("cut %s: %.1f s, decoded in %d segments cut at its pauses (--max-segment-seconds %g)",
                    c.id, c.duration, len(bounds), max_segment_seconds)
    return CutSet.from_cuts(out), parts


def _joined(results: list, parts: dict, refs: dict) -> list:
    """``results`` with each split cut's segment results replaced by one result: the cut's
    reference and its segments' hypotheses in order."""
    hyps = {cid: hyp for cid, _, hyp in results}
    segment_ids = {s for ids in parts.values() for s in ids}
    joined = [r for r in results if r[0] not in segment_ids]
    joined += [(cid, refs[cid], [w for s in ids for w in hyps[s]]) for cid, ids in parts.items()]
    return joined


@torch.no_grad()
def decode_batch(model, batch: dict, refs: dict, sp, method: str, beam_size: int, device,
                 **search_opts) -> list[Result]:
    """Decode one batch; ``refs`` maps cut id -> reference words (None: untranscribed)."""
    feats = batch["features"].to(device)
    feat_lens = batch["feature_lens"].to(device)
    enc, enc_lens = model.encode(feats, feat_lens)  # (B, T', E), (B,)
    hyps = search(method, model, enc, enc_lens, beam_size=beam_size, **search_opts)
    return [(cid, refs[cid], sp.decode(h).split()) for cid, h in zip(batch["cut_ids"], hyps)]


def decode_dataset(model, cuts, sp, method: str = "greedy_search", beam_size: int = BEAM_SIZE,
                   max_duration: float = 300.0, device="cpu", *,
                   max_segment_seconds: float = DECODE_MAX_SEGMENT_SECONDS, **search_opts) -> list[Result]:
    """Decode every cut; returns ``[(cut_id, ref_words | None, hyp_words)]`` in icefall's order
    (sorted; duplicate cut ids by reference, then hypothesis).

    Args:
      model: transducer with the decoding interface of docs/DEVELOPING.md.
      cuts: lhotse CutSet (or a path to one): fbank or audio, transcribed or not.
      sp: sentencepiece processor whose vocabulary matches ``model.vocab_size``.
      method: "greedy_search", "modified_beam_search" or "fast_beam_search".
      beam_size: beam for modified_beam_search.
      max_duration: seconds of audio per batch.
      device: torch device.
      max_segment_seconds: a longer cut with audio is decoded in segments (:func:`split_long_cuts`;
        0: every cut whole).
      search_opts: ``beam``, ``max_contexts``, ``max_states`` of fast_beam_search.
    """
    if method not in SEARCH_METHODS:
        raise ValueError(f"unknown decoding method {method!r}; choose one of {sorted(SEARCH_METHODS)}")
    if isinstance(cuts, (str, Path)):
        cuts = load_cuts(cuts)
    if getattr(cuts, "is_lazy", False):
        cuts = cuts.to_eager()
    if sp.get_piece_size() != int(model.vocab_size):
        raise ValueError(
            f"BPE model has {sp.get_piece_size()} pieces but the model's vocab_size is {model.vocab_size}"
        )
    for c in cuts:
        if not c.has_features and not c.has_recording:
            raise ValueError(f"cut {c.id!r} has neither features nor audio: nothing to decode")
    refs = {c.id: (cut_text(c).split() if c.supervisions else None) for c in cuts}
    pieces, parts = split_long_cuts(cuts, max_segment_seconds)
    refs.update((s, None) for ids in parts.values() for s in ids)
    model.eval()
    results = []
    with progress_bar(f"decode ({method})", total=len(pieces), unit="cut") as bar:
        for batch in make_loader(pieces, sp, max_duration):
            out = decode_batch(model, batch, refs, sp, method, beam_size, device, **search_opts)
            results.extend(out)
            bar.update(len(out))
    if len(results) != len(pieces):
        raise RuntimeError(f"decoded {len(results)} cuts but the set has {len(pieces)}")
    results = _joined(results, parts, refs)
    return sorted(results, key=lambda r: (r[0], r[1] or [], r[2]))


def setting_name(method: str, beam_size: int = BEAM_SIZE, **fast_opts) -> str:
    """icefall's label of a search setting in ``wer-summary`` files: ``greedy_search``,
    ``beam_size_4`` or ``beam_4.0_max_contexts_4_max_states_8``."""
    if method == "greedy_search":
        return method
    if method == "fast_beam_search":
        o = {**FAST_BEAM_DEFAULTS, **fast_opts}
        return f"beam_{o['beam']}_max_contexts_{o['max_contexts']}_max_states_{o['max_states']}"
    return f"beam_size_{beam_size}"


def suffix(checkpoint_label: str, method: str, beam_size: int = BEAM_SIZE, context_size: int = 2,
           **fast_opts) -> str:
    """icefall's file-name suffix: ``epoch-30-avg-5`` (or ``iter-N-avg-A``) plus the search
    setting, e.g. ``epoch-30-avg-5-modified_beam_search-beam-size-4``."""
    if method == "fast_beam_search":
        o = {**FAST_BEAM_DEFAULTS, **fast_opts}
        return (f"{checkpoint_label}-beam-{o['beam']}-max-contexts-{o['max_contexts']}"
                f"-max-states-{o['max_states']}")
    if method == "modified_beam_search":
        return f"{checkpoint_label}-{method}-beam-size-{beam_size}"
    return f"{checkpoint_label}-context-{context_size}-max-sym-per-frame-1"


def decode_and_score(model, cut_sets: dict, sp, out_dir, method: str = "greedy_search",
                     beam_size: int = BEAM_SIZE, max_duration: float = 300.0, device="cpu",
                     file_suffix: str | None = None, cer: bool = False,
                     max_segment_seconds: float = DECODE_MAX_SEGMENT_SECONDS, **search_opts) -> dict:
    """Decode each named cut set and write its result files to ``out_dir``
    (:func:`mvqkd.decode.results.write_results`). Returns {set name: WER % (None when
    untranscribed)}."""
    from mvqkd.decode.results import write_results

    key = setting_name(method, beam_size, **search_opts)
    wers = {}
    for name, cuts in cut_sets.items():
        logger.info("decoding %s with %s", name, key)
        results = decode_dataset(model, cuts, sp, method, beam_size, max_duration, device,
                                 max_segment_seconds=max_segment_seconds, **search_opts)
        wers[name] = write_results(out_dir, name, key, results, file_suffix, cer=cer)
        if wers[name] is not None:
            logger.info("%s: WER %.2f%% (%s)", name, wers[name], Path(out_dir))
    return wers


def _resolved_label(cfg: DecodeConfig, files) -> str:
    """``epoch-E-avg-A`` / ``iter-N-avg-A`` of the files actually averaged."""
    if cfg.checkpoint:
        return Path(cfg.checkpoint).stem
    if cfg.iteration is not None:
        return f"iter-{cfg.iteration}-avg-{cfg.avg}"
    last = Path(files[-1]).stem  # epoch-E or checkpoint-STEP
    kind, _, num = last.partition("-")
    return f"{'epoch' if kind == 'epoch' else 'iter'}-{num}-avg-{cfg.avg}"


def run_decode(cfg: DecodeConfig) -> dict[str, dict[str, float]]:
    """``mvqkd decode``: load the (averaged) student and, for each method, decode and score
    every set into ``OUT_DIR`` (default ``EXP_DIR/METHOD``). Returns ``{method: {set: WER %}}``."""
    from mvqkd.data.tokenizer import load_bpe
    from mvqkd.student import checkpoint

    cfg.check()
    if cfg.use_averaged_model:
        start, end = checkpoint.averaged_checkpoint_pair(cfg.exp_dir, epoch=cfg.epoch, avg=cfg.avg,
                                                         iteration=cfg.iteration)
        files = [end]  # names the label; the log says which span was averaged
    else:
        files = [cfg.checkpoint] if cfg.checkpoint else checkpoint.select_checkpoints(
            cfg.exp_dir, epoch=cfg.epoch, avg=cfg.avg, iteration=cfg.iteration)
    model, mcfg, last = checkpoint.load_model_for_decoding(
        cfg.exp_dir, epoch=cfg.epoch, avg=cfg.avg, iteration=cfg.iteration, device=cfg.device,
        checkpoint=cfg.checkpoint, return_checkpoint=True, use_averaged_model=cfg.use_averaged_model)
    sp = load_bpe(cfg.bpe_model) if cfg.bpe_model else checkpoint.checkpoint_bpe(last)
    if sp is None:
        raise ValueError(f"{files[-1]}: this checkpoint holds no BPE model (written by mvqkd < 0.2); "
                         "pass --bpe-model DATA/lang_bpe_V/bpe.model")
    label = _resolved_label(cfg, files)
    out = {}
    for method in cfg.method:
        out_dir = Path(cfg.out_dir or Path(cfg.exp_dir or Path(cfg.checkpoint).parent) / method)
        if cfg.out_dir and len(cfg.method) > 1:
            out_dir = out_dir / method
        out_dir.mkdir(parents=True, exist_ok=True)
        sfx = suffix(label, method, cfg.beam_size, mcfg.context_size, **cfg.search_opts())
        sfx += "-use-averaged-model" if cfg.use_averaged_model else ""  # icefall's
        with FileLog(out_dir / f"log-decode-{sfx}-{time.strftime('%Y-%m-%d-%H-%M-%S')}.txt"):
            logger.info("decoding with %s, %s averaged from %s", method, label,
                        f"the weights sampled between {start or 'the first step'} and {end}"
                        if cfg.use_averaged_model else ", ".join(str(f) for f in files))
            out[method] = decode_and_score(model, dict(cfg.cuts), sp, out_dir, method=method,
                                           beam_size=cfg.beam_size, max_duration=cfg.max_duration,
                                           device=cfg.device, file_suffix=sfx, cer=cfg.cer,
                                           max_segment_seconds=cfg.max_segment_seconds,
                                           **cfg.search_opts())
    return out
