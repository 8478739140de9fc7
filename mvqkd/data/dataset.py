"""Training data pipeline: validate and filter cuts, collate batches for the student.

Two steps:

1. :func:`prepare_training_cuts` makes one pass over a CutSet before training. It
   drops (and counts, in the log) cuts with an empty transcript and cuts with more
   BPE tokens than encoder frames, and, while distilling, checks every cut's
   codebook indexes: a cut without indexes is an error naming the cut (or skipped
   with a count when ``skip_missing_indexes``), an index frame count that differs
   from ``conventions.num_frames(duration)`` by more than one frame is an error naming the cut,
   and the ``codebook_indexes_info`` of every cut must agree on the quantizer id and
   the number of codebooks with each other and with the expected values, when given.
2. :class:`KDDataset` turns a CutSet mini-batch (as yielded by a lhotse sampler)
   into padded tensors (see its docstring for the shapes).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch

from mvqkd.data.labels import BadLabelsError, load_checked, missing_label_files
from mvqkd.conventions import (CODEBOOK_INDEXES, FBANK_FRAME_SHIFT, IGNORE_INDEX,
                               TEACHER_EMBEDDINGS, check_teacher_frames, info_field, kd_field,
                               num_frames, subsampled_length)

logger = logging.getLogger(__name__)


def cut_text(cut) -> str:
    """The transcript of a cut: its supervisions' texts joined by spaces (stripped)."""
    return " ".join((s.text or "").strip() for s in cut.supervisions).strip()


def _feature_frames(cut) -> int:
    """fbank frames of a cut: stored, or what its duration gives at the fbank frame shift."""
    return cut.num_frames if cut.has_features else num_frames(cut.duration, FBANK_FRAME_SHIFT)


@dataclass
class FilterStats:
    """Counts from :func:`prepare_training_cuts`."""

    total: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    index_info: dict | None = None

    def summary(self) -> str:
        parts = ", ".join(f"{k}: {v}" for k, v in sorted(self.dropped.items())) or "none"
        return f"kept {self.kept} of {self.total} cuts; dropped {parts}"


def _inferred_info(cut, arr) -> dict:
    """``codebook_indexes_info`` of a cut written without one (icefall's index cuts): the
    codebook count from the array, 256 entries (multi_quantization), quantizer unknown."""
    return {"quantizer_id": None, "num_codebooks": int(arr.shape[1]), "codebook_size": 256,
            "inferred_from": cut.id}


def _check_index_info(cut, info, expected, stats, arr=None):
    """Check ``codebook_indexes_info`` of one cut against the expected/first-seen values.

    Cuts without info (icefall's format) get :func:`_inferred_info`; a manifest that mixes
    cuts with and without info is refused (two sources of labels)."""
    inferred = info is None
    if inferred:
        info = _inferred_info(cut, arr)
        if expected.get("quantizer_id") is not None and stats.index_info is None:
            raise ValueError(
                f"cut {cut.id}: has codebook_indexes without codebook_indexes_info (icefall's "
                "format), so its quantizer cannot be checked against --quantizer-id; drop "
                "--quantizer-id, or record it with mvqkd join-indexes --quantizer")
    if stats.index_info is not None and ("inferred_from" in stats.index_info) != inferred:
        with_info = stats.index_info.get("inferred_from") or cut.id
        raise ValueError(
            f"the cuts mix codebook_indexes with and without codebook_indexes_info (e.g. cut "
            f"{cut.id} and the first cut{'' if inferred else ' ' + with_info}); they come from different "
            "extractions: use one manifest")
    for key in ("quantizer_id", "num_codebooks"):
        want = expected.get(key)
        got = info.get(key)
        if want is not None and str(got) != str(want):
            raise ValueError(
                f"cut {cut.id}: codebook_indexes_info {key}={got!r} does not match the "
                f"configuration ({key}={want!r}). Re-extract the indexes with the right "
                "quantizer or fix --quantizer-id / --num-codebooks."
            )
    if stats.index_info is None:
        stats.index_info = dict(info)
        if inferred:
            logger.warning("cuts carry codebook_indexes without codebook_indexes_info (icefall's "
                           "format, e.g. cut %s): inferred %d codebooks of 256 from the arrays; the "
                           "quantizer is not recorded (mvqkd join-indexes --quantizer records it)",
                           cut.id, info["num_codebooks"])
        # From now on every cut must agree with the first one (mixed ids are refused).
        for key in ("quantizer_id", "num_codebooks"):
            expected.setdefault(key, None)
            if expected[key] is None:
                expected[key] = info.get(key)


