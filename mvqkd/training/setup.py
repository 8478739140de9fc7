"""Before the student's first step: its data and its model (build, or resume).

- :func:`prepare_data`: tokenizer, training / validation cuts filtered and checked by
  :func:`mvqkd.data.dataset.prepare_training_cuts` (logged counts; missing indexes, bad
  frame counts and quantizer mismatches refused before step 1);
- :func:`build_model_config`: a preset (``--model-size``) plus the KD head sizes from the
  manifest (``num_codebooks`` / ``codebook_size`` from ``codebook_indexes_info``,
  ``kd_dim`` from the embeddings) plus ``--model-override``;
- :func:`find_resume` and :func:`check_resume_info`: which checkpoint a run continues from,
  and that it was trained on the same labels.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

from mvqkd.conventions import CODEBOOK_INDEXES, FLOAT_KD_MODES, info_field, kd_field
from mvqkd.training.config import TrainConfig

logger = logging.getLogger(__name__)


@dataclass
class TrainData:
    """What :func:`prepare_data` returns: the tokenizer, the filtered cuts and their stats,
    and the validation cuts with the KD mode they support (or None)."""

    sp: object
    cuts: object
    stats: object
    valid_cuts: object = None
    valid_kd: str = "none"
    quantizer: object = None  # --quantizer: decoded regression, neighbour smoothing


def parse_overrides(items) -> dict:
    """``["num_layers=4", "dropout=0.2"]`` -> typed dict for TransducerConfig fields."""
    from mvqkd.student.config import TransducerConfig

    fields = {f.name: f for f in dataclasses.fields(TransducerConfig)}
    out = {}
    for item in items or []:
        key, sep, value = str(item).partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in fields:
            raise ValueError(
                f"--model-override {item!r}: expected KEY=VALUE with KEY one of {sorted(fields)}"
            )
        typ = str(fields[key].type)
        if value.lower() in ("none", "null") and "Optional" in typ:
            out[key] = None
        elif "bool" in typ:
            out[key] = value.lower() in ("1", "true", "yes")
        elif "int" in typ:
            out[key] = int(value)
        elif "float" in typ:
            out[key] = float(value)
        else:
            out[key] = value
    return out


def build_model_config(cfg: TrainConfig, vocab_size: int, stats):
    """TransducerConfig from the preset, the KD mode, the manifest info and overrides."""
    from mvqkd.student.config import preset_config

    kw = dict(
        sigma_reparam=cfg.sigma_reparam,
        distill_layer=cfg.distill_layer,
        ctc_loss_scale=cfg.ctc_loss_scale,
        codebook_loss_scale=cfg.codebook_loss_scale,
        codebook_loss=cfg.codebook_loss,
        kd_loss_scale=cfg.kd_loss_scale,
        rnnt_loss=cfg.rnnt_loss,
        codebook_label_smoothing=cfg.codebook_label_smoothing,
        codebook_smoothing_temperature=cfg.codebook_smoothing_temperature,
    )
    if cfg.kd == "mvq":
        info = stats.index_info
        kw.update(num_codebooks=int(info["num_codebooks"]),
                  codebook_size=int(info.get("codebook_size", 256)))
        if cfg.codebook_head != "linear":
            kw.update(codebook_geometry_dim=int(stats.decoded_dim),
                      codebook_geometry_residual=cfg.codebook_head == "residual",
                      codebook_weighting=cfg.codebook_weighting,
                      codebook_weighting_power=cfg.codebook_weighting_power)
        if decoded_regression(cfg):  # an L2 head on the reconstruction as well
            kw.update(kd_mode="l2", kd_dim=int(stats.decoded_dim), kd_normalize=True)
    elif cfg.kd in FLOAT_KD_MODES:
        kw.update(kd_mode=cfg.kd, kd_dim=int(stats.kd_dim), kd_normalize=cfg.kd_normalize)
    kw.update(parse_overrides(cfg.model_override))
    return preset_config(cfg.model_size, vocab_size, **kw)


def _valid_kd(path, kd) -> str:
    """The KD mode of the validation set: ``kd`` when its first cut carries the KD field,
    else ``none`` (validation then reports the RNN-T loss only, e.g. on plain dev fbank cuts)."""
    from mvqkd.data.cuts import load_cuts

    fld = kd_field(kd)
    if fld is None:
        return kd
    first = next(iter(load_cuts(path, "--valid-cuts")), None)
    if first is not None and first.custom and first.custom.get(fld) is not None:
        return kd
    logger.info("--valid-cuts %s: no '%s' on its cuts; validation computes the RNN-T loss only",
                path, fld)
    return "none"


def _load_cuts(path, sp, cfg: TrainConfig, name: str, expected=None, kd=None):
    from mvqkd.data.cuts import load_cuts
    from mvqkd.data.dataset import prepare_training_cuts

    expected = expected or {}
    kd = cfg.kd if kd is None else kd
    cuts, stats = prepare_training_cuts(
        load_cuts(path, f"--{name}-cuts"), sp, kd=kd,
        skip_missing_indexes=cfg.skip_missing_indexes, skip_bad_indexes=cfg.skip_bad_indexes,
        quantizer_id=expected.get("quantizer_id", cfg.quantizer_id),
        num_codebooks=expected.get("num_codebooks", cfg.num_codebooks), name=name,
        max_duration=cfg.max_duration,
    )
    if kd in FLOAT_KD_MODES:
        stats.kd_dim = int(next(iter(cuts)).custom[kd_field(kd)].shape[1])
    return cuts, stats


def prepare_data(cfg: TrainConfig) -> TrainData:
    """Tokenizer and checked cuts (see the module docstring)."""
    from mvqkd.data.tokenizer import load_bpe

    sp = load_bpe(cfg.bpe_model)
    cuts, stats = _load_cuts(cfg.train_cuts, sp, cfg, "train")
    data = TrainData(sp, cuts, stats, quantizer=_decoding_quantizer(cfg, stats))
    if cfg.valid_cuts:
        data.valid_kd = _valid_kd(cfg.valid_cuts, cfg.kd)
        data.valid_cuts, _ = _load_cuts(cfg.valid_cuts, sp, cfg, "valid",
                                        dict(stats.index_info or {}), kd=data.valid_kd)
    return data


def decoded_regression(cfg: TrainConfig) -> bool:
    """Whether the student regresses the quantizer's reconstruction of the indexes."""
    return bool(cfg.quantizer) and cfg.kd_loss_scale > 0


