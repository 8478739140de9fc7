"""80-bin log-mel fbank (10 ms shift) for lhotse cuts, stored with ``LilcomChunkyWriter``.

Every cut is first brought to what the student hears (:func:`student_cut`): 16 kHz (other
rates resampled) and one channel (a multi-channel cut is downmixed by averaging).

``compute_fbank_for_part`` turns a LibriSpeech part's recordings + supervisions into
``OUT/librispeech_cuts_<part>.jsonl.gz`` with features under ``OUT/feats_<part>/``;
``compute_fbank_for_cuts`` does the same for any cuts manifest (``make-cuts`` output, a
lhotse CutSet of your own). Feature paths in the written manifests are absolute.
Cuts are split over ``num_jobs`` processes, each writing its own feature archive.
A cut whose audio cannot be decoded is logged, counted and listed in
``OUT/failed_cuts_<part>.txt``; it never crashes the whole part and is never dropped
silently. With ``strict=True`` such a part is an error (:class:`FbankFailures`) once its
manifest and list are written, and again whenever the finished part is re-checked. The
manifest is written to a temporary name and renamed, so an existing manifest always means a
finished part (re-running is a no-op).
"""

from __future__ import annotations

import logging
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from mvqkd.conventions import NUM_MEL_BINS, SAMPLE_RATE

logger = logging.getLogger(__name__)


def student_cut(cut):
    """The cut at 16 kHz with one channel (resampled / downmixed by lhotse, lazily)."""
    if cut.sampling_rate != SAMPLE_RATE:
        cut = cut.resample(SAMPLE_RATE)
    if cut.num_channels is not None and cut.num_channels > 1:
        cut = cut.to_mono(mono_downmix=True)
    return cut


def store_student_fbank(cut, extractor, writer):
    """Compute and store the fbank of :func:`student_cut`; returns the cut (resampled when
    needed, its channels kept) carrying the features. A downmixed cut holds its audio in
    memory, so the features go onto the multi-channel cut, whose own audio stays on disk
    (the teacher downmixes it the same way)."""
    if cut.sampling_rate != SAMPLE_RATE:
        cut = cut.resample(SAMPLE_RATE)
    if cut.num_channels is not None and cut.num_channels > 1:
        cut.features = student_cut(cut).compute_and_store_features(extractor, writer).features
        return cut
    return cut.compute_and_store_features(extractor, writer)


def fbank_extractor():
    from lhotse import Fbank, FbankConfig

    return Fbank(FbankConfig(num_mel_bins=NUM_MEL_BINS))


def _compute_chunk(args: tuple[list, str]) -> tuple[list, list[tuple[str, str]]]:
    """Worker: (list of cut dicts, archive path) -> (cut dicts with features, failures)."""
    import torch
    from lhotse import CutSet, LilcomChunkyWriter

    torch.set_num_threads(1)
    cut_dicts, archive = args
    extractor = fbank_extractor()
    done, failed = [], []
    with LilcomChunkyWriter(archive) as writer:
        for cut in CutSet.from_dicts(cut_dicts):
            try:
                done.append(store_student_fbank(cut, extractor, writer).to_dict())
            except Exception as e:  # corrupt / truncated audio surfaces here as various types
                failed.append((cut.id, f"{type(e).__name__}: {e}"))
    return done, failed


