"""Logging that reads well in a file: progress bars only on a terminal, periodic log
lines otherwise, and third-party chatter (transformers' load reports) off unless verbose.

- :func:`progress` wraps an iterable: a tqdm bar when stderr is a TTY (or
  ``MVQKD_PROGRESS=1``), else a log line ``desc: n/total`` at most every
  :data:`LOG_EVERY_S` seconds and one at the end. ``MVQKD_PROGRESS=0`` forces log lines.
- :func:`verbose` is True when ``mvqkd --verbose`` (or ``MVQKD_VERBOSE=1``) asked for detail.
- :func:`quiet_transformers` silences transformers' info / warnings / load report unless verbose.

Standard library only at import time.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")

LOG_EVERY_S = 30.0
logger = logging.getLogger("mvqkd.progress")


def verbose() -> bool:
    return os.environ.get("MVQKD_VERBOSE", "") not in ("", "0")


def use_bar() -> bool:
    """A live progress bar? ``MVQKD_PROGRESS`` (1/0) decides, else whether stderr is a TTY."""
    env = os.environ.get("MVQKD_PROGRESS", "")
    if env:
        return env != "0"
    return sys.stderr.isatty()


class _LogProgress:
    """A tqdm-like object for files: ``update``, ``set_postfix`` and ``close`` write
    periodic log lines instead of redrawing a bar."""

    def __init__(self, desc: str, total: int | None, unit: str):
        self.desc, self.total, self.unit = desc, total, unit
        self.n, self.postfix = 0, ""
        self.t0 = self.last = time.time()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.time()
        if now - self.last >= LOG_EVERY_S:
            self.last = now
            self._log()

    def set_postfix(self, **kw) -> None:
        self.postfix = " ".join(f"{k}={v}" for k, v in kw.items())

    def _log(self, final: bool = False) -> None:
        of = f"/{self.total}" if self.total else ""
        rate = self.n / max(1e-9, time.time() - self.t0)
        logger.info("%s: %s%d%s %s (%.1f %s/s)%s", self.desc, "done, " if final else "", self.n, of,
                    self.unit, rate, self.unit, f" {self.postfix}" if self.postfix else "")

    def close(self) -> None:
        if self.n:
            self._log(final=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def progress_bar(desc: str, total: int | None = None, unit: str = "it", disable: bool = False):
    """A manual progress object (``update(n)``, ``set_postfix(...)``, ``close()``)."""
    if disable:
        return _Null()
    if use_bar():
        from tqdm import tqdm

        return tqdm(desc=desc, total=total, unit=unit, leave=False)
    return _LogProgress(desc, total, unit)


class _Null:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **kw) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def progress(iterable: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """Iterate ``iterable`` with a bar on a terminal or periodic log lines in a file."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    bar = progress_bar(desc, total, unit)
    try:
        for item in iterable:
            yield item
            bar.update(1)
    finally:
        bar.close()


class FileLog:
    """Copy the ``mvqkd`` loggers to ``path`` (INFO and up) until :meth:`close`; usable as a
    context manager. The training and decoding log files (``log-train-*``, ``log-decode-*``)."""

    FORMAT = "%(asctime)s %(levelname)s [%(name)s] %(message)s"

    def __init__(self, path):
        self.handler = logging.FileHandler(path)
        self.handler.setFormatter(logging.Formatter(self.FORMAT))
        self.root = logging.getLogger("mvqkd")
        self.root.addHandler(self.handler)
        self.old_level = None
        if self.root.getEffectiveLevel() > logging.INFO:
            self.old_level = self.root.level
            self.root.setLevel(logging.INFO)

    def close(self) -> None:
        self.root.removeHandler(self.handler)
        self.handler.close()
        if self.old_level is not None:
            self.root.setLevel(self.old_level)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def quiet_transformers() -> None:
    """transformers: errors only, no progress bars / load report, unless verbose."""
    if verbose():
        return
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass
