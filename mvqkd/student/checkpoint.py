"""Reading student checkpoints: load safely, find, select, average, build for decoding.

Files (docs/FORMATS.md): ``EXP/checkpoint-STEP.pt`` (every N steps) and ``EXP/epoch-E.pt``
(end of epoch E), each one ``torch.save`` dict with ``model`` (state dict), ``config``
(``asdict`` of TransducerConfig), ``format_version``, ``optimizer``, ``scheduler``,
``sampler``, ``rng``, ``epoch``, ``step``, ``epoch_done``, ``train_info`` and, from format 2
on, ``bpe_model`` (the tokenizer: its path and serialized bytes); with ``mvqkd train
--average-period`` also ``model_avg``, ``model_avg_count`` and ``average_period`` (the running
mean of the weights, :mod:`mvqkd.training.averaging`).

Every checkpoint is read with ``torch.load(weights_only=True)``: tensors and plain
containers only, so a file cannot run code when it is loaded. A file that needs more (a
pickle payload, or a checkpoint of mvqkd < 0.2, which stored numpy RNG states) is refused
with :class:`CheckpointError`; ``mvqkd upgrade-checkpoint`` converts genuine old files
(:mod:`mvqkd.training.checkpoint`). The writing side lives there too.
"""

from __future__ import annotations

import logging
import pickle
import re
from pathlib import Path

import torch

from mvqkd.student.sigma_reparam import exact_spectral_vectors

logger = logging.getLogger(__name__)

#: version of the checkpoint dict written by this mvqkd (1: pickled numpy RNG states)
FORMAT_VERSION = 2

_STEP_RE = re.compile(r"^checkpoint-(\d+)\.pt$")
_EPOCH_RE = re.compile(r"^epoch-(\d+)\.pt$")


class CheckpointError(ValueError):
    """A checkpoint that cannot or must not be loaded (message names the file and the fix)."""


def load_checkpoint_file(path: str | Path, map_location="cpu", mmap: bool = False) -> dict:
    """Read one checkpoint dict with ``weights_only=True``.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: unreadable, or holding objects that would need unpickling code.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"refusing to load {path}: it holds Python objects beyond tensors and plain "
            f"containers, which would run code when unpickled ({unsafe_reason(e)}). "
            f"If it is a checkpoint you wrote with an older mvqkd, convert it once with "
            f"`mvqkd upgrade-checkpoint {path}` (it loads only tensors and numpy arrays); never "
            f"load a file of unknown origin otherwise"
        ) from None
    except Exception as e:  # corrupt / truncated file
        raise CheckpointError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from e
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise CheckpointError(f"{path} is not an mvqkd checkpoint (no 'model' entry)")
    return ckpt


def unsafe_reason(e: Exception) -> str:
    """The object a weights-only load refused, from torch's error message."""
    m = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) (\S+)|Unsupported operand \S+",
                  str(e))
    if m:
        return f"it references {m.group(1)}" if m.group(1) else m.group(0)
    return str(e).strip().splitlines()[-1][:200] if str(e).strip() else type(e).__name__


def step_checkpoints(exp_dir: str | Path) -> list[tuple[int, Path]]:
    """``[(step, path)]`` of ``checkpoint-STEP.pt`` files, by increasing step."""
    out = [(int(m.group(1)), p) for p in Path(exp_dir).glob("checkpoint-*.pt")
           if (m := _STEP_RE.match(p.name))]
    return sorted(out)


def epoch_checkpoints(exp_dir: str | Path) -> list[tuple[int, Path]]:
    """``[(epoch, path)]`` of ``epoch-E.pt`` files, by increasing epoch."""
    out = [(int(m.group(1)), p) for p in Path(exp_dir).glob("epoch-*.pt")
           if (m := _EPOCH_RE.match(p.name))]
    return sorted(out)


def average_state_dicts(state_dicts: list[dict]) -> dict:
    """Element-wise mean of floating-point tensors; other entries come from the last dict.
    A mean of two or more also gets exact sigma-Reparam spectral vectors
    (:func:`~mvqkd.student.sigma_reparam.exact_spectral_vectors`: averaged power-iteration
    vectors would scale those layers wrongly); a single dict is returned unchanged."""
    if not state_dicts:
        raise ValueError("average_state_dicts: no state dicts given")
    out = {}
    for k, last in state_dicts[-1].items():
        if torch.is_tensor(last) and last.is_floating_point():
            acc = torch.zeros_like(last, dtype=torch.float64)
            for sd in state_dicts:
                acc += sd[k].to(torch.float64)
            out[k] = (acc / len(state_dicts)).to(last.dtype)
        else:
            out[k] = last
    return exact_spectral_vectors(out) if len(state_dicts) > 1 else out


