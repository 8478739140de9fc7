"""Reading a ``torch.save`` zip checkpoint that holds more than tensors (a fairseq
checkpoint's omegaconf config, argparse Namespace, numpy scalars), without executing it.

``torch.load(weights_only=True)`` refuses such files, and ``weights_only=False`` would run
whatever the pickle asks for. :func:`load_inert` reads the zip itself with a restricted
unpickler in which **no global resolves to real code**: tensors are rebuilt from the raw
storage bytes by this module's own functions, a few builtin container types are the real
ones, and every other class or function named by the pickle becomes an inert
:class:`Record` that only stores the arguments and state given to it. :func:`plain`
turns Records of omegaconf / argparse / enum objects into dicts and values.
"""

from __future__ import annotations

import collections
import pickle
import zipfile
from pathlib import Path

import torch

_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}
#: builtin types that are safe to construct (calling them runs no user code)
_BUILTINS = {"dict": dict, "list": list, "tuple": tuple, "set": set, "frozenset": frozenset, "str": str,
             "int": int, "float": float, "bool": bool, "bytes": bytes, "complex": complex,
             "slice": slice, "object": object, "NoneType": type(None)}


class Record:
    """An inert stand-in for any class or function a pickle names: it keeps the
    constructor / call arguments in ``args`` and the unpickled state in ``__dict__``."""

    qualname = "?"

    def __init__(self, *args, **kwargs):
        self.args = args
        self.__dict__.update(kwargs)

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], (dict, type(None))):
            state = {**(state[0] or {}), **(state[1] or {})}  # (dict, slots)
        if isinstance(state, dict):
            self.__dict__.update({str(k): v for k, v in state.items()})
        else:
            self.__dict__["state"] = state

    def __repr__(self) -> str:
        return f"Record({self.qualname})"


class _StorageType:
    def __init__(self, name: str):
        if name not in _DTYPES:
            raise pickle.UnpicklingError(f"unsupported storage type torch.{name}")
        self.dtype = _DTYPES[name]


def _rebuild_tensor(storage, offset, size, stride, *_ignored):
    return torch.as_strided(storage, tuple(size), tuple(stride), offset).clone()


def _rebuild_parameter(data, *_ignored):
    return data


def _records():
    cache: dict[str, type] = {}

    def record(module: str, name: str) -> type:
        key = f"{module}.{name}"
        if key not in cache:
            cache[key] = type(name, (Record,), {"qualname": key})
        return cache[key]

    return record


class _InertUnpickler(pickle.Unpickler):
    def __init__(self, file, archive: zipfile.ZipFile, prefix: str):
        super().__init__(file)
        self.archive, self.prefix, self.record = archive, prefix, _records()

    def find_class(self, module, name):
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name.endswith("Storage"):
            return _StorageType(name)
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module in ("builtins", "__builtin__") and name in _BUILTINS:
            return _BUILTINS[name]
        return self.record(module, name)  # never real code

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        storage_type, key, numel = pid[1], pid[2], pid[4]
        raw = self.archive.read(f"{self.prefix}/data/{key}")
        return torch.frombuffer(bytearray(raw), dtype=storage_type.dtype)[:numel]


def load_inert(path: str | Path):
    """Unpickle a zip-format ``torch.save`` file without running any of its code.

    Raises:
        ValueError: when the file is not a zip-format torch checkpoint.
    """
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a zip-format torch checkpoint (torch.save since torch 1.6); "
                         "legacy-format files cannot be read safely")
    with zipfile.ZipFile(path) as archive:
        pkl = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise ValueError(f"{path}: no single <archive>/data.pkl inside; not a torch checkpoint")
        prefix = pkl[0].split("/")[0]
        order = f"{prefix}/byteorder"
        if order in archive.namelist() and archive.read(order).decode().strip() != "little":
            raise ValueError(f"{path}: big-endian checkpoints are not supported")
        with archive.open(pkl[0]) as f:
            return _InertUnpickler(f, archive, prefix).load()


def plain(obj):
    """Records of omegaconf containers / nodes, argparse Namespaces and enums -> plain
    dicts, lists and values; tensors and plain values are returned as they are."""
    if isinstance(obj, Record):
        d = obj.__dict__
        if "_content" in d:  # omegaconf DictConfig / ListConfig
            return plain(d["_content"])
        if "_val" in d:  # omegaconf value node
            return plain(d["_val"])
        if obj.qualname == "argparse.Namespace":
            return {k: plain(v) for k, v in d.items() if k != "args"}
        if len(obj.args) == 1 and set(d) <= {"args"}:  # enum member / simple wrapper: its value
            return plain(obj.args[0])
        return obj
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj)
    return obj
