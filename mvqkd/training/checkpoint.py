"""Writing checkpoints safely: atomic, fsynced, and loadable with ``weights_only=True``.

Everything a checkpoint stores is a tensor or a plain container (dict, list, tuple, str,
int, float, bool, None): the RNG states are converted to tensors here (:func:`rng_state`),
so the read side (:func:`mvqkd.student.checkpoint.load_checkpoint_file`) never unpickles
code. :func:`upgrade_checkpoint` converts files of mvqkd < 0.2, whose numpy / python RNG
states were pickled objects, loading them with only numpy's array constructors allowed.

The same helpers write the student's ``epoch-E.pt`` / ``checkpoint-STEP.pt`` and the demo
teacher's ``train_state.pt``.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path

import numpy as np
import torch

from mvqkd.student.checkpoint import (FORMAT_VERSION, CheckpointError, epoch_checkpoints,
                                      load_checkpoint_file, step_checkpoints,
                                      unsafe_reason)

logger = logging.getLogger(__name__)


def rng_state() -> dict:
    """The states of every RNG the training loops draw from, as tensors and numbers."""
    keys, pos, has_gauss, gauss = np.random.get_state()[1:]
    version, mt, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": int(version), "state": torch.tensor(mt, dtype=torch.int64),
                   "gauss": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore the states saved by :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if hasattr(model, "module") else model


def fsync_replace(tmp: Path, path: Path) -> None:
    """Flush ``tmp`` to disk, rename it to ``path`` and flush the directory entry, so that
    after a crash ``path`` is either the old file or the complete new one."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(path: str | Path, **fields) -> Path:
    """Write a checkpoint dict atomically (temporary file, fsync, rename).

    ``model`` may be a module (its unwrapped state dict is stored) or a state dict;
    ``optimizer`` / ``scheduler`` may be objects with ``state_dict()``. A
    ``format_version`` is added. Disk-full and other write errors raise an ``OSError``
    naming the file, and leave no partial file behind.
    """
    path = Path(path)
    model = fields.get("model")
    if isinstance(model, torch.nn.Module):
        fields["model"] = unwrap(model).state_dict()
    for key in ("optimizer", "scheduler"):
        if hasattr(fields.get(key), "state_dict"):
            fields[key] = fields[key].state_dict()
    fields.setdefault("format_version", FORMAT_VERSION)
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(fields, tmp)
        fsync_replace(tmp, path)
    except (OSError, RuntimeError) as e:
        tmp.unlink(missing_ok=True)
        raise OSError(f"cannot write checkpoint {path}: {e}") from e
    return path


def bpe_entry(bpe_model: str | Path) -> dict:
    """What a checkpoint stores of its tokenizer: the path and the model's bytes, so that
    decoding and export need no separate ``--bpe-model``."""
    data = Path(bpe_model).read_bytes()
    return {"path": str(Path(bpe_model).resolve()),
            "proto": torch.frombuffer(bytearray(data), dtype=torch.uint8).clone()}


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
    is written after it and marks the epoch as finished. Files are read with
    ``weights_only=True``: an unsafe or old-format file stops the search with its error
    (resuming past it silently would retrain); an unreadable (truncated) one is skipped
    with a warning.
    """
    best, best_key = None, None
    candidates = [(p, 0) for _, p in step_checkpoints(exp_dir)]
    candidates += [(p, 1) for _, p in epoch_checkpoints(exp_dir)]
    for p, is_epoch in candidates:
        try:
            step = int(load_checkpoint_file(p, mmap=True)["step"])
        except CheckpointError as e:
            if "refusing" in str(e):
                raise
            logger.warning("ignoring unreadable checkpoint %s (%s)", p, e)
            continue
        key = (step, is_epoch)
        if best_key is None or key > best_key:
            best, best_key = p, key
    return best


def save_averaged(exp_dir, out, epoch=None, avg=1, iteration=None,
                  use_averaged_model: bool = False) -> list[str]:
    """Write the weights a decode with the same selection uses
    (:func:`~mvqkd.student.checkpoint.decoding_weights`: the average of the selected
    checkpoints, or icefall's averaged model) to one decodable file ``out`` (``model``,
    ``config``, ``bpe_model``, ``epoch``, ``step``, ``averaged``: the sources,
    ``use_averaged_model``). Returns the source files."""
    from mvqkd.student.checkpoint import decoding_weights

    weights, last, sources = decoding_weights(exp_dir, epoch=epoch, avg=avg, iteration=iteration,
                                              use_averaged_model=use_averaged_model)
    save_checkpoint(out, model=weights, config=last["config"], bpe_model=last.get("bpe_model"),
                    epoch=last.get("epoch"), step=last.get("step"), averaged=sources,
                    use_averaged_model=use_averaged_model)
    return sources


def _numpy_safe_globals() -> list:
    """The numpy constructors an old checkpoint's RNG states need, and nothing else."""
    try:
        import numpy._core.multiarray as multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        import numpy.core.multiarray as multiarray

    dtypes = [type(np.dtype(t)) for t in (np.uint32, np.int64, np.float64)]
    return [multiarray._reconstruct, np.ndarray, np.dtype, *dtypes]


def _convert_old_rng(state):
    """A format-1 RNG state (numpy tuple, python tuple) -> :func:`rng_state`'s form."""
    if not isinstance(state, dict) or not isinstance(state.get("numpy"), tuple):
        return state
    _, keys, pos, has_gauss, gauss = state["numpy"]
    version, mt, py_gauss = state["python"]
    out = dict(state)
    out["numpy"] = {"keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                    "has_gauss": int(has_gauss), "gauss": float(gauss)}
    out["python"] = {"version": int(version), "state": torch.tensor(mt, dtype=torch.int64),
                     "gauss": py_gauss}
    return out


def upgrade_checkpoint(path: str | Path, out: str | Path | None = None) -> Path:
    """Convert a checkpoint (or teacher ``train_state.pt``) of mvqkd < 0.2 to the safe
    format, in place or to ``out``. Only numpy's array constructors are allowed while
    reading it: a file with any other object (e.g. a pickle payload) is refused.
    """
    path = Path(path)
    out = Path(out) if out else path
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"cannot upgrade {path}: it holds objects other than tensors, numbers and numpy "
            f"arrays ({unsafe_reason(e)}); it was not written by mvqkd"
        ) from None
    rng = ckpt.get("rng")
    ckpt["rng"] = [_convert_old_rng(r) for r in rng] if isinstance(rng, list) else _convert_old_rng(rng)
    ckpt["format_version"] = FORMAT_VERSION
    save_checkpoint(out, **ckpt)
    load_checkpoint_file(out)  # must now load safely
    return out