def average_checkpoints(paths: list[str | Path]) -> dict:
    """Average the ``model`` state dicts of the checkpoint files ``paths``."""
    if not paths:
        raise ValueError("average_checkpoints: no checkpoint paths given")
    return average_state_dicts([load_checkpoint_file(p)["model"] for p in paths])


def select_checkpoints(exp_dir, epoch=None, avg=1, iteration=None) -> list[Path]:
    """The files :func:`load_model_for_decoding` averages.

    - ``iteration``: the ``avg`` newest ``checkpoint-STEP.pt`` with STEP <= iteration;
    - ``epoch``: ``epoch-(E-avg+1).pt`` ... ``epoch-E.pt``;
    - neither: the ``avg`` newest epoch files (or step files when there is no epoch file).
    """
    exp_dir = Path(exp_dir)
    if avg < 1:
        raise ValueError(f"avg must be >= 1, got {avg}")
    if not exp_dir.is_dir():
        raise FileNotFoundError(f"experiment directory not found: {exp_dir}")
    if iteration is not None:
        files = [p for s, p in step_checkpoints(exp_dir) if s <= iteration][-avg:]
        what = f"checkpoint-STEP.pt with STEP <= {iteration}"
    elif epoch is not None:
        files = [exp_dir / f"epoch-{e}.pt" for e in range(epoch - avg + 1, epoch + 1)]
        missing = [str(p) for p in files if not p.is_file()]
        if missing or epoch - avg + 1 < 1:
            have = [e for e, _ in epoch_checkpoints(exp_dir)]
            raise FileNotFoundError(
                f"--epoch {epoch} --avg {avg} needs epoch files {epoch - avg + 1}..{epoch}; "
                f"missing: {missing or 'epochs < 1'}; {exp_dir} has epochs {have or 'none'}"
            )
        what = f"epoch files up to {epoch}"
    else:
        files = [p for _, p in epoch_checkpoints(exp_dir)][-avg:]
        what = "epoch files"
        if not files:
            files = [p for _, p in step_checkpoints(exp_dir)][-avg:]
            what = "checkpoint files"
    if not files:
        none = (f"checkpoint-STEP.pt with STEP <= {iteration}" if iteration is not None
                else "epoch-E.pt or checkpoint-STEP.pt")
        raise FileNotFoundError(f"{exp_dir}: no {none}: is it the --exp-dir mvqkd train wrote to?")
    if len(files) < avg:
        raise FileNotFoundError(
            f"{exp_dir}: asked to average {avg} {what}, found {len(files)}: {[str(p) for p in files]}"
        )
    return files


def averaged_checkpoint_pair(exp_dir, epoch=None, avg=1, iteration=None) -> tuple[Path | None, Path]:
    """The two files whose running means ``--use-averaged-model`` subtracts (icefall's rule):
    with ``epoch``, ``epoch-(E-avg).pt`` (None for E - avg = 0: from the first step) and
    ``epoch-E.pt``; with ``iteration``, the newest ``checkpoint-STEP.pt`` with STEP <= ITER and
    the one ``avg`` files before it; with neither, the newest epoch file and ``avg`` before."""
    exp_dir = Path(exp_dir)
    if avg < 1:
        raise ValueError(f"avg must be >= 1, got {avg}")
    if iteration is not None:
        files = [p for s, p in step_checkpoints(exp_dir) if s <= iteration]
        if len(files) < avg + 1:
            raise FileNotFoundError(f"--use-averaged-model --iter {iteration} --avg {avg} needs {avg + 1} "
                                    f"checkpoint-STEP.pt files with STEP <= {iteration}; {exp_dir} has "
                                    f"{len(files)}")
        return files[-avg - 1], files[-1]
    if epoch is None:
        have = epoch_checkpoints(exp_dir)
        if not have:
            raise FileNotFoundError(f"{exp_dir}: no epoch-E.pt to decode with --use-averaged-model")
        epoch = have[-1][0]
    start, end = epoch - avg, exp_dir / f"epoch-{epoch}.pt"
    if start < 0:
        raise ValueError(f"--use-averaged-model --epoch {epoch} --avg {avg}: avg must be <= epoch")
    needed = [end] + ([exp_dir / f"epoch-{start}.pt"] if start else [])
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"--use-averaged-model --epoch {epoch} --avg {avg} needs "
                                f"{', '.join(missing)}")
    return (exp_dir / f"epoch-{start}.pt" if start else None), end


