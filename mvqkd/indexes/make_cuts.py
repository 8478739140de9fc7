"""``mvqkd make-cuts``: a lhotse CutSet from a new corpus (the entry point for any data).

Two inputs are understood:

- a Kaldi data dir (it has ``wav.scp``): read with ``lhotse.kaldi.load_kaldi_data_dir``
  (``segments``, ``text``, ``utt2spk`` are used when present); one cut per utterance,
  cut id = utterance id (one per recording, id = recording id, without ``text``);
- a plain folder of audio files (searched recursively for :data:`AUDIO_SUFFIXES`): one
  cut per file, the cut / recording id being the file's path relative to the folder
  without its suffix, ``/`` replaced by ``_``. An optional transcript file with lines
  ``<id> TEXT`` adds one supervision per file (ids must match; files without a line get
  no supervision and are logged).
"""

from __future__ import annotations

import logging
from pathlib import Path

from mvqkd.conventions import SAMPLE_RATE

logger = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".flac", ".wav", ".mp3", ".ogg", ".opus", ".sph", ".m4a")


def read_transcripts(path) -> dict[str, str]:
    out = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if parts[0] in out:
            raise ValueError(f"{path}:{n}: id {parts[0]!r} appears twice")
        out[parts[0]] = parts[1] if len(parts) > 1 else ""
    return out


def cuts_from_audio_dir(audio_dir, transcripts=None):
    """CutSet of one cut per audio file under ``audio_dir`` (see the module doc)."""
    from lhotse import CutSet, Recording, SupervisionSegment

    root = Path(audio_dir)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"{root}: no audio files ({', '.join(AUDIO_SUFFIXES)})")
    recordings, origin, unreadable = [], {}, []
    for f in files:
        rid = str(f.relative_to(root).with_suffix("")).replace("/", "_")
        if rid in origin:
            raise ValueError(f"{f} and {origin[rid]} both map to recording id {rid!r}")
        origin[rid] = f
        try:
            recordings.append(Recording.from_file(f, recording_id=rid))
        except Exception as e:  # soundfile / audioread raise several kinds for corrupt files
            unreadable.append(f"{f}: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")
    if unreadable:
        raise ValueError(f"{root}: {len(unreadable)} of {len(files)} audio files cannot be read "
                         "(fix or remove them):\n  " + "\n  ".join(unreadable))
    texts = read_transcripts(transcripts) if transcripts else {}
    unknown = sorted(set(texts) - set(origin))
    if unknown:
        raise ValueError(f"{transcripts}: ids without an audio file: {unknown[:5]}")
    cuts = []
    for r in recordings:
        cut = r.to_cut()  # cut id = recording id
        if r.id in texts:
            cut.supervisions = [SupervisionSegment(
                id=r.id, recording_id=r.id, start=0.0, duration=r.duration,
                channel=r.channel_ids[0] if r.num_channels == 1 else r.channel_ids, text=texts[r.id])]
        cuts.append(cut)
    if transcripts and len(texts) < len(recordings):
        logger.warning("%d of %d files have no transcript line", len(recordings) - len(texts), len(recordings))
    return CutSet.from_cuts(cuts)


def cuts_from_kaldi_dir(kaldi_dir, sampling_rate: int):
    from lhotse import CutSet
    from lhotse.kaldi import load_kaldi_data_dir

    recordings, supervisions, _ = load_kaldi_data_dir(kaldi_dir, sampling_rate=sampling_rate)
    if supervisions is None:  # no text / segments: one cut per recording, id = recording id
        return CutSet.from_cuts(r.to_cut() for r in recordings)
    # one cut per utterance (segment), id = utterance id
    return CutSet.from_manifests(recordings=recordings, supervisions=supervisions).trim_to_supervisions(
        keep_overlapping=False).to_eager()


def make_cuts(source, out, transcripts=None, sampling_rate: int = SAMPLE_RATE):
    """Build cuts from ``source`` (Kaldi dir or audio folder) and write them to ``out``.

    Returns:
        the CutSet.
    """
    source = Path(source)
    if not source.is_dir():
        raise ValueError(f"{source}: not a directory")
    if (source / "wav.scp").is_file():
        if transcripts:
            raise ValueError("--transcripts is for audio folders; a Kaldi dir has its own 'text' file")
        cuts = cuts_from_kaldi_dir(source, sampling_rate)
    else:
        cuts = cuts_from_audio_dir(source, transcripts)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    cuts.to_file(out)
    logger.info("make-cuts: %d cuts (%.1f s of audio) from %s -> %s",
                len(cuts), sum(c.duration for c in cuts), source, out)
    return cuts
