"""Training checkpoints: save, find, resume, average, load for decoding.

Files (docs/DEVELOPING.md): ``EXP/checkpoint-STEP.pt`` (every N steps) and
``EXP/epoch-E.pt`` (end of epoch E), each one ``torch.save`` dict with ``model``
(state dict of the unwrapped model), ``config`` (``asdict`` of TransducerConfig),
``optimizer``, ``scheduler``, ``sampler`` (lhotse sampler state after the last
consumed batch), ``rng`` (torch / cuda / numpy / python states), ``epoch``, ``step``,
plus ``epoch_done`` (True for ``epoch-E.pt``) and ``train_info`` (e.g. the manifest's
``codebook_indexes_info``).

The files hold numpy RNG states, so they are loaded with ``weights_only=False``:
only load checkpoints you wrote yourself.
"""

from __future__ import annotations

import logging
import os
import random
import re
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)

_STEP_RE = re.compile(r"^checkpoint-(\d+)\.pt$")
_EPOCH_RE = re.compile(r"^epoch-(\d+)\.pt$")


def load_checkpoint_file(path: str | Path, map_location="cpu") -> dict:
    """Read one checkpoint dict; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # corrupt / truncated file
        raise RuntimeError(f"cannot read checkpoint {path}: {e}") from e


def get_rng_state() -> dict:
    """The states of every RNG the training loop draws from."""
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore the states saved by :func:`get_rng_state`."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if hasattr(model, "module") else model


def save_checkpoint(path: str | Path, **fields) -> Path:
    """Write a checkpoint dict atomically (temporary file + rename).

    ``fields`` are the documented keys; ``model`` may be a module (its unwrapped state
    dict is stored) or a state dict.
    """
    path = Path(path)
    model = fields.get("model")
    if isinstance(model, torch.nn.Module):
        fields["model"] = unwrap(model).state_dict()
    for key in ("optimizer", "scheduler"):
        if hasattr(fields.get(key), "state_dict"):
            fields[key] = fields[key].state_dict()
    tmp = path.with_name(path.name + ".tmp")
    torch.save(fields, tmp)
    os.replace(tmp, path)
    return path


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


def remove_old_step_checkpoints(exp_dir: str | Path, keep_last: int) -> list[Path]:
    """Delete all but the ``keep_last`` newest ``checkpoint-STEP.pt`` files (epoch files stay)."""
    if keep_last <= 0:
        return []
    old = [p for _, p in step_checkpoints(exp_dir)[:-keep_last]]
    for p in old:
        p.unlink(missing_ok=True)
    return old


def latest_checkpoint(exp_dir: str | Path) -> Path | None:
    """The checkpoint with the highest training step in ``exp_dir`` (None when there is none).

    An ``epoch-E.pt`` wins a tie with a ``checkpoint-STEP.pt`` of the same step, since it
    is written after it and marks the epoch as finished.
    """
    best, best_key = None, None
    candidates = [(p, 0) for _, p in step_checkpoints(exp_dir)]
    candidates += [(p, 1) for _, p in epoch_checkpoints(exp_dir)]
    for p, is_epoch in candidates:
        try:
            step = int(torch.load(p, map_location="cpu", mmap=True, weights_only=False)["step"])
        except Exception as e:
            logger.warning("ignoring unreadable checkpoint %s (%s)", p, e)
            continue
        key = (step, is_epoch)
        if best_key is None or key > best_key:
            best, best_key = p, key
    return best


def average_state_dicts(state_dicts: list[dict]) -> dict:
    """Element-wise mean of floating-point tensors; other entries come from the last dict."""
    if not state_dicts:
        raise ValueError("average_state_dicts: no state dicts given")
    keys = state_dicts[-1].keys()
    out = {}
    for k in keys:
        last = state_dicts[-1][k]
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
    if iteration is not None:
        files = [p for s, p in step_checkpoints(exp_dir) if s <= iteration][-avg:]
        what = f"checkpoint-STEP.pt with STEP <= {iteration}"
    elif epoch is not None:
        files = [exp_dir / f"epoch-{e}.pt" for e in range(epoch - avg + 1, epoch + 1)]
        missing = [str(p) for p in files if not p.is_file()]
        if missing or epoch - avg + 1 < 1:
            raise FileNotFoundError(
                f"--epoch {epoch} --avg {avg} needs epoch files {epoch - avg + 1}..{epoch}; "
                f"missing: {missing or 'epochs < 1'}"
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


def load_model_for_decoding(exp_dir, epoch=None, avg=1, iteration=None, device="cpu"):
    """Build the model of ``exp_dir`` with the average of the selected checkpoints.

    Returns ``(model in eval mode on device, TransducerConfig)``; see
    :func:`select_checkpoints` for which files are averaged.
    """
    from mvqkd.student import build_model
    from mvqkd.student.config import TransducerConfig

    files = select_checkpoints(exp_dir, epoch=epoch, avg=avg, iteration=iteration)
    logger.info("averaging %d checkpoint(s): %s", len(files), ", ".join(p.name for p in files))
    cfg_dict = load_checkpoint_file(files[-1])["config"]
    model = build_model(cfg_dict)
    model.load_state_dict(average_checkpoints(files))
    model.to(device).eval()
    return model, TransducerConfig.from_dict(cfg_dict)