def prepare_training_cuts(
    cuts,
    sp,
    kd: str = "none",
    skip_missing_indexes: bool = False,
    quantizer_id: str | None = None,
    num_codebooks: int | None = None,
    name: str = "train",
    skip_bad_indexes: bool = False,
    max_duration: float | None = None,
):
    """Validate and filter ``cuts`` for training; returns ``(eager CutSet, FilterStats)``.

    Args:
        cuts: lhotse CutSet (lazy or eager).
        sp: sentencepiece processor (tokens are counted with ``sp.encode(text)``).
        kd: ``none|mvq|l1|l2|cosine``; ``mvq`` requires ``codebook_indexes`` on every cut,
            ``l1|l2|cosine`` require ``teacher_embeddings``.
        skip_missing_indexes: skip (and count) cuts without the KD field instead of failing.
        skip_bad_indexes: skip (and count) cuts whose label file does not exist instead of
            failing (every file is checked here, before training starts).
        quantizer_id, num_codebooks: expected ``codebook_indexes_info`` values; when None the
            values of the first cut are recorded and every other cut must match them.
        name: used in log lines.
        max_duration: drop (and count, with a warning naming some) cuts longer than this: a
            batch holds at most ``--max-duration`` seconds, and lhotse's sampler would give a
            longer cut a batch of its own, past that budget (an hour-long recording: an
            out-of-memory error in the middle of an epoch).

    Raises:
        ValueError: naming the cut, for a missing KD field (without ``skip_missing_indexes``),
            a frame count off by more than one teacher frame, or an info mismatch.
    """
    from lhotse import CutSet

    fld = kd_field(kd)
    expected = {"quantizer_id": quantizer_id, "num_codebooks": num_codebooks}
    stats = FilterStats()
    kept, too_long = [], []
    for cut in cuts:
        stats.total += 1
        if max_duration is not None and cut.duration > max_duration:
            stats.dropped[f"longer than --max-duration {max_duration:g} s"] += 1
            too_long.append(cut)
            continue
        text = cut_text(cut)
        if not text:
            stats.dropped["empty transcript"] += 1
            continue
        if len(sp.encode(text, out_type=int)) > subsampled_length(_feature_frames(cut)):
            stats.dropped["more tokens than encoder frames"] += 1
            continue
        if fld is not None:
            arr = cut.custom.get(fld) if cut.custom else None
            if arr is None:
                if skip_missing_indexes:
                    stats.dropped[f"no {fld}"] += 1
                    continue
                raise ValueError(
                    f"{name} cut {cut.id} has no '{fld}' (needed by --kd {kd}). Give the manifest "
                    f"that extraction wrote (mvqkd extract / dump-embeddings --all), train without "
                    f"distillation with --kd none, or, if only some cuts lack it, skip them with "
                    f"--skip-missing-indexes"
                )
            check_teacher_frames(cut.id, fld, int(arr.shape[0]), cut.duration)
            if fld == CODEBOOK_INDEXES:
                _check_index_info(cut, cut.custom.get(info_field(fld)), expected, stats, arr)
        kept.append(cut)
    if fld is not None:
        kept = _drop_missing_files(kept, fld, name, skip_bad_indexes, stats)
    stats.kept = len(kept)
    warn_too_long(name, too_long, max_duration)
    logger.info("%s cuts: %s", name, stats.summary())
    if not kept:
        raise ValueError(f"{name} cuts: nothing left after filtering ({stats.summary()})")
    return CutSet.from_cuts(kept), stats


