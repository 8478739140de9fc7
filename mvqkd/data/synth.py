"""The embedded speech corpus: espeak-ng speech in LibriSpeech's exact on-disk layout.

``synth_corpus(out_dir, hours, seed)`` writes::

    OUT/LibriSpeech/<part>/<spk>/<chap>/<spk>-<chap>-<utt>.flac    16 kHz mono FLAC
    OUT/LibriSpeech/<part>/<spk>/<chap>/<spk>-<chap>.trans.txt     "<utt-id> UPPER CASE TEXT"

Design (see ``docs/corpus.md``):

- Text: sentences shipped in ``resources/sentences.txt`` (CPython stdlib docstrings,
  vocabulary restricted to ~2000 words). Each sentence belongs to exactly one pool
  (train / dev / test-clean / test-other) by a stable hash, so no test sentence is ever
  seen in training, whatever the seed.
- Speakers: an espeak-ng voice (accent) x voice variant x pitch x speed. Speakers are
  disjoint between all parts. ``test-other`` speaks faster and has additive noise
  (10..20 dB SNR), like LibriSpeech's harder "other" sets.
- Size: ``hours`` is split over the parts by ``PART_SHARES``; utterance durations are
  *planned* from word counts before synthesis, so the plan (and so the corpus) depends
  only on ``(hours, seed)``.
- Deterministic: every utterance is synthesised from a fully specified job; noise uses a
  per-utterance seed. Parallel with a process pool; resumable (finished files are kept,
  files are written to a temporary name and renamed).
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import random
import shutil
import subprocess
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mvqkd.conventions import SAMPLE_RATE

logger = logging.getLogger(__name__)

SENTENCES_FILE = Path(__file__).parent / "resources" / "sentences.txt"

# Share of the requested hours per part. train-clean-360 is the larger set the demo
# teacher is trained on; train-clean-100 is what the student sees.
PART_SHARES = {
    "train-clean-360": 0.55,
    "train-clean-100": 0.30,
    "dev-clean": 0.05,
    "test-clean": 0.05,
    "test-other": 0.05,
}
SENTENCE_POOL = {  # part -> (lo, hi) range of sha1(sentence) % 100
    "train-clean-360": (0, 80),
    "train-clean-100": (0, 80),
    "dev-clean": (80, 86),
    "test-clean": (86, 93),
    "test-other": (93, 100),
}
VOICES = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan",
          "en-gb-x-gbcwmd", "en-029", "en-us-nyc"]
VARIANTS = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5"]
PITCHES = [35, 50, 65]
CLEAN_SPEEDS = [150, 165, 180]
OTHER_SPEEDS = [205, 225]
SECONDS_PER_WORD_AT_160_WPM = 60.0 / 160.0
UTTS_PER_CHAPTER = 12
CHAPTERS_PER_SPEAKER = 2


@dataclass(frozen=True)
class Speaker:
    id: int
    voice: str
    variant: str
    pitch: int
    speed: int
    noisy: bool

    @property
    def espeak_voice(self) -> str:
        return f"{self.voice}+{self.variant}"


@dataclass(frozen=True)
class UttJob:
    part: str
    speaker: Speaker
    chapter: int
    index: int
    text: str
    noise_seed: int

    @property
    def utt_id(self) -> str:
        return f"{self.speaker.id}-{self.chapter}-{self.index:04d}"

    def flac_path(self, root: Path) -> Path:
        return root / self.part / str(self.speaker.id) / str(self.chapter) / f"{self.utt_id}.flac"


def load_sentences(path: Path = SENTENCES_FILE) -> list[str]:
    """The shipped sentence list (comment lines starting with '#' skipped)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def sentence_pool(sentences: list[str], part: str) -> list[str]:
    lo, hi = SENTENCE_POOL[part]
    return [s for s in sentences if lo <= int(hashlib.sha1(s.encode()).hexdigest(), 16) % 100 < hi]


def all_speakers(seed: int) -> dict[str, list[Speaker]]:
    """Disjoint, shuffled speaker lists per part (clean parts vs. the fast+noisy test-other)."""
    rng = random.Random(seed)
    clean = [(v, var, p, s) for v in VOICES for var in VARIANTS for p in PITCHES for s in CLEAN_SPEEDS]
    other = [(v, var, p, s) for v in VOICES for var in VARIANTS for p in PITCHES for s in OTHER_SPEEDS]
    rng.shuffle(clean)
    rng.shuffle(other)
    # Clean profiles are dealt round-robin in blocks so every part gets a mix of voices.
    clean_parts = [p for p in PART_SHARES if p != "test-other"]
    out: dict[str, list[Speaker]] = {p: [] for p in PART_SHARES}
    for i, prof in enumerate(clean):
        part = clean_parts[i % len(clean_parts)]
        out[part].append(prof)  # type: ignore[arg-type]
    out["test-other"] = list(other)  # type: ignore[assignment]
    base = {p: 1000 + 1000 * k for k, p in enumerate(PART_SHARES)}  # ids disjoint by construction
    return {
        part: [Speaker(base[part] + i, *prof, noisy=(part == "test-other")) for i, prof in enumerate(profs)]
        for part, profs in out.items()
    }


def estimated_seconds(text: str, speed: int) -> float:
    return len(text.split()) * SECONDS_PER_WORD_AT_160_WPM * 160.0 / speed + 0.3


