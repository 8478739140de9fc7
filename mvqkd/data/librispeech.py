"""LibriSpeech-layout corpora -> lhotse manifests, with an audit that never drops data silently.

lhotse's ``prepare_librispeech`` skips a transcript line whose audio is missing without a
word, and crashes the whole part on one corrupt file. ``prepare_librispeech_manifests``
first *audits* each part (``audit_part``) and then builds the same manifests lhotse would
(same ids, same fields: ``Recording.from_file`` + one ``SupervisionSegment`` per utterance)
for the good utterances only. Every problem is logged, counted, written to
``OUT/bad_utterances_<part>.txt`` and summarised at the end; ``strict=True`` makes any
problem an error instead.

Problems detected: missing part folder, transcript line with an empty text, transcript id
without audio, audio without a transcript line, unreadable / corrupt audio (header or
decode failure).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from mvqkd.data.files import find_files

logger = logging.getLogger(__name__)

LIBRISPEECH_PARTS = (
    "dev-clean", "dev-other", "test-clean", "test-other",
    "train-clean-100", "train-clean-360", "train-other-500",
)


class CorpusError(RuntimeError):
    """A corpus that cannot be prepared as asked (message names the path)."""


@dataclass
class PartAudit:
    part: str
    good: dict[str, tuple[Path, str]] = field(default_factory=dict)  # utt id -> (audio, text)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (path or id, reason)

    def report(self) -> str:
        return "\n".join(f"{where}\t{why}" for where, why in self.problems)


def resolve_librispeech_root(corpus_dir: str | Path) -> Path:
    """Accept either ``CORPUS`` (holding ``LibriSpeech/``) or the ``LibriSpeech`` folder itself."""
    corpus_dir = Path(corpus_dir).resolve()  # absolute audio paths: manifests work from any folder
    if not corpus_dir.is_dir():
        raise CorpusError(f"corpus directory {corpus_dir} does not exist")
    if (corpus_dir / "LibriSpeech").is_dir():
        return corpus_dir / "LibriSpeech"
    if any((corpus_dir / p).is_dir() for p in LIBRISPEECH_PARTS):
        return corpus_dir
    raise CorpusError(
        f"{corpus_dir} holds neither a LibriSpeech/ folder nor any part folder "
        f"({', '.join(LIBRISPEECH_PARTS)}); download it or run `mvqkd synth-corpus --out-dir {corpus_dir}`"
    )


def _check_audio(path: Path) -> str | None:
    """None when ``path`` is readable audio, else the reason. Decodes one block to catch corruption."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
        if info.frames == 0:
            return "audio has no samples"
        with sf.SoundFile(str(path)) as f:
            f.read(frames=min(info.frames, 4096), dtype="float32")
            if info.frames > 4096:
                f.seek(info.frames - 1024)
                f.read(frames=1024, dtype="float32")
    except Exception as e:  # soundfile raises several types for corrupt input
        return f"unreadable audio: {type(e).__name__}: {e}"
    return None


def audit_part(root: Path, part: str) -> PartAudit:
    """Pair transcripts with audio files of one part; see the module docstring."""
    part_dir = root / part
    if not part_dir.is_dir():
        raise CorpusError(f"part folder {part_dir} does not exist (half-written or missing corpus?)")
    audit = PartAudit(part)
    texts: dict[str, tuple[Path, str]] = {}
    empty: set[str] = set()
    for trans in find_files(part_dir, "*.trans.txt"):
        for lineno, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            utt_id, _, text = line.strip().partition(" ")
            if not text.strip():
                audit.problems.append((f"{trans}:{lineno}", f"empty transcript for {utt_id}"))
                empty.add(utt_id)
                continue
            texts[utt_id] = (trans.parent, text.strip())
    audio = {p.stem: p for p in find_files(part_dir, "*.flac")}
    if not texts and not audio:
        raise CorpusError(f"part folder {part_dir} holds no transcripts and no .flac audio")
    for utt_id, (folder, text) in texts.items():
        path = audio.get(utt_id)
        if path is None:
            audit.problems.append((str(folder / f"{utt_id}.flac"), "transcript line without audio file"))
            continue
        reason = _check_audio(path)
        if reason:
            audit.problems.append((str(path), reason))
            continue
        audit.good[utt_id] = (path, text)
    for utt_id, path in audio.items():
        if utt_id not in texts and utt_id not in empty:
            audit.problems.append((str(path), "audio file without transcript line"))
    return audit


def manifests_for(audit: PartAudit):
    """(RecordingSet, SupervisionSet) for the good utterances, as lhotse's recipe makes them."""
    from lhotse import Recording, RecordingSet, SupervisionSegment, SupervisionSet
    from lhotse.qa import fix_manifests, validate_recordings_and_supervisions

    recordings, supervisions = [], []
    for utt_id, (path, text) in sorted(audit.good.items()):
        rec = Recording.from_file(path, recording_id=utt_id)
        recordings.append(rec)
        supervisions.append(SupervisionSegment(
            id=utt_id, recording_id=utt_id, start=0.0, duration=rec.duration,
            channel=0, text=text, language="English", speaker=utt_id.split("-")[0],
        ))
    recs, sups = fix_manifests(RecordingSet.from_recordings(recordings), SupervisionSet.from_segments(supervisions))
    validate_recordings_and_supervisions(recs, sups)
    return recs, sups


def prepare_librispeech_manifests(
    corpus_dir: str | Path, parts: list[str], output_dir: str | Path, strict: bool = False
) -> dict[str, int]:
    """Audit and write ``librispeech_{recordings,supervisions}_<part>.jsonl.gz`` per part.

    Returns ``{part: number of skipped utterances}``. Parts whose manifests already exist
    are left alone (idempotent).
    """
    root = resolve_librispeech_root(corpus_dir)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    skipped: dict[str, int] = {}
    for part in parts:
        rec_path = output_dir / f"librispeech_recordings_{part}.jsonl.gz"
        sup_path = output_dir / f"librispeech_supervisions_{part}.jsonl.gz"
        if rec_path.exists() and sup_path.exists():
            logger.info("%s: manifests exist, skipping", part)
            continue
        audit = audit_part(root, part)
        bad_path = output_dir / f"bad_utterances_{part}.txt"
        if audit.problems:
            bad_path.write_text(audit.report() + "\n", encoding="utf-8")
            for where, why in audit.problems[:20]:
                logger.warning("%s: skipping %s (%s)", part, where, why)
            if strict:
                raise CorpusError(
                    f"{part}: {len(audit.problems)} bad utterances (first: {audit.problems[0][0]}: "
                    f"{audit.problems[0][1]}); full list in {bad_path}"
                )
        elif bad_path.exists():
            bad_path.unlink()
        if not audit.good:
            raise CorpusError(f"{part}: no usable utterance under {root / part}; see {bad_path}")
        recs, sups = manifests_for(audit)
        # Write to temporary names, then rename: a killed run never leaves a half manifest.
        for manifest, path in ((sups, sup_path), (recs, rec_path)):
            tmp = path.with_name("tmp." + path.name)
            manifest.to_file(tmp)
            tmp.replace(path)
        skipped[part] = len(audit.problems)
        logger.info("%s: %d utterances, %d skipped%s", part, len(recs), len(audit.problems),
                    f" (listed in {bad_path})" if audit.problems else "")
    return skipped