def warn_too_long(name: str, too_long: list, max_duration: float | None) -> None:
    """The warning for the cuts ``too_long`` left out for being longer than a batch (the first
    five named with their durations); nothing when there are none."""
    if too_long:
        more = f" and {len(too_long) - 5} more" if len(too_long) > 5 else ""
        named = ", ".join(f"{c.id} ({c.duration:.1f} s)" for c in too_long[:5])
        logger.warning("%s cuts: %d longer than --max-duration %g s are not used (%s%s): a batch "
                       "holds at most --max-duration seconds; cut long recordings into utterances "
                       "with their transcripts (a Kaldi data dir with a 'segments' file: mvqkd "
                       "make-cuts KALDI_DIR), or raise --max-duration",
                       name, len(too_long), max_duration, named, more)


def _drop_missing_files(cuts: list, fld: str, name: str, skip: bool, stats) -> list:
    """Refuse (or, with ``skip``, drop and count) cuts whose label file is missing."""
    missing = missing_label_files(cuts, fld)
    if not missing:
        return cuts
    listing = "; ".join(f"{p} ({len(ids)} cuts, e.g. {ids[0]})" for p, ids in list(missing.items())[:5])
    if not skip:
        raise BadLabelsError(f"{name} cuts: {len(missing)} '{fld}' file(s) do not exist: {listing}. "
                             "Re-extract them, or pass --skip-bad-indexes to train without those cuts")
    logger.warning("%s cuts: skipping the cuts of %d missing '%s' file(s): %s", name, len(missing),
                   fld, listing)
    gone = {cid for ids in missing.values() for cid in ids}
    stats.dropped[f"{fld} file missing"] += len(gone)
    return [c for c in cuts if c.id not in gone]


def _pad_arrays(arrays, pad_value, dtype):
    """Stack a list of (T_i, D) arrays into (B, max T, D) padded with ``pad_value``, plus lens (B,)."""
    lens = torch.tensor([a.shape[0] for a in arrays], dtype=torch.long)
    out = torch.full(
        (len(arrays), int(lens.max()), arrays[0].shape[1]), pad_value, dtype=dtype
    )
    for i, a in enumerate(arrays):
        out[i, : a.shape[0]] = torch.from_numpy(np.asarray(a)).to(dtype)
    return out, lens