def plan_corpus(hours: float, seed: int) -> list[UttJob]:
    """All utterance jobs for ``hours`` of audio; depends only on (hours, seed)."""
    if hours <= 0:
        raise ValueError(f"--hours must be > 0, got {hours}")
    sentences = load_sentences()
    speakers = all_speakers(seed)
    jobs: list[UttJob] = []
    for p_idx, (part, share) in enumerate(PART_SHARES.items()):
        rng = random.Random(f"{seed}-{part}")
        pool = sentence_pool(sentences, part)
        rng.shuffle(pool)
        target = hours * 3600.0 * share
        per_speaker = UTTS_PER_CHAPTER * CHAPTERS_PER_SPEAKER
        # At least 2 speakers per part; utterances spread evenly over speakers.
        est_utt = sum(estimated_seconds(s, 165) for s in pool[:200]) / min(200, len(pool))
        n_utts = max(2, math.ceil(target / est_utt))
        n_spk = min(len(speakers[part]), max(2, math.ceil(n_utts / per_speaker)))
        spk_list = speakers[part][:n_spk]
        total, k = 0.0, 0
        while total < target or k < 2:
            spk = spk_list[k % n_spk]
            slot = k // n_spk
            chapter = 100 + spk.id % 97 * 10 + (slot // UTTS_PER_CHAPTER) % CHAPTERS_PER_SPEAKER
            text = pool[k % len(pool)]
            jobs.append(UttJob(part, spk, chapter, slot, text, noise_seed=seed * 1_000_003 + p_idx * 100_000 + k))
            total += estimated_seconds(text, spk.speed)
            k += 1
    return jobs


def synthesize(job: UttJob) -> np.ndarray:
    """Run espeak-ng + sox for one job. Returns float32 samples at 16 kHz, mono."""
    s = job.speaker
    espeak = subprocess.run(
        ["espeak-ng", "-v", s.espeak_voice, "-p", str(s.pitch), "-s", str(s.speed), "--stdout", job.text],
        check=True, capture_output=True,
    )
    sox = subprocess.run(
        ["sox", "-t", "wav", "-", "-t", "raw", "-e", "floating-point", "-b", "32", "-r", str(SAMPLE_RATE),
         "-c", "1", "-", "rate", "-h"],
        input=espeak.stdout, check=True, capture_output=True,
    )
    audio = np.frombuffer(sox.stdout, dtype=np.float32).copy()
    if s.noisy:
        rng = np.random.default_rng(job.noise_seed)
        snr_db = rng.uniform(10.0, 20.0)
        power = float(np.mean(audio**2)) + 1e-10
        audio += rng.normal(0.0, math.sqrt(power / 10 ** (snr_db / 10)), size=audio.shape).astype(np.float32)
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak > 0.99:
        audio *= 0.99 / peak
    return audio


def _write_job(job_and_root: tuple[UttJob, Path]) -> float:
    import soundfile as sf

    job, root = job_and_root
    path = job.flac_path(root)
    if path.exists():
        return sf.info(str(path)).duration
    audio = synthesize(job)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    sf.write(buf, audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    tmp = path.with_suffix(".flac.tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)
    return len(audio) / SAMPLE_RATE


def check_tools() -> None:
    missing = [t for t in ("espeak-ng", "sox") if shutil.which(t) is None]
    if missing:
        raise RuntimeError(
            f"synth-corpus needs {' and '.join(missing)} on PATH; on Debian/Ubuntu: "
            "apt-get install -y espeak-ng sox"
        )


def write_transcripts(jobs: list[UttJob], root: Path) -> None:
    by_chapter: dict[Path, list[UttJob]] = {}
    for job in jobs:
        by_chapter.setdefault(job.flac_path(root).parent, []).append(job)
    for folder, chapter_jobs in by_chapter.items():
        spk, chap = folder.parent.name, folder.name
        lines = [f"{j.utt_id} {j.text}\n" for j in sorted(chapter_jobs, key=lambda j: j.index)]
        tmp = folder / f"{spk}-{chap}.trans.txt.tmp"
        tmp.write_text("".join(lines), encoding="utf-8")
        os.replace(tmp, folder / f"{spk}-{chap}.trans.txt")


def synth_corpus(out_dir: str | Path, hours: float = 0.1, seed: int = 0, num_jobs: int | None = None) -> Path:
    """Synthesise the corpus under ``out_dir/LibriSpeech``; returns that path.

    Re-running with the same arguments only synthesises what is missing.
    """
    from mvqkd.logs import progress

    check_tools()
    root = Path(out_dir) / "LibriSpeech"
    jobs = plan_corpus(hours, seed)
    num_jobs = num_jobs or max(1, os.cpu_count() or 1)
    logger.info("Synthesising %d utterances (~%.2f h planned, seed %d) into %s with %d processes",
                len(jobs), hours, seed, root, num_jobs)
    durations: dict[str, float] = {p: 0.0 for p in PART_SHARES}
    with ProcessPoolExecutor(num_jobs) as pool:
        results = pool.map(_write_job, [(j, root) for j in jobs], chunksize=8)
        for job, dur in progress(zip(jobs, results), "synth-corpus", total=len(jobs), unit="utt"):
            durations[job.part] += dur
    write_transcripts(jobs, root)
    for part, dur in durations.items():
        n_spk = len({j.speaker.id for j in jobs if j.part == part})
        n_utt = sum(1 for j in jobs if j.part == part)
        logger.info("%-16s %5d utts %4d speakers %7.2f min", part, n_utt, n_spk, dur / 60)
    return root
