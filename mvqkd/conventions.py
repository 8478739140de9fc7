"""The ground floor: every rate, frame rule, field name and shared constant of mvqkd.

Standard library only (numpy is imported inside :func:`fit_frames` alone), so that any
module, the CLI parser included, can import it. Nothing else in the package restates
these values.

Rates and frames::

    audio              16 kHz mono                                  SAMPLE_RATE
    fbank (student)    100 Hz, 80 bins                              FBANK_FRAME_SHIFT, NUM_MEL_BINS
    teacher            50 Hz (wav2vec2-style front-end, stride 320) TEACHER_FRAME_SHIFT
    student encoder    25 Hz after 4x subsampling                   SUBSAMPLING_FACTOR
    teacher / student  2 teacher frames per student frame           TEACHER_FRAMES_PER_STUDENT_FRAME

A cut of ``duration`` seconds carries ``num_frames(duration)`` teacher frames (index /
embedding arrays); the student's encoder has ``subsampled_length(fbank frames)`` frames.
"""

from __future__ import annotations

SAMPLE_RATE = 16000
#: teacher frames: 20 ms (the wav2vec2 / HuBERT / WavLM conv front-end at 16 kHz)
TEACHER_FRAME_SHIFT = 0.02
#: the receptive field of that front-end, in samples (shorter audio gives no frame), and its
#: stride: frame t covers samples [t * 320, t * 320 + 400)
TEACHER_MIN_SAMPLES = 400
TEACHER_STRIDE = round(TEACHER_FRAME_SHIFT * SAMPLE_RATE)
#: student features: 80-bin log-mel fbank, 10 ms shift, 25 ms window
FBANK_FRAME_SHIFT = 0.01
NUM_MEL_BINS = 80
#: the student's Conv2d front-end: 100 Hz fbank -> 25 Hz encoder frames
SUBSAMPLING_FACTOR = 4
#: student frame t pairs with teacher frames 2t and 2t + 1
TEACHER_FRAMES_PER_STUDENT_FRAME = round(FBANK_FRAME_SHIFT * SUBSAMPLING_FACTOR / TEACHER_FRAME_SHIFT)
#: a teacher output may differ from num_frames(duration) by this much; more is an error
MAX_FRAME_MISMATCH = 2

#: the label padding / ignore value of every cross-entropy (PyTorch's default)
IGNORE_INDEX = -100

#: cut custom fields written by extraction (docs/FORMATS.md); each has a ``<field>_info`` dict
CODEBOOK_INDEXES = "codebook_indexes"
TEACHER_EMBEDDINGS = "teacher_embeddings"
INFO_SUFFIX = "_info"

#: how a teacher runs utterances longer than ``--chunk-seconds`` (:mod:`mvqkd.teacher.chunking`);
#: the first is the default
CHUNK_MODES = ("windows", "front-end")

#: --kd modes: none (plain transducer), mvq (codebook indexes), float regression modes
FLOAT_KD_MODES = ("l1", "l2", "cosine")
KD_MODES = ("none", "mvq", *FLOAT_KD_MODES)
#: MVQ-KD codebook heads (mvqkd train --codebook-head): the paper's free linear head, or one
#: that scores the quantizer's codewords (all but "linear" read --quantizer)
CODEBOOK_HEADS = ("linear", "geometry", "residual")
#: how MVQ-KD weighs its codebooks' cross-entropies (mvqkd train --codebook-weighting): uniform, or
#: by the energy of each codebook's codewords (geometry / residual heads), raised to
#: --codebook-weighting-power (1: the energy itself)
CODEBOOK_WEIGHTINGS = ("uniform", "energy")

#: the transducer blank and the icefall BPE conventions (<blk>=0, <sos/eos>=1, <unk>=2)
BLANK_ID = 0
BLANK_PIECE = "<blk>"


def info_field(field: str) -> str:
    """``codebook_indexes`` -> ``codebook_indexes_info``."""
    return field + INFO_SUFFIX


def checksum_field(field: str) -> str:
    """``codebook_indexes`` -> ``codebook_indexes_crc32``: the cut field holding the CRC-32 of
    the stored array's bytes, written at extraction and verified whenever training reads it."""
    return field + "_crc32"


def array_checksum(array) -> int:
    """CRC-32 of an array's C-ordered bytes (what :func:`checksum_field` stores)."""
    import zlib

    import numpy as np

    return zlib.crc32(np.ascontiguousarray(array).tobytes())


def kd_field(kd: str) -> str | None:
    """The cut field a ``--kd`` mode reads: indexes for ``mvq``, float embeddings for
    ``l1|l2|cosine``, nothing for ``none``."""
    if kd not in KD_MODES:
        raise ValueError(f"--kd must be one of {KD_MODES}, got {kd!r}")
    if kd == "none":
        return None
    return CODEBOOK_INDEXES if kd == "mvq" else TEACHER_EMBEDDINGS


def num_frames(duration: float, frame_shift: float = TEACHER_FRAME_SHIFT,
               sample_rate: int = SAMPLE_RATE) -> int:
    """Frames of ``frame_shift`` seconds in ``duration`` seconds: ``round(duration / shift)``
    computed on samples, halves rounded up (lhotse's ``compute_num_frames``)."""
    num_samples = round(duration * sample_rate)
    hop = round(frame_shift * sample_rate)
    return int((num_samples + hop // 2) // hop)


def subsampled_length(num_feature_frames: int) -> int:
    """Encoder frames for ``num_feature_frames`` fbank frames: ``ceil(T / 4)``."""
    return (int(num_feature_frames) + SUBSAMPLING_FACTOR - 1) // SUBSAMPLING_FACTOR


def fit_frames(x, target: int):
    """Pad (repeat the last frame) or trim ``x`` (T', ...) at the end to ``target`` frames.

    A wav2vec2-style front-end yields ``floor((S - 400) / 320) + 1`` frames for S samples,
    usually one fewer than ``num_frames(duration)``.

    Raises:
        ValueError: when ``|T' - target| > MAX_FRAME_MISMATCH`` or ``x`` is empty.
    """
    import numpy as np

    have = x.shape[0]
    if have == 0 or abs(have - target) > MAX_FRAME_MISMATCH:
        raise ValueError(
            f"teacher gave {have} frames but the cut's duration needs {target} "
            f"(more than {MAX_FRAME_MISMATCH} apart)"
        )
    if have >= target:
        return x[:target]
    return np.concatenate([x, np.repeat(x[-1:], target - have, axis=0)], axis=0)


def check_teacher_frames(cut_id: str, field: str, have: int, duration: float) -> None:
    """Raise (naming the cut) unless ``have`` teacher frames is within one frame of
    ``num_frames(duration)``."""
    want = num_frames(duration)
    if abs(have - want) > 1:
        raise ValueError(
            f"cut {cut_id}: '{field}' has {have} frames but duration {duration:.3f}s "
            f"needs round(duration/{TEACHER_FRAME_SHIFT}) = {want} (off by more than one frame)"
        )