class KDDataset(torch.utils.data.Dataset):
    """Map-style dataset whose "index" is a CutSet mini-batch from a lhotse sampler.

    ``dataset[cuts]`` returns a dict:
        - ``features``: (B, T, 80) float fbank (precomputed, or computed on the fly with
          lhotse's 80-bin ``Fbank`` when ``on_the_fly_feats`` or the cuts have no features);
        - ``feature_lens``: (B,) long;
        - ``tokens``: list of B lists of BPE ids;
        - ``cut_ids``: list of B str;
        - ``codebook_indexes``: (B, T50, N) long padded with -100 (``kd="mvq"``), else None;
        - ``teacher_embeddings``: (B, T50, D) float padded with 0 and ``teacher_lens`` (B,)
          (``kd`` in l1/l2/cosine), else None.
    Cuts are sorted by decreasing duration. Every label array is verified when read
    (:mod:`mvqkd.data.labels`): a bad one raises :class:`BadLabelsError`, or with
    ``skip_bad_labels`` its cut leaves the batch (logged); a batch left empty is ``None``.
    """

    def __init__(self, sp, kd: str = "none", on_the_fly_feats: bool = False,
                 skip_bad_labels: bool = False):
        super().__init__()
        self.sp = sp
        self.kd = kd
        self.field = kd_field(kd)
        self.on_the_fly_feats = on_the_fly_feats
        self.skip_bad_labels = skip_bad_labels
        self._extractor = None

    def _labels(self, cuts) -> tuple[list, list]:
        """(kept cuts, their verified label arrays)."""
        kept, arrays = [], []
        for c in cuts:
            if not c.has_custom(self.field):
                raise ValueError(f"cut {c.id} has no '{self.field}' (needed by --kd {self.kd})")
            try:
                a = load_checked(c, self.field)
                check_teacher_frames(c.id, self.field, int(a.shape[0]), c.duration)
            except (BadLabelsError, ValueError) as e:
                if not self.skip_bad_labels:
                    raise
                logger.warning("skipping cut %s (--skip-bad-indexes): %s", c.id, e)
                continue
            kept.append(c)
            arrays.append(a)
        return kept, arrays

    def _features(self, cuts):
        from lhotse.dataset.collation import collate_features

        if not self.on_the_fly_feats and all(c.has_features for c in cuts):
            return collate_features(cuts)
        from lhotse import CutSet

        from mvqkd.data.features import fbank_extractor, student_cut

        if self._extractor is None:
            from lhotse.dataset.input_strategies import OnTheFlyFeatures

            self._extractor = OnTheFlyFeatures(fbank_extractor())
        feats, lens = self._extractor(CutSet.from_cuts(student_cut(c) for c in cuts))
        return feats, lens.long()

    def __getitem__(self, cuts) -> dict | None:
        cuts = cuts.sort_by_duration(ascending=False)
        arrays = []
        if self.field is not None:
            kept, arrays = self._labels(cuts)
            if not kept:
                return None
            if len(kept) < len(cuts):
                from lhotse import CutSet

                cuts = CutSet.from_cuts(kept)
        features, feature_lens = self._features(cuts)
        batch = {
            "features": features,
            "feature_lens": feature_lens.long(),
            "tokens": [self.sp.encode(cut_text(c), out_type=int) for c in cuts],
            "cut_ids": [c.id for c in cuts],
            CODEBOOK_INDEXES: None,
            TEACHER_EMBEDDINGS: None,
            "teacher_lens": None,
        }
        if self.field is None:
            return batch
        if self.field == CODEBOOK_INDEXES:
            batch[CODEBOOK_INDEXES], _ = _pad_arrays(arrays, IGNORE_INDEX, torch.long)
        else:
            batch[TEACHER_EMBEDDINGS], batch["teacher_lens"] = _pad_arrays(
                arrays, 0.0, torch.float32
            )
        return batch


def embedding_stats(cuts, field: str = TEACHER_EMBEDDINGS) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and standard deviation, both (D,) float32, of the ``field`` arrays
    (T, D) of every cut, over all their frames (see :func:`array_stats`)."""
    from mvqkd.logs import progress

    def arrays():
        for c in progress(cuts, desc=f"{field} statistics", unit="cut"):
            if not c.has_custom(field):
                raise ValueError(f"cut {c.id} has no '{field}' (needed for the KD target statistics)")
            yield c.load_custom(field)

    return array_stats(arrays(), f"'{field}'")


def array_stats(arrays, what: str = "arrays") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and standard deviation (D,) float32 over every frame of the
    (T, D) ``arrays`` (float64 sums). A dimension that never varies gets std 1, so
    standardising it only removes its constant."""
    total = total_sq = None
    frames = 0
    for a in arrays:
        a = np.asarray(a, dtype=np.float64)
        total = a.sum(0) if total is None else total + a.sum(0)
        total_sq = (a * a).sum(0) if total_sq is None else total_sq + (a * a).sum(0)
        frames += a.shape[0]
    if not frames:
        raise ValueError(f"no {what} frames to compute statistics from")
    mean = total / frames
    std = np.sqrt(np.maximum(total_sq / frames - mean * mean, 0.0))
    std[std < 1e-6] = 1.0
    return torch.from_numpy(mean).float(), torch.from_numpy(std).float()