def _decoding_quantizer(cfg: TrainConfig, stats):
    """The quantizer of ``--quantizer`` (decoded regression, neighbour smoothing, geometry head), checked
    against the indexes."""
    if cfg.codebook_smoothing_temperature > 0 and not cfg.quantizer:
        raise ValueError("--codebook-smoothing-temperature needs --quantizer (the quantizer that "
                         "wrote the indexes: its codebooks give the neighbours)")
    if cfg.codebook_smoothing_temperature > 0 and cfg.codebook_label_smoothing <= 0:
        raise ValueError("--codebook-smoothing-temperature spreads the label-smoothing mass: set "
                         "--codebook-label-smoothing > 0 too")
    if cfg.codebook_head != "linear" and not cfg.quantizer:
        raise ValueError(f"--codebook-head {cfg.codebook_head} needs --quantizer (the quantizer "
                         "that wrote the indexes: the head scores its codewords)")
    if cfg.codebook_weighting != "uniform" and cfg.codebook_head == "linear":
        raise ValueError(f"--codebook-weighting {cfg.codebook_weighting} weighs the codebooks by "
                         "the quantizer's codewords: use it with --codebook-head geometry or "
                         "residual (and --quantizer)")
    if cfg.codebook_weighting_power != 1.0 and cfg.codebook_weighting != "energy":
        raise ValueError(f"--codebook-weighting-power {cfg.codebook_weighting_power:g} raises the "
                         f"energy weights of the codebooks: use it with --codebook-weighting energy "
                         f"(got {cfg.codebook_weighting})")
    if not cfg.codebook_weighting_power > 0:
        raise ValueError(f"--codebook-weighting-power must be > 0 (1: the codewords' energy "
                         f"itself), got {cfg.codebook_weighting_power:g}")
    reads_quantizer = (decoded_regression(cfg) or cfg.codebook_smoothing_temperature > 0
                       or cfg.codebook_head != "linear")
    if cfg.quantizer and not reads_quantizer:
        raise ValueError(f"--quantizer {cfg.quantizer} with --kd-loss-scale 0, no "
                         "--codebook-smoothing-temperature and --codebook-head linear is not "
                         "used; drop it")
    if not cfg.quantizer:
        return None
    from mvqkd.quantizer import load_quantizer

    if cfg.kd != "mvq":
        raise ValueError(f"--quantizer decodes codebook indexes: it needs --kd mvq, not --kd {cfg.kd}")
    q = load_quantizer(cfg.quantizer)
    have = (stats.index_info or {}).get("quantizer_id")
    if have is not None and str(have) != q.id:
        raise ValueError(f"--quantizer {cfg.quantizer} has id {q.id} but the indexes were extracted "
                         f"with quantizer {have}; give the quantizer that wrote them")
    stats.decoded_dim = q.dim
    return q


def decode_indexes(quantizer, indexes):
    """Reconstructions of padded 50 Hz indexes: (B, T50, N) long (-100 = padding) ->
    ((B, T50, D) float32, lengths (B,))."""
    import torch

    lens = (indexes[..., 0] >= 0).sum(1)
    emb = quantizer.decode(indexes.clamp(min=0).cpu()).to(indexes.device)
    valid = torch.arange(indexes.shape[1], device=indexes.device)[None, :] < lens[:, None]
    return emb * valid[..., None], lens


def find_resume(cfg: TrainConfig) -> Path | None:
    """``--start-epoch E``: ``epoch-(E-1).pt`` (1 = fresh start); default: the newest
    checkpoint of ``--exp-dir``, if any."""
    from mvqkd.training.checkpoint import latest_checkpoint

    exp = Path(cfg.exp_dir)
    if cfg.start_epoch is not None and cfg.start_epoch > 1:
        path = exp / f"epoch-{cfg.start_epoch - 1}.pt"
        if not path.is_file():
            raise FileNotFoundError(f"--start-epoch {cfg.start_epoch}: {path} does not exist")
        return path
    if cfg.start_epoch == 1:
        return None  # explicit fresh start
    return latest_checkpoint(exp)


def check_resume_info(ckpt: dict, stats, path) -> None:
    """Refuse to resume a run on indexes of another quantizer (or codebook count)."""
    old = (ckpt.get("train_info") or {}).get(info_field(CODEBOOK_INDEXES))
    new = stats.index_info
    for key in ("quantizer_id", "num_codebooks"):
        if old and new and str(old.get(key)) != str(new.get(key)):
            raise ValueError(
                f"resume from {path}: it was trained with {key}={old.get(key)!r} but the "
                f"manifest has {key}={new.get(key)!r}; use a new --exp-dir"
            )
