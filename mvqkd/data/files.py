"""Finding files under a folder the way users lay corpora and experiments out: through
symlinked sub-folders too.

``Path.rglob`` (Python < 3.13) does not descend into symlinked directories, so a corpus whose
speaker folders, or an experiment whose ``tensorboard`` folder, are links to another disk
looked empty or partial. :func:`find_files` follows them, once each (a link back to an
ancestor is not followed again), and returns the paths as seen under ``root``.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path


def find_files(root: str | Path, pattern: str = "*") -> list[Path]:
    """Sorted regular files under ``root`` (any depth, symlinked folders followed) whose name
    matches the glob ``pattern`` (case-sensitive, as ``Path.rglob``); [] if ``root`` is
    not a folder."""
    root = Path(root)
    if not root.is_dir():
        return []
    found: list[Path] = []
    seen: set[str] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a symlink cycle, or two links to one folder: read it once
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        found.extend(Path(folder) / f for f in files
                     if fnmatch.fnmatchcase(f, pattern) and os.path.isfile(os.path.join(folder, f)))
    return sorted(found)
