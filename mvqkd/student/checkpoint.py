"""Reading student checkpoints: load safely, find, select, average, build for decoding.

Files (docs/FORMATS.md): ``EXP/checkpoint-STEP.pt`` (every N steps) and ``EXP/epoch-E.pt``
(end of epoch E), each one ``torch.save`` dict with ``model`` (state dict), ``config``
(``asdict`` of TransducerConfig), ``format_version``, ``optimizer``, ``scheduler``,
``sampler``, ``rng``, ``epoch``, ``step``, ``epoch_done``, ``train_info`` and, from format 2
on, ``bpe_model`` (the tokenizer: its path and serialized bytes).

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
    """Element-wise mean of floating-point tensors; other entries come from the last dict."""
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
    return out


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
    if len(files) < avg:
        raise FileNotFoundError(
            f"{exp_dir}: asked to average {avg} {what}, found {len(files)}: {[str(p) for p in files]}"
        )
    return files


def checkpoint_bpe(ckpt: dict):
    """The sentencepiece processor stored in a checkpoint (format 2), or None."""
    bpe = ckpt.get("bpe_model")
    if not bpe or "proto" not in bpe:
        return None
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_proto=bytes(bpe["proto"].tolist()))


def load_model_for_decoding(exp_dir, epoch=None, avg=1, iteration=None, device="cpu",
                            checkpoint=None, return_checkpoint: bool = False):
    """Build the model of ``exp_dir`` with the average of the selected checkpoints (or the
    single file ``checkpoint``, e.g. written by ``mvqkd average-checkpoints``).

    Returns ``(model in eval mode on device, TransducerConfig)``, plus the checkpoint dict
    of the last file with ``return_checkpoint``; see :func:`select_checkpoints` for which
    files are averaged.
    """
    from mvqkd.student import build_model
    from mvqkd.student.config import TransducerConfig

    files = [Path(checkpoint)] if checkpoint else select_checkpoints(
        exp_dir, epoch=epoch, avg=avg, iteration=iteration)
    logger.info("averaging %d checkpoint(s): %s", len(files), ", ".join(str(p) for p in files))
    last = load_checkpoint_file(files[-1])
    model = build_model(last["config"])
    model.load_state_dict(average_checkpoints(files) if len(files) > 1 else last["model"])
    model.to(device).eval()
    cfg = TransducerConfig.from_dict(last["config"])
    return (model, cfg, last) if return_checkpoint else (model, cfg)
