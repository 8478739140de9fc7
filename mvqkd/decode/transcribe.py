"""``mvqkd transcribe``: audio files -> text with a trained student (icefall's pretrained.py).

The model is a checkpoint file, an experiment folder (its newest epoch), or an ONNX export
folder (``mvqkd export-onnx``: ``encoder.onnx``, ``decoder.onnx``, ``joiner.onnx``,
``tokens.txt``, run with onnxruntime). Audio in any format lhotse reads, any sampling rate
(resampled to 16 kHz) and any number of channels (averaged); 80-bin fbank as in training;
the same searches as ``mvqkd decode``. A file longer than ``max_segment_seconds`` is cut at
its pauses into segments of at most that length (:mod:`mvqkd.decode.segments`), each
recognised on its own: memory stays bounded whatever the length.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from mvqkd.conventions import (
    FBANK_FRAME_SHIFT,
    NUM_MEL_BINS,
    SAMPLE_RATE,
    SUBSAMPLING_FACTOR,
)
from mvqkd.decode.config import MAX_SEGMENT_SECONDS
from mvqkd.decode.segments import check_max_segment_seconds, segment_bounds

logger = logging.getLogger(__name__)


def load_audio(path) -> np.ndarray:
    """Mono 16 kHz float32 samples (S,) of an audio file of any format, rate and channels."""
    from lhotse import Recording

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file not found: {path}")
    try:
        cut = Recording.from_file(path).to_cut()
        if cut.sampling_rate != SAMPLE_RATE:
            cut = cut.resample(SAMPLE_RATE)
        audio = np.asarray(cut.load_audio(), dtype=np.float32)
    except Exception as e:  # decoders raise many kinds
        raise ValueError(f"{path}: cannot read audio ({type(e).__name__}: {e})") from e
    if audio.ndim == 2 and audio.shape[0] > 1:
        return audio.mean(axis=0)
    return audio.reshape(-1)  # a view: no copy of an hour-long file


def fbank(samples: np.ndarray) -> torch.Tensor:
    """(S,) 16 kHz samples -> (T, 80) log-mel fbank (lhotse's ``Fbank``, as in training)."""
    from lhotse import Fbank, FbankConfig

    return torch.from_numpy(Fbank(FbankConfig(num_mel_bins=NUM_MEL_BINS)).extract(samples, SAMPLE_RATE))


class _Identity:
    def __call__(self, x):
        return x


class OnnxTransducer:
    """An ONNX export behind the student's decoding interface (docs/DEVELOPING.md): the
    encoder and decoder outputs come projected, so the joiner's projections are identities."""

    def __init__(self, folder, num_threads: int = 1):
        import onnxruntime as ort

        folder = Path(folder)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = num_threads
        self.sessions = {k: ort.InferenceSession(str(folder / f"{k}.onnx"), opts,
                                                 providers=["CPUExecutionProvider"])
                         for k in ("encoder", "decoder", "joiner")}
        meta = self.sessions["decoder"].get_modelmeta().custom_metadata_map
        self.blank_id, self.vocab_size = 0, int(meta["vocab_size"])
        self.decoder = self
        self.context_size = int(meta["context_size"])
        self.joiner = self
        self.encoder_proj = self.decoder_proj = _Identity()

    def eval(self):
        return self

    def encode(self, features: torch.Tensor, feature_lens: torch.Tensor):
        out, lens = self.sessions["encoder"].run(None, {"x": features.numpy().astype(np.float32),
                                                        "x_lens": feature_lens.numpy().astype(np.int64)})
        return torch.from_numpy(out), torch.from_numpy(lens)

    def __call__(self, a, b=None, need_pad: bool = False, project_input: bool = False):
        if b is None:  # the decoder: (N, context_size) -> (N, 1, joiner_dim), projected
            (out,) = self.sessions["decoder"].run(None, {"y": a.numpy().astype(np.int64)})
            return torch.from_numpy(out).unsqueeze(1)
        (out,) = self.sessions["joiner"].run(None, {"encoder_out": a.numpy(), "decoder_out": b.numpy()})
        return torch.from_numpy(out)


class TokenTable:
    """``tokens.txt`` of an export: ids -> text (sentencepiece pieces joined, ``▁`` -> space)."""

    def __init__(self, path):
        self.pieces = {}
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            piece, _, idx = line.rpartition(" ")
            self.pieces[int(idx)] = piece

    def get_piece_size(self) -> int:
        return len(self.pieces)

    def id_to_piece(self, i: int) -> str:
        return self.pieces[i]

    def decode(self, ids) -> str:
        return "".join(self.pieces[i] for i in ids).replace("\u2581", " ").strip()


def load_recogniser(model_path, bpe_model=None, device="cpu", **selection):
    """(model, tokenizer) from a checkpoint file, an experiment folder or an ONNX folder;
    ``selection`` (``epoch``, ``avg``, ``iteration``, ``use_averaged_model``) chooses the
    checkpoints of an experiment folder (default: its newest)."""
    from mvqkd.data.tokenizer import load_bpe
    from mvqkd.student import checkpoint

    path = Path(model_path)
    if path.is_dir() and (path / "encoder.onnx").is_file():
        if selection:
            raise ValueError(f"{path} is an ONNX export: checkpoint options do not apply to it")
        model = OnnxTransducer(path)
        sp = load_bpe(bpe_model) if bpe_model else TokenTable(path / "tokens.txt")
        return model, sp
    if not path.exists():
        raise FileNotFoundError(f"--model {path}: no such checkpoint file or folder")
    model, _, last = checkpoint.load_model_for_decoding(
        path if path.is_dir() else None, device=device,
        checkpoint=None if path.is_dir() else path, return_checkpoint=True, **selection)
    sp = load_bpe(bpe_model) if bpe_model else checkpoint.checkpoint_bpe(last)
    if sp is None:
        raise ValueError(f"{path}: the checkpoint holds no BPE model; pass --bpe-model")
    return model, sp


def token_times(sp, hyp: list[int], frames: list[int], offset: float = 0.0) -> list[tuple[str, float]]:
    """(piece, start in seconds) per token: ``offset`` + encoder frame x 4 fbank frames x 10 ms,
    as sherpa-onnx reports its offline transducer's ``timestamps``."""
    step = FBANK_FRAME_SHIFT * SUBSAMPLING_FACTOR
    return [(sp.id_to_piece(int(y)), round(offset + t * step, 3)) for y, t in zip(hyp, frames)]


@torch.no_grad()
def transcribe(model, sp, files, method: str = "greedy_search", device="cpu", timestamps: bool = False,
               max_segment_seconds: float = MAX_SEGMENT_SECONDS, **search_opts):
    """Yield ``(file, text)`` for every audio file, one at a time; with ``timestamps`` (greedy
    search only) ``(file, text, [(piece, seconds), ...])``. A file longer than
    ``max_segment_seconds`` is recognised segment by segment (:func:`segment_bounds`): the
    segments' texts joined by a space, their token times counted from the file's start."""
    from mvqkd.decode.search import greedy_search, search

    if timestamps and method != "greedy_search":
        raise ValueError(f"timestamps come from greedy_search only, not {method}")
    check_max_segment_seconds(max_segment_seconds)
    for f in files:
        samples = load_audio(f)
        bounds = segment_bounds(samples, max_segment_seconds)
        if len(bounds) > 1:
            logger.info("%s: %.1f s, recognised in %d segments cut at its pauses, each at most %g s "
                        "(--max-segment-seconds)", f, len(samples) / SAMPLE_RATE, len(bounds),
                        max_segment_seconds)
        texts, times = [], []
        for start, end in bounds:
            feats = fbank(samples[start:end]).unsqueeze(0).to(device)
            enc, lens = model.encode(feats, torch.tensor([feats.shape[1]], device=device))
            if timestamps:
                (hyp,), (frames,) = greedy_search(model, enc, lens, return_frames=True)
                times += token_times(sp, hyp, frames, offset=start / SAMPLE_RATE)
            else:
                (hyp,) = search(method, model, enc, lens, **search_opts)
            texts.append(sp.decode(hyp))
        text = " ".join(t for t in texts if t)
        yield (str(f), text, times) if timestamps else (str(f), text)
