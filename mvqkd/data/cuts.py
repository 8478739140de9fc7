"""Reading cut manifests, with errors that name the file and say what to do.

:func:`load_cuts` reads a lhotse manifest and checks that it holds *cuts* (not a
recordings or supervisions manifest, the usual mix-up), so a wrong file is refused before
any work starts.
"""

from __future__ import annotations

from pathlib import Path

_WRONG_KIND = {
    "RecordingSet": "a recordings manifest",
    "SupervisionSet": "a supervisions manifest",
    "FeatureSet": "a features manifest",
}


def load_cuts(path: str | Path, what: str = "cuts"):
    """Eagerly load a lhotse CutSet from ``path``.

    Raises:
        FileNotFoundError: naming ``what`` (e.g. ``--cuts``) and the path.
        ValueError: when the file is another lhotse manifest type, or not one at all.
    """
    from lhotse import CutSet, load_manifest

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: cut manifest not found: {path}")
    try:
        manifest = load_manifest(path)
    except Exception as e:  # lhotse raises several kinds for unknown content
        raise ValueError(f"{what}: {path} is not a lhotse manifest ({type(e).__name__}: {e})") from e
    if manifest is None:
        return CutSet.from_cuts([])
    if not isinstance(manifest, CutSet):
        kind = _WRONG_KIND.get(type(manifest).__name__, type(manifest).__name__)
        raise ValueError(
            f"{what}: {path} is {kind}, not a cuts manifest. Make cuts first, e.g. "
            f"`mvqkd make-cuts` for a folder or Kaldi dir, or lhotse's "
            f"CutSet.from_manifests(recordings=..., supervisions=...)"
        )
    return manifest
