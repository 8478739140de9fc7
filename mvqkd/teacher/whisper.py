"""The Whisper encoder as a teacher (the teacher the MVQ-KD authors moved to).

Whisper reads log-mel features (``WhisperFeatureExtractor``: 10 ms hop, every input padded
or cut to 30 s = 3000 frames), and its encoder halves the frame rate with a stride-2
convolution: 50 Hz, the frame rate of every other teacher, so the frame rule of
:mod:`mvqkd.conventions` applies unchanged. An utterance of ``S`` samples owns the first
``ceil((S // 160) / 2)`` encoder frames; the rest of the 1,500 frames (the padding) are
dropped. Utterances longer than 30 s go through the chunked path (windows of at most
29.8 s with overlapping context, :meth:`Teacher.extract_chunked`).

Layer ``L`` (1-based) is the output of encoder block ``L``, without the encoder's final
layer norm (which transformers applies after the last block), as for the pre-norm SSL
teachers; ``0`` is the input of the first block (convolutions + positions). The waveform
is not normalised (the feature extractor normalises the log-mel itself).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from mvqkd.conventions import SAMPLE_RATE, TEACHER_FRAME_SHIFT
from mvqkd.teacher.model import Teacher, TeacherInfo

logger = logging.getLogger(__name__)

MEL_HOP = 160
#: the longest window the encoder takes (its 1,500 positions = 30 s), less a margin for the
#: receptive field of a chunk's last frame
MAX_CHUNK_FRAMES = 1490


class WhisperTeacher(Teacher):
    """A frozen Whisper encoder. ``model`` is transformers' ``WhisperEncoder``."""

    def __init__(self, model, feature_extractor, info: TeacherInfo, device, dtype):
        super().__init__(model, info, device, dtype)
        self.fe = feature_extractor
        self.set_chunking(MAX_CHUNK_FRAMES * TEACHER_FRAME_SHIFT, 5.0)

    def set_chunking(self, chunk_seconds, overlap_seconds: float = 5.0, mode: str = "windows") -> None:
        """As :meth:`Teacher.set_chunking`, at most 29.8 s: longer inputs do not fit Whisper
        (only ``windows`` chunking)."""
        limit = MAX_CHUNK_FRAMES * TEACHER_FRAME_SHIFT
        if chunk_seconds is None or chunk_seconds > limit:
            if chunk_seconds is not None:
                logger.info("Whisper teacher: chunks of %.1f s instead of %.1f s (30 s input limit)",
                            limit, chunk_seconds)
            chunk_seconds = limit
        super().set_chunking(chunk_seconds, overlap_seconds, mode)

    def num_frames(self, num_samples):
        n = torch.as_tensor(num_samples)
        out = ((n // MEL_HOP) + 1) // 2
        return int(out) if out.dim() == 0 else out

    def _layer_stack(self):
        return self.model, True  # pre-norm: the final layer_norm follows the last block

    def batches(self, lengths, max_samples):
        # every input is padded to 30 s: count that, not the utterance lengths
        per = 30 * SAMPLE_RATE
        return super().batches([max(n, per) for n in lengths], max(max_samples, per))

    def _prepare(self, wav) -> torch.Tensor:
        t = torch.as_tensor(np.asarray(wav), dtype=torch.float32).reshape(-1)
        if t.numel() < MEL_HOP * 2:
            raise ValueError(f"utterance of {t.numel()} samples is shorter than one Whisper frame")
        return t

    @torch.inference_mode()
    def _forward(self, tensors, layer: int):
        for t in tensors:
            if self.num_frames(t.numel()) > MAX_CHUNK_FRAMES + 10:
                raise ValueError(f"utterance of {t.numel() / SAMPLE_RATE:.1f} s is longer than Whisper's "
                                 "30 s input; extract it in chunks (--chunk-seconds)")
        feats = self.fe([t.numpy() for t in tensors], sampling_rate=SAMPLE_RATE, return_tensors="pt")
        x = feats.input_features.to(self.device, self.dtype)  # (B, n_mels, 3000)
        with self._running(layer):
            hidden = self.model(x).last_hidden_state.float().cpu()  # (B, 1500, D)
        frames = self.num_frames(torch.tensor([t.numel() for t in tensors]))
        return [hidden[b, : int(frames[b])].clone() for b in range(len(tensors))]


def load_whisper_teacher(path: Path, config, device, dtype) -> WhisperTeacher:
    """The encoder of a Whisper model folder (``save_pretrained``; its
    ``preprocessor_config.json`` gives the log-mel settings)."""
    from transformers import WhisperFeatureExtractor, WhisperModel

    if not (path / "preprocessor_config.json").is_file():
        raise FileNotFoundError(f"Whisper teacher {path} has no preprocessor_config.json (its "
                                "WhisperFeatureExtractor settings: number of mel bins, 30 s window)")
    fe = WhisperFeatureExtractor.from_pretrained(str(path))
    if fe.sampling_rate != SAMPLE_RATE or fe.hop_length != MEL_HOP:
        raise ValueError(f"{path}: Whisper features at {fe.sampling_rate} Hz / hop {fe.hop_length}, "
                         f"expected {SAMPLE_RATE} / {MEL_HOP}")
    encoder = WhisperModel.from_pretrained(str(path), dtype=dtype).get_encoder()
    encoder.eval().to(device)
    for p in encoder.parameters():
        p.requires_grad_(False)
    info = TeacherInfo(name=path.resolve().name, model_type="whisper", num_layers=config.encoder_layers,
                       dim=config.d_model, group_norm=False, do_normalize=False)
    logger.info("loaded Whisper teacher %s (encoder: %d layers, dim %d, %d mel bins) on %s/%s", info.name,
                info.num_layers, info.dim, config.num_mel_bins, device, dtype)
    return WhisperTeacher(encoder, fe, info, device, dtype)