def compute_fbank(cuts, out_dir: str | Path, name: str, num_jobs: int = 1):
    """Compute and store fbank for ``cuts``; returns (CutSet with features, failures list)."""
    from lhotse import CutSet
    from mvqkd.logs import progress_bar

    out_dir = Path(out_dir).resolve()  # absolute feature paths: the manifest works from anywhere
    feats_dir = out_dir / f"feats_{name}"
    feats_dir.mkdir(parents=True, exist_ok=True)
    cut_dicts = [c.to_dict() for c in cuts]
    num_jobs = max(1, min(num_jobs, len(cut_dicts)))
    # Many small chunks: a progress bar that moves, and balanced workers.
    size = max(1, min(200, -(-len(cut_dicts) // num_jobs)))
    chunks = [(cut_dicts[i:i + size], str(feats_dir / f"feats-{i // size:05d}"))
              for i in range(0, len(cut_dicts), size)]
    done, failed = [], []
    with ProcessPoolExecutor(num_jobs) as pool:
        bar = progress_bar(f"fbank {name}", total=len(cut_dicts), unit="cut")
        for chunk_done, chunk_failed in pool.map(_compute_chunk, chunks):
            done += chunk_done
            failed += chunk_failed
            bar.update(len(chunk_done) + len(chunk_failed))
        bar.close()
    return CutSet.from_dicts(done), failed


class FbankFailures(ValueError):
    """``strict=True`` and some cuts of a part failed feature extraction."""


def _failed_list(out_dir: Path, name: str) -> Path:
    return out_dir / f"failed_cuts_{name}.txt"


def _check_failures(name: str, out_path: Path, fail_path: Path, strict: bool) -> None:
    """With ``strict``: raise :class:`FbankFailures` when ``fail_path`` lists cuts."""
    if not strict or not fail_path.is_file():
        return
    n = sum(1 for line in fail_path.read_text(encoding="utf-8").splitlines() if line.strip())
    if n:
        raise FbankFailures(
            f"{name}: {n} cut(s) failed feature extraction (--strict): listed with the reason in "
            f"{fail_path}; the other cuts' features are in {out_path}. Repair or remove their audio "
            f"and delete {out_path} to redo the part, or leave out --strict to go on without them")


def _finished(name: str, out_path: Path, fail_path: Path, strict: bool) -> bool:
    """Whether ``out_path`` is a finished part (then re-checked under ``strict``)."""
    if not out_path.exists():
        return False
    logger.info("%s exists, skipping", out_path)
    _check_failures(name, out_path, fail_path, strict)
    return True


def compute_fbank_for_part(
    manifest_dir: str | Path, out_dir: str | Path, part: str, num_jobs: int = 1,
    speed_perturb: bool = False, prefix: str = "librispeech", strict: bool = False,
) -> Path:
    """Recordings + supervisions of ``part`` -> fbank cut manifest (see module docstring)."""
    from lhotse import CutSet, load_manifest

    manifest_dir, out_dir = Path(manifest_dir), Path(out_dir)
    out_path = out_dir / f"{prefix}_cuts_{part}.jsonl.gz"
    if _finished(part, out_path, _failed_list(out_dir, part), strict):
        return out_path
    paths = [manifest_dir / f"{prefix}_{kind}_{part}.jsonl.gz" for kind in ("recordings", "supervisions")]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(
                f"--parts {part}: {path} not found. --manifest-dir/--parts read LibriSpeech manifests "
                "(prepare-manifests); for any other corpus give its cuts: mvqkd compute-fbank --cuts "
                "CUTS --out-cuts OUT (e.g. the output of mvqkd make-cuts)")
    recs, sups = (load_manifest(path) for path in paths)
    cuts = CutSet.from_manifests(recordings=recs, supervisions=sups)
    if speed_perturb:
        cuts = cuts + cuts.perturb_speed(0.9) + cuts.perturb_speed(1.1)
    return _write_fbank_manifest(cuts, out_dir, out_path, part, num_jobs, strict)


def _write_fbank_manifest(cuts, out_dir: Path, out_path: Path, name: str, num_jobs: int,
                          strict: bool = False) -> Path:
    """Compute fbank for ``cuts`` into ``out_dir/feats_<name>`` and write ``out_path``
    atomically; failures go to ``out_dir/failed_cuts_<name>.txt`` (an older list there is
    removed when none fail), then are an error under ``strict``."""
    cuts_with_feats, failed = compute_fbank(cuts, out_dir, name, num_jobs)
    fail_path = _failed_list(out_dir, name)
    if failed:
        # one line per cut: the reason's own lines (lhotse's tracebacks) joined with " | "
        fail_path.write_text("".join(f"{cid}\t{why.replace(chr(10), ' | ')}\n" for cid, why in failed),
                             encoding="utf-8")
        logger.warning("%s: %d cuts failed feature extraction (skipped; listed in %s)", name, len(failed),
                       fail_path)
    else:
        fail_path.unlink(missing_ok=True)
    tmp = out_path.with_name("tmp." + out_path.name)
    cuts_with_feats.to_file(tmp)
    tmp.replace(out_path)
    logger.info("%s: %d cuts with fbank -> %s", name, len(cuts_with_feats), out_path)
    _check_failures(name, out_path, fail_path, strict)
    return out_path


def compute_fbank_for_cuts(cuts_path: str | Path, out_path: str | Path, num_jobs: int = 1,
                           feats_dir: str | Path | None = None, strict: bool = False) -> Path:
    """Fbank for any cuts manifest -> ``out_path`` (features in ``feats_<name>/`` next to it,
    or under ``feats_dir``). Refuses recordings / supervisions manifests (named); an existing
    ``out_path`` means a finished run (re-running is a no-op)."""
    from mvqkd.data.cuts import load_cuts

    out_path = Path(out_path)
    name = out_path.name.split(".")[0]
    out_dir = Path(feats_dir or out_path.parent)
    if _finished(name, out_path, _failed_list(out_dir, name), strict):
        return out_path
    cuts = load_cuts(cuts_path, "--cuts")
    if not len(cuts):
        raise ValueError(f"--cuts {cuts_path}: no cuts")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    return _write_fbank_manifest(cuts, out_dir, out_path, name, num_jobs, strict)
