"""Decode a cut set of precomputed features with a transducer and collect
``(cut_id, ref_words, hyp_words)`` for scoring (see :mod:`mvqkd.decode.wer`)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from mvqkd.data.cuts import load_cuts
from mvqkd.decode.config import BEAM_SIZE, FAST_BEAM_DEFAULTS, DecodeConfig
from mvqkd.decode.search import SEARCH_METHODS, search
from mvqkd.logs import progress_bar

logger = logging.getLogger(__name__)


def _check_cuts(cuts) -> None:
    for cut in cuts:
        if len(cut.supervisions) != 1:
            raise ValueError(
                f"cut {cut.id!r} has {len(cut.supervisions)} supervisions; decoding needs exactly one per cut"
            )
        if not cut.has_features:
            raise ValueError(f"cut {cut.id!r} has no precomputed features (see docs/FORMATS.md)")


def make_loader(cuts, max_duration: float):
    """DataLoader over ``cuts`` sorted by duration (little padding), in batches of at
    most ``max_duration`` seconds; batches are lhotse ``K2SpeechRecognitionDataset`` dicts."""
    from lhotse.dataset import K2SpeechRecognitionDataset, PrecomputedFeatures, SimpleCutSampler

    sampler = SimpleCutSampler(cuts.sort_by_duration(ascending=False), max_duration=max_duration,
                               shuffle=False)
    dataset = K2SpeechRecognitionDataset(input_strategy=PrecomputedFeatures(), return_cuts=True)
    return torch.utils.data.DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=0)


@torch.no_grad()
def decode_batch(model, batch: dict, sp, method: str, beam_size: int, device,
                 **search_opts) -> list[tuple]:
    """Decode one ``K2SpeechRecognitionDataset`` batch.

    batch["inputs"]: (B, T, F) features. ``search_opts``: fast_beam_search's ``beam``,
    ``max_contexts``, ``max_states``. Returns [(cut_id, ref_words, hyp_words)].
    """
    sup = batch["supervisions"]
    cuts = sup["cut"]
    for i, c in enumerate(cuts):
        if int(sup["sequence_idx"][i]) != i or int(sup["start_frame"][i]) != 0:
            raise ValueError(f"cut {c.id!r}: its supervision must start at the cut's first frame")
    feats = batch["inputs"].to(device)
    feat_lens = sup["num_frames"].to(device)
    enc, enc_lens = model.encode(feats, feat_lens)  # (B, T', E), (B,)
    hyps = search(method, model, enc, enc_lens, beam_size=beam_size, **search_opts)
    return [
        (c.id, text.split(), sp.decode(h).split())
        for c, text, h in zip(cuts, sup["text"], hyps)
    ]


def decode_dataset(model, cuts, sp, method: str = "greedy_search", beam_size: int = BEAM_SIZE,
                   max_duration: float = 300.0, device="cpu",
                   **search_opts) -> list[tuple[str, list[str], list[str]]]:
    """Decode every cut; returns ``[(cut_id, ref_words, hyp_words)]`` sorted by cut id.

    Args:
      model: transducer with the decoding interface of docs/DEVELOPING.md.
      cuts: lhotse CutSet (or a path to one) of feature cuts, one supervision each.
      sp: sentencepiece processor whose vocabulary matches ``model.vocab_size``.
      method: "greedy_search", "modified_beam_search" or "fast_beam_search".
      beam_size: beam for modified_beam_search.
      max_duration: seconds of audio per batch.
      device: torch device.
      search_opts: ``beam``, ``max_contexts``, ``max_states`` of fast_beam_search.
    """
    if method not in SEARCH_METHODS:
        raise ValueError(f"unknown decoding method {method!r}; choose one of {sorted(SEARCH_METHODS)}")
    if isinstance(cuts, (str, Path)):
        cuts = load_cuts(cuts)
    if getattr(cuts, "is_lazy", False):
        cuts = cuts.to_eager()
    _check_cuts(cuts)
    if sp.get_piece_size() != int(model.vocab_size):
        raise ValueError(
            f"BPE model has {sp.get_piece_size()} pieces but the model's vocab_size is {model.vocab_size}"
        )
    model.eval()
    results = []
    with progress_bar(f"decode ({method})", total=len(cuts), unit="cut") as bar:
        for batch in make_loader(cuts, max_duration):
            out = decode_batch(model, batch, sp, method, beam_size, device, **search_opts)
            results.extend(out)
            bar.update(len(out))
    if len(results) != len(cuts):
        raise RuntimeError(f"decoded {len(results)} cuts but the set has {len(cuts)}")
    return sorted(results, key=lambda r: r[0])


def setting_name(method: str, beam_size: int = BEAM_SIZE, **fast_opts) -> str:
    """icefall's label of a search setting, e.g. ``modified_beam_search_beam_size_4`` or
    ``fast_beam_search_beam_4.0_max_contexts_4_max_states_8`` (``fast_opts`` not given
    take fast_beam_search's defaults)."""
    if method == "greedy_search":
        return method
    if method == "fast_beam_search":
        o = {**FAST_BEAM_DEFAULTS, **fast_opts}
        return f"{method}_beam_{o['beam']}_max_contexts_{o['max_contexts']}_max_states_{o['max_states']}"
    return f"{method}_beam_size_{beam_size}"


def decode_and_score(model, cut_sets: dict, sp, out_dir, method: str = "greedy_search", beam_size: int = BEAM_SIZE,
                     max_duration: float = 300.0, device="cpu", setting: str | None = None,
                     **search_opts) -> dict[str, float]:
    """Decode each named cut set and write ``recogs-/errs-/wer-summary-<name>.txt`` to ``out_dir``.

    cut_sets: {set name: CutSet or manifest path}. ``setting`` labels the row of the
    WER summary (default: the method, plus the beam size for beam search).
    ``search_opts`` go to fast_beam_search (``beam``, ``max_contexts``, ``max_states``).
    Returns {set name: WER in percent}.
    """
    from mvqkd.decode.results import write_results

    if setting is None:
        setting = setting_name(method, beam_size, **search_opts)
    wers = {}
    for name, cuts in cut_sets.items():
        logger.info("decoding %s with %s", name, setting)
        results = decode_dataset(model, cuts, sp, method, beam_size, max_duration, device, **search_opts)
        wers[name] = write_results(out_dir, name, setting, results)
        logger.info("%s: WER %.2f%% (%s)", name, wers[name], Path(out_dir) / f"errs-{name}.txt")
    return wers


def run_decode(cfg: DecodeConfig) -> dict[str, dict[str, float]]:
    """``mvqkd decode``: load the (averaged) student of ``cfg.exp_dir`` and, for each method,
    decode and score every set into ``OUT_DIR`` (default ``EXP_DIR/METHOD``).

    Returns ``{method: {set name: WER %}}``.
    """
    from mvqkd.data.tokenizer import load_bpe
    from mvqkd.student import checkpoint

    cfg.check()
    loaded = checkpoint.load_model_for_decoding(cfg.exp_dir, epoch=cfg.epoch, avg=cfg.avg,
                                                iteration=cfg.iteration, device=cfg.device,
                                                **({} if cfg.bpe_model else {"return_checkpoint": True}))
    model = loaded[0]
    if cfg.bpe_model:
        sp = load_bpe(cfg.bpe_model)
    else:
        sp = checkpoint.checkpoint_bpe(loaded[2])
        if sp is None:
            raise ValueError(f"{cfg.exp_dir}: its checkpoints hold no BPE model (written by mvqkd "
                             f"< 0.2); pass --bpe-model DATA/lang_bpe_V/bpe.model")
    out = {}
    for method in cfg.method:
        label = f"{setting_name(method, cfg.beam_size, **cfg.search_opts())}_{cfg.checkpoint_label()}"
        out_dir = Path(cfg.out_dir or cfg.exp_dir)
        if not cfg.out_dir or len(cfg.method) > 1:
            out_dir = out_dir / method
        out[method] = decode_and_score(model, dict(cfg.cuts), sp, out_dir, method=method,
                                       beam_size=cfg.beam_size, max_duration=cfg.max_duration,
                                       device=cfg.device, setting=label, **cfg.search_opts())
    return out
