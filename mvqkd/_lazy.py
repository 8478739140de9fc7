"""Lazy package exports: ``import mvqkd.<package>`` stays light (no torch) until a name is
used, so that ``mvqkd --help`` starts fast."""

from __future__ import annotations

import importlib


def lazy_exports(package: str, exports: dict[str, str]):
    """``(__getattr__, __all__)`` for a package ``__init__`` that re-exports each ``name`` of
    ``exports`` from its submodule ``package.exports[name]`` on first access."""

    def __getattr__(name):
        if name in exports:
            return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__, sorted(exports)
