"""``mvqkd make-cuts``: a lhotse CutSet from a new corpus (the entry point for any data).

Two inputs are understood:

- a Kaldi data dir (it has ``wav.scp``): ``segments``, ``text``, ``utt2spk`` are used when
  present; one cut per utterance, cut id = utterance id (one per recording, id = recording
  id, without ``segments``). Each recording's sampling rate and channels are read from its
  audio (pipe entries ``cmd |`` are run once to read them; lhotse runs the command again to
  load the audio; no kaldi_native_io needed). An unreadable entry is an error listing all;
- a plain folder of audio files (searched recursively for :data:`AUDIO_SUFFIXES`): one
  cut per file, the cut / recording id being the file's path relative to the folder
  without its suffix, ``/`` and every run of white space replaced by ``_`` (Kaldi's
  ``text`` cannot hold an id with a space: ``Track 01.mp3`` is ``Track_01``). An optional
  transcript file with lines ``<id> TEXT`` (UTF-8; ``--transcripts``, or the folder's own
  ``text`` file) adds one supervision per file (ids must match; files without a line get
  no supervision and are logged by id).

Audio paths in the written manifest are absolute, so it works from any folder.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from mvqkd.data.files import find_files

logger = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".flac", ".wav", ".mp3", ".ogg", ".opus", ".sph", ".m4a")


def read_transcripts(path) -> dict[str, str]:
    """``<id> TEXT`` lines (UTF-8) -> ``{id: TEXT}``; a repeated id is an error."""
    return {key: text for key, (_, text) in _read_mapping(Path(path), required=True).items()}


def recording_id(path: Path, root: Path) -> str:
    """The id of audio file ``path`` under folder ``root``: its relative path without the
    suffix, ``/`` and white space replaced by ``_`` (``spk 1/Track 01.mp3`` -> ``spk_1_Track_01``)."""
    return re.sub(r"\s+", "_", str(path.relative_to(root).with_suffix("")).replace("/", "_"))


def cuts_from_audio_dir(audio_dir, transcripts=None):
    """CutSet of one cut per audio file under ``audio_dir`` (see the module doc)."""
    from lhotse import CutSet, Recording, SupervisionSegment

    root = Path(audio_dir)
    files = [p for p in find_files(root) if p.suffix.lower() in AUDIO_SUFFIXES]
    if not files:
        raise ValueError(f"{root}: no audio files ({', '.join(AUDIO_SUFFIXES)})")
    recordings, origin, unreadable = [], {}, []
    for f in files:
        rid = recording_id(f, root)
        if rid in origin:
            raise ValueError(f"{f} and {origin[rid]} both map to recording id {rid!r}")
        origin[rid] = f
        try:
            recordings.append(Recording.from_file(f.resolve(), recording_id=rid))  # absolute path
        except Exception as e:  # soundfile / audioread raise several kinds for corrupt files
            unreadable.append(f"{f}: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")
    if unreadable:
        raise ValueError(f"{root}: {len(unreadable)} of {len(files)} audio files cannot be read "
                         "(fix or remove them):\n  " + "\n  ".join(unreadable))
    texts = read_transcripts(transcripts) if transcripts else {}
    unknown = sorted(set(texts) - set(origin))
    if unknown:
        example_id, example_file = next(iter(origin.items()))
        raise ValueError(f"{transcripts}: {len(unknown)} of {len(texts)} ids have no audio file "
                         f"under {root}: {_some(unknown)} (an id is the file's path under the "
                         f"folder without its suffix, '/' and spaces -> '_': {example_id!r} is "
                         f"{example_file})")
    cuts = []
    for r in recordings:
        cut = r.to_cut()  # cut id = recording id
        if r.id in texts:
            cut.supervisions = [SupervisionSegment(
                id=r.id, recording_id=r.id, start=0.0, duration=r.duration,
                channel=r.channel_ids[0] if r.num_channels == 1 else r.channel_ids, text=texts[r.id])]
        cuts.append(cut)
    missing = [r.id for r in recordings if r.id not in texts]
    if transcripts and missing:
        logger.warning("%s: %d of %d files have no transcript line (no supervision; training "
                       "drops them): %s", transcripts, len(missing), len(recordings), _some(missing))
    return CutSet.from_cuts(cuts)


def _some(ids: list[str], n: int = 5) -> str:
    """The first ``n`` of ``ids`` and how many more: ``'a', 'b' and 3 more``."""
    head = ", ".join(repr(i) for i in ids[:n])
    return head + (f" and {len(ids) - n} more" if len(ids) > n else "")


def _read_mapping(path: Path, required: bool = False) -> dict[str, tuple[int, str]]:
    """Kaldi ``<key> <value...>`` lines -> ``{key: (line number, value)}``."""
    if not path.is_file():
        if required:
            raise ValueError(f"{path}: not found")
        return {}
    out: dict[str, tuple[int, str]] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.strip().split(maxsplit=1)
        if parts[0] in out:
            raise ValueError(f"{path}:{n}: id {parts[0]!r} appears twice (also line {out[parts[0]][0]})")
        out[parts[0]] = (n, parts[1] if len(parts) > 1 else "")
    return out


def _pipe_recording(rec_id: str, command: str):
    """A Recording for a wav.scp pipe entry: the command is run once to read the real
    sampling rate, channels and length (lhotse runs it again whenever the audio is loaded)."""
    import io
    import subprocess

    import soundfile as sf
    from lhotse import AudioSource, Recording

    proc = subprocess.run(command, shell=True, capture_output=True, check=False)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise RuntimeError(f"command exited with status {proc.returncode}: {err[-1] if err else ''}")
    audio, rate = sf.read(io.BytesIO(proc.stdout), always_2d=True)  # frames counted from the data
    return Recording(id=rec_id, sources=[AudioSource(type="command", channels=list(range(audio.shape[1])),
                                                     source=command)],
                     sampling_rate=int(rate), num_samples=audio.shape[0], duration=audio.shape[0] / rate)


def _kaldi_recordings(kaldi_dir: Path) -> dict:
    """``{recording id: Recording}`` from wav.scp: files read with their own sampling rate
    and channels (paths made absolute), pipe entries (``... |``) run once; every unreadable
    entry is listed in one error."""
    from lhotse import Recording

    recordings, bad = {}, []
    for rec_id, (n, entry) in _read_mapping(kaldi_dir / "wav.scp", required=True).items():
        entry = entry.strip()
        try:
            if entry.endswith("|"):
                recordings[rec_id] = _pipe_recording(rec_id, entry[:-1].strip())
            else:
                recordings[rec_id] = Recording.from_file(Path(entry).resolve(), recording_id=rec_id)
        except Exception as e:  # soundfile / audioread / subprocess raise several kinds
            why = str(e).splitlines()[0][:200] if str(e) else ""
            bad.append(f"{kaldi_dir / 'wav.scp'}:{n} {rec_id}: {type(e).__name__}: {why}")
    if bad:
        raise ValueError(f"{kaldi_dir}/wav.scp: {len(bad)} entries cannot be read (fix or remove them):\n  "
                         + "\n  ".join(bad))
    return recordings


def _kaldi_segments(kaldi_dir: Path, recordings: dict) -> list[tuple[str, str, float, float]]:
    """``[(utt, recording, start, duration)]`` from ``segments`` (end -1: to the end), or one
    whole-recording segment per recording when there is none."""
    segments = _read_mapping(kaldi_dir / "segments")
    if not segments:
        return [(rid, rid, 0.0, r.duration) for rid, r in recordings.items()]
    out = []
    for utt, (n, value) in segments.items():
        fields = value.split()
        if len(fields) != 3 or fields[0] not in recordings:
            raise ValueError(f"{kaldi_dir / 'segments'}:{n}: expected '<utt> <recording> <start> <end>' "
                             f"with a recording of wav.scp, got {utt} {value!r}")
        rec = recordings[fields[0]]
        start, end = float(fields[1]), float(fields[2])
        end = rec.duration if end < 0 else min(end, rec.duration)
        if end <= start:
            raise ValueError(f"{kaldi_dir / 'segments'}:{n}: segment {utt} is empty ({start} to {end} s)")
        out.append((utt, fields[0], start, end - start))
    return out


def cuts_from_kaldi_dir(kaldi_dir):
    """One cut per utterance of a Kaldi data dir (``wav.scp``; ``segments``, ``text``,
    ``utt2spk`` when present); cut id = utterance id (= recording id without segments).
    Sampling rates and channels come from the audio itself."""
    from lhotse import CutSet, MonoCut, MultiCut, SupervisionSegment

    kaldi_dir = Path(kaldi_dir)
    recordings = _kaldi_recordings(kaldi_dir)
    texts = _read_mapping(kaldi_dir / "text")
    speakers = _read_mapping(kaldi_dir / "utt2spk")
    cuts = []
    for utt, rid, start, duration in _kaldi_segments(kaldi_dir, recordings):
        rec = recordings[rid]
        channel = rec.channel_ids[0] if rec.num_channels == 1 else rec.channel_ids
        sups = []
        if utt in texts:
            sups = [SupervisionSegment(id=utt, recording_id=rid, start=0.0, duration=duration, channel=channel,
                                       text=texts[utt][1], speaker=speakers.get(utt, (0, None))[1])]
        cls = MonoCut if rec.num_channels == 1 else MultiCut
        cuts.append(cls(id=utt, start=start, duration=duration, channel=channel, recording=rec,
                        supervisions=sups))
    if texts and len(texts) < len(cuts):
        logger.warning("%s: %d of %d utterances have no line in 'text'", kaldi_dir, len(cuts) - len(texts),
                       len(cuts))
    return CutSet.from_cuts(cuts)


def make_cuts(source, out, transcripts=None):
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
        cuts = cuts_from_kaldi_dir(source)
    else:
        if transcripts is None and (source / "text").is_file():
            transcripts = source / "text"
            logger.info("make-cuts: transcripts from %s (Kaldi's name; --transcripts overrides)", transcripts)
        cuts = cuts_from_audio_dir(source, transcripts)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    cuts.to_file(out)
    logger.info("make-cuts: %d cuts (%.1f s of audio) from %s -> %s",
                len(cuts), sum(c.duration for c in cuts), source, out)
    return cuts
