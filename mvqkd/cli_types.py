"""argparse value types shared by the command modules (no heavy imports)."""

from __future__ import annotations

import argparse


def name_path(value: str) -> tuple[str, str]:
    """``NAME=PATH`` -> ``(name, path)``; an argparse error otherwise."""
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {value!r}")
    return name, path