def averaged_model_between(start: str | Path | None, end: str | Path) -> dict:
    """The mean of the weights sampled after ``start``'s step up to ``end``'s (``start`` None:
    from the first step), from the two checkpoints' running means (``model_avg``, written
    with ``mvqkd train --average-period``; :mod:`mvqkd.training.averaging`). Returned in the
    dtypes of ``end``'s ``model``, with exact sigma-Reparam spectral vectors
    (:func:`~mvqkd.student.sigma_reparam.exact_spectral_vectors`)."""
    return _interval_mean(start, end, load_checkpoint_file(end))


def _interval_mean(start: str | Path | None, end: str | Path, last: dict) -> dict:
    """:func:`averaged_model_between` with ``end``'s checkpoint dict ``last`` already loaded."""
    first = load_checkpoint_file(start) if start is not None else None
    for path, ckpt in ((end, last), (start, first)):
        if ckpt is not None and "model_avg" not in ckpt:
            raise CheckpointError(f"{path} holds no averaged model: train with --average-period N "
                                  f"(icefall's 200) to decode with --use-averaged-model, or leave it out")
    n_end, n_start = int(last["model_avg_count"]), int(first["model_avg_count"]) if first else 0
    if n_end <= n_start:
        raise CheckpointError(f"no averaged sample between {start or 'the first step'} ({n_start} samples) "
                              f"and {end} ({n_end}): lower --average-period or average more epochs")
    out = {}
    for k, ref in last["model"].items():
        if not ref.is_floating_point():
            out[k] = ref
            continue
        total = last["model_avg"][k].to(torch.float64) * n_end
        if first is not None:
            total = total - first["model_avg"][k].to(torch.float64) * n_start
        out[k] = (total / (n_end - n_start)).to(ref.dtype)
    return exact_spectral_vectors(out)


def checkpoint_bpe(ckpt: dict):
    """The sentencepiece processor stored in a checkpoint (format 2), or None."""
    bpe = ckpt.get("bpe_model")
    if not bpe or "proto" not in bpe:
        return None
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_proto=bytes(bpe["proto"].tolist()))


def decoding_weights(exp_dir, epoch=None, avg=1, iteration=None, checkpoint=None,
                     use_averaged_model: bool = False) -> tuple[dict, dict, list[str]]:
    """The weights a decode of ``exp_dir`` uses: the average of the selected checkpoints (or
    the single file ``checkpoint``, e.g. written by ``mvqkd average-checkpoints``); with
    ``use_averaged_model``, the mean of the weights sampled over the same span instead
    (:func:`averaged_checkpoint_pair`, :func:`averaged_model_between`).

    Returns ``(state dict, checkpoint dict of the last file, source files)``; the sources of
    the averaged model are its two files (``""`` for "from the first step"). See
    :func:`select_checkpoints` for which files are averaged.
    """
    if use_averaged_model:
        if checkpoint:
            raise ValueError("--use-averaged-model selects two checkpoints in --exp-dir; it cannot "
                             "be used with --checkpoint")
        start, end = averaged_checkpoint_pair(exp_dir, epoch=epoch, avg=avg, iteration=iteration)
        logger.info("averaged model between %s and %s", start or "the first step", end)
        last = load_checkpoint_file(end)
        return _interval_mean(start, end, last), last, [str(start or ""), str(end)]
    files = [Path(checkpoint)] if checkpoint else select_checkpoints(
        exp_dir, epoch=epoch, avg=avg, iteration=iteration)
    logger.info("averaging %d checkpoint(s): %s", len(files), ", ".join(str(p) for p in files))
    last = load_checkpoint_file(files[-1])
    weights = average_checkpoints(files) if len(files) > 1 else last["model"]
    return weights, last, [str(p) for p in files]


def load_model_for_decoding(exp_dir, epoch=None, avg=1, iteration=None, device="cpu",
                            checkpoint=None, return_checkpoint: bool = False,
                            use_averaged_model: bool = False):
    """Build the model of ``exp_dir`` with :func:`decoding_weights` (same arguments).

    Returns ``(model in eval mode on device, TransducerConfig)``, plus the checkpoint dict
    of the last file with ``return_checkpoint``.
    """
    from mvqkd.student import build_model
    from mvqkd.student.config import TransducerConfig

    weights, last, _ = decoding_weights(exp_dir, epoch=epoch, avg=avg, iteration=iteration,
                                        checkpoint=checkpoint, use_averaged_model=use_averaged_model)
    model = build_model(last["config"])
    model.load_state_dict(weights)
    model.to(device).eval()
    cfg = TransducerConfig.from_dict(last["config"])
    return (model, cfg, last) if return_checkpoint else (model, cfg)
