"""Load a speech teacher (HuBERT / WavLM / wav2vec2 / data2vec-audio; the Whisper encoder
through :mod:`mvqkd.teacher.whisper`) and extract one layer.

Layer numbering (1-based, as in icefall): ``layer=L`` returns the output of transformer
layer ``L`` (``hidden_states[L]`` of transformers), ``1 <= L <= num_layers``.
``layer=0`` returns the input to the first transformer layer: the CNN front-end
output after the feature projection and the positional convolution. For
stable-layer-norm (large-style) checkpoints no layer includes the encoder's final
layer norm (as transformers' ``hidden_states`` and fairseq's ``output_layer`` /
icefall). Only the first ``L`` layers are run.

Batching: each utterance is normalised on its own (``do_normalize`` from the
checkpoint's ``preprocessor_config.json``), then padded with zeros. For layer-norm
front-ends (``feat_extract_norm == "layer"``) padded batches get an attention mask
and give the same frames as one utterance at a time (up to float rounding). For
group-norm front-ends (``feat_extract_norm == "group"``, base-style checkpoints) the
group norm of the first conv layer normalises over time, so padding changes every
frame: those teachers only batch utterances with exactly the same number of
samples (length bucketing, no padding); every other utterance runs alone.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from mvqkd.conventions import CHUNK_MODES, SAMPLE_RATE, TEACHER_FRAME_SHIFT, TEACHER_MIN_SAMPLES
from mvqkd.teacher import chunking

logger = logging.getLogger(__name__)

_CTC_ARCH_SUFFIXES = ("ForCTC", "ForSequenceClassification", "ForPreTraining", "ForXVector")
#: transformers model types with a 50 Hz convolutional front-end on the raw waveform
SSL_MODEL_TYPES = ("hubert", "wavlm", "wav2vec2", "data2vec-audio")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> the first CUDA device when torch sees one, else CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """``"auto"`` -> float32 on every device.

    Half precision is opt-in (``"bfloat16"`` / ``"float16"``): the additive quantizer's codes
    are a fragile function of the embedding, and bfloat16 teacher outputs (relative squared
    difference 6e-5 on the demo teacher) changed 6% of the codes (docs/benchmarks.md)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.float32
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]


def tf32_switches() -> list[tuple[object, str, object]]:
    """(holder, attribute, IEEE value) of this torch's TensorFloat-32 switches for cuDNN
    convolutions and CUDA matrix products: the ``fp32_precision`` properties of torch >= 2.9
    (reading the legacy ``allow_tf32`` flags there raises once the new ones were set apart),
    else the legacy ``allow_tf32`` flags."""
    b = torch.backends
    if hasattr(getattr(b.cudnn, "conv", None), "fp32_precision"):
        return [(b.cudnn.conv, "fp32_precision", "ieee"), (b.cuda.matmul, "fp32_precision", "ieee")]
    return [(b.cudnn, "allow_tf32", False), (b.cuda.matmul, "allow_tf32", False)]


def tf32_state() -> tuple:
    """The current values of :func:`tf32_switches`, in their order."""
    return tuple(getattr(holder, name) for holder, name, _ in tf32_switches())


@contextlib.contextmanager
def tf32_switched(values: Sequence):
    """Inside: :func:`tf32_switches` set to ``values`` (in their order); restored after, also
    when the body raises."""
    switches, saved = tf32_switches(), tf32_state()
    try:
        for (holder, name, _), value in zip(switches, values):
            setattr(holder, name, value)
        yield
    finally:
        for (holder, name, _), value in zip(switches, saved):
            setattr(holder, name, value)


@contextlib.contextmanager
def ieee_float32(dtype: torch.dtype):
    """Inside: a float32 model runs in IEEE float32 on CUDA too. torch lets cuDNN convolutions
    use TensorFloat-32 by default (a 10-bit mantissa, on Ampere and newer GPUs), which for a
    HuBERT-style teacher is the whole CNN front-end and the positional convolution: a change of
    the embeddings that the fragile additive codes feel (docs/benchmarks.md). Turns TF32 off
    for cuDNN convolutions and CUDA matrix products (:func:`tf32_switches`) and restores the
    previous settings after; the switches do nothing on CPU, and half-precision teachers
    (``dtype`` not float32) are left as they are."""
    if dtype != torch.float32:
        yield
        return
    with tf32_switched([ieee for _, _, ieee in tf32_switches()]):
        yield


def normalize_utterance(wav: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance of one utterance ``(S,)``, as transformers'
    ``Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm`` (variance + 1e-7)."""
    wav = wav.float()
    return (wav - wav.mean()) / torch.sqrt(wav.var(unbiased=False) + 1e-7)


@dataclass
class TeacherInfo:
    name: str
    model_type: str
    num_layers: int
    dim: int
    group_norm: bool
    do_normalize: bool


class Teacher:
    """A frozen SSL encoder. Use :func:`load_teacher` to build one."""

    def __init__(self, model, info: TeacherInfo, device: torch.device, dtype: torch.dtype):
        self.model = model
        self.info = info
        self.device = device
        self.dtype = dtype
        #: (chunk_frames, overlap_frames, mode) for long utterances (:meth:`set_chunking`), or None
        self.chunk: tuple[int, int, str] | None = None

    def set_chunking(self, chunk_seconds: float | None, overlap_seconds: float = 5.0,
                     mode: str = "windows") -> None:
        """Utterances longer than ``chunk_seconds`` go through :meth:`extract_chunked` in
        ``mode`` (:mod:`mvqkd.teacher.chunking`: ``windows`` with ``overlap_seconds`` of
        context on each side, or ``front-end``); None: whole utterances, memory grows with
        their length."""
        if chunk_seconds is None:
            self.chunk = None
            return
        check_chunk_mode(mode, self.info.model_type)
        fps = round(1 / TEACHER_FRAME_SHIFT)
        self.chunk = (int(chunk_seconds * fps), int(overlap_seconds * fps), mode)
        if mode == "windows" and self.chunk[0] - 2 * self.chunk[1] < 1:
            raise ValueError(f"--chunk-seconds {chunk_seconds} must exceed twice --chunk-overlap "
                             f"{overlap_seconds}")

    @property
    def dim(self) -> int:
        return self.info.dim

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def num_layers(self) -> int:
        return self.info.num_layers

    def num_frames(self, num_samples: int | torch.Tensor):
        """Teacher frames produced for ``num_samples`` input samples."""
        out = self.model._get_feat_extract_output_lengths(torch.as_tensor(num_samples))
        return int(out) if out.dim() == 0 else out

    def check_layer(self, layer: int) -> None:
        if not 0 <= layer <= self.num_layers:
            raise ValueError(
                f"--layer {layer} is out of range for teacher {self.name}: "
                f"it has {self.num_layers} transformer layers (valid: 0..{self.num_layers})"
            )

    def _layer_stack(self):
        """The module holding the transformer ``layers`` (and the final ``layer_norm``), and
        whether that norm follows the last layer (pre-norm encoders) and must be skipped."""
        enc = self.model.encoder
        return enc, "StableLayerNorm" in type(enc).__name__

    @contextlib.contextmanager
    def _truncated(self, layer: int):
        """Run only the first ``layer`` transformer layers, so that ``last_hidden_state``
        is transformers' ``hidden_states[layer]`` (no final norm of stable-layer-norm
        encoders, as fairseq's ``extract_features(output_layer=layer)``)."""
        enc, stable = self._layer_stack()
        full_layers, full_norm = enc.layers, getattr(enc, "layer_norm", None)
        try:
            enc.layers = full_layers[:layer]
            if stable:
                enc.layer_norm = torch.nn.Identity()
            yield
        finally:
            enc.layers = full_layers
            if full_norm is not None:
                enc.layer_norm = full_norm

    @contextlib.contextmanager
    def _running(self, layer: int):
        """Around the model's forward to ``layer``: the encoder truncated there
        (:meth:`_truncated`), in IEEE float32 when the teacher is float32 (:func:`ieee_float32`)."""
        with self._truncated(layer), ieee_float32(self.dtype):
            yield

    def batches(self, lengths: Sequence[int], max_samples: int) -> list[list[int]]:
        """Group utterance indices into batches of at most ``max_samples`` total samples
        (an utterance longer than that runs alone). Sorted by length to limit padding;
        group-norm teachers only group utterances of identical length."""
        order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
        out: list[list[int]] = []
        cur: list[int] = []
        for i in order:
            longest = max([lengths[j] for j in cur] + [lengths[i]])
            same = not cur or lengths[cur[0]] == lengths[i]
            if cur and (longest * (len(cur) + 1) > max_samples or (self.info.group_norm and not same)):
                out.append(cur)
                cur = []
            cur.append(i)
        if cur:
            out.append(cur)
        return out

    @torch.inference_mode()
    def extract(self, wavs: Sequence[np.ndarray | torch.Tensor], layer: int) -> list[torch.Tensor]:
        """Embeddings of one layer for a batch of mono 16 kHz utterances.

        Args:
            wavs: B float arrays ``(S_b,)``, each at least :data:`mvqkd.conventions.TEACHER_MIN_SAMPLES` long.
            layer: 0..num_layers (see the module docstring).
        Returns:
            B float32 CPU tensors ``(T_b, D)``, ``T_b = num_frames(S_b)``.
        """
        self.check_layer(layer)
        if not wavs:
            return []
        if self.info.group_norm and len({len(w) for w in wavs}) > 1:
            raise ValueError("a group-norm teacher only batches utterances of equal length")
        return self._forward([self._prepare(w) for w in wavs], layer)

    def _prepare(self, wav) -> torch.Tensor:
        """A checked (S,) float32 waveform, normalised when the checkpoint asks for it."""
        t = torch.as_tensor(np.asarray(wav), dtype=torch.float32).reshape(-1)
        if t.numel() < TEACHER_MIN_SAMPLES:
            raise ValueError(f"utterance of {t.numel()} samples < {TEACHER_MIN_SAMPLES} (receptive field)")
        return normalize_utterance(t) if self.info.do_normalize else t

    @torch.inference_mode()
    def _forward(self, tensors: list[torch.Tensor], layer: int) -> list[torch.Tensor]:
        """Prepared waveforms -> B float32 CPU tensors (T_b, D)."""
        lengths = torch.tensor([t.numel() for t in tensors])
        x = torch.nn.utils.rnn.pad_sequence(tensors, batch_first=True)
        mask = None
        if (lengths != lengths.max()).any():
            mask = (torch.arange(x.shape[1])[None, :] < lengths[:, None]).long().to(self.device)
        x = x.to(self.device, self.dtype)
        with self._running(layer):
            out = self.model(x, attention_mask=mask)
        hidden = out.last_hidden_state.float().cpu()  # (B, T, D)
        frames = self.num_frames(lengths)
        return [hidden[b, : int(frames[b])].clone() for b in range(len(tensors))]

    @torch.inference_mode()
    def extract_chunked(self, wav, layer: int, chunk_frames: int, overlap_frames: int,
                        mode: str = "windows") -> torch.Tensor:
        """Embeddings (T, D) of one long utterance in bounded memory (see
        :mod:`mvqkd.teacher.chunking`): ``windows`` of at most ``chunk_frames`` frames that
        overlap by ``overlap_frames`` on each side, only their centres kept; or the
        ``front-end`` in chunks of ``chunk_frames`` frames and the transformer over the whole
        utterance. Chunks start on frame boundaries (multiples of the 320-sample stride), so
        the CNN front-end sees exactly the samples it would see on the whole file; the
        waveform is normalised once, as a whole, and so is a group-norm front-end's first
        convolution (its statistics from a first pass over the whole file). Utterances of
        at most ``chunk_frames`` frames run in one piece."""
        self.check_layer(layer)
        check_chunk_mode(mode, self.info.model_type)
        x = self._prepare(wav)
        total = self.num_frames(x.numel())
        if total <= chunk_frames:
            return self._forward([x], layer)[0]
        group_norm = (chunking.whole_file_group_norm(self.model.feature_extractor, x) if self.info.group_norm
                      else contextlib.nullcontext())
        with group_norm:
            if mode == "windows":
                return chunking.windows(lambda piece: self._forward([piece], layer)[0], x, total,
                                        chunk_frames, overlap_frames)
            with chunking.chunked_front_end(self.model, chunk_frames, total):
                return self._forward([x], layer)[0]

    def extract_many(
        self, wavs: Sequence[np.ndarray], layer: int, max_samples: int,
        chunk: tuple[int, int, str] | None = None,
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield ``(index, (T, D) tensor)`` for every utterance, batching by total samples.
        With ``chunk = (chunk_frames, overlap_frames, mode)``, utterances longer than
        ``chunk_frames`` frames go through :meth:`extract_chunked` one at a time."""
        chunk = chunk or self.chunk
        long = set()
        if chunk is not None:
            long = {i for i, w in enumerate(wavs) if self.num_frames(len(w)) > chunk[0]}
            for i in sorted(long):
                yield i, self.extract_chunked(wavs[i], layer, *chunk)
        rest = [i for i in range(len(wavs)) if i not in long]
        for batch in self.batches([len(wavs[i]) for i in rest], max_samples):
            ids = [rest[j] for j in batch]
            for i, emb in zip(ids, self.extract([wavs[i] for i in ids], layer)):
                yield i, emb


def check_chunk_mode(mode: str, model_type: str) -> None:
    """Refuse a ``--chunk-mode`` this teacher cannot run (with what to use instead)."""
    if mode not in CHUNK_MODES:
        raise ValueError(f"--chunk-mode {mode!r}: choose one of {', '.join(CHUNK_MODES)}")
    if mode == "front-end" and model_type in chunking.QUADRATIC_ATTENTION + ("whisper",):
        why = ("its input is at most 30 s" if model_type == "whisper" else
               "its relative position bias is a (heads, T, T) tensor, quadratic in the length")
        raise ValueError(f"--chunk-mode front-end cannot bound a {model_type} teacher's memory ({why}): "
                         "use --chunk-mode windows")


def read_normalize_flag(path: Path, group_norm: bool) -> bool:
    cfg = path / "preprocessor_config.json"
    if cfg.is_file():
        from transformers import Wav2Vec2FeatureExtractor

        fe = Wav2Vec2FeatureExtractor.from_pretrained(str(path))
        if fe.sampling_rate != SAMPLE_RATE:
            raise ValueError(f"{cfg}: sampling_rate {fe.sampling_rate}, expected {SAMPLE_RATE}")
        return bool(fe.do_normalize)
    # fairseq convention: layer-norm (large) models normalise the waveform, base ones do not
    logger.warning(
        "%s has no preprocessor_config.json; assuming do_normalize=%s (fairseq convention)",
        path, not group_norm,
    )
    return not group_norm


def teacher_hash(path) -> str:
    """The content identity of a teacher folder: BLAKE2b over ``config.json`` and every weight
    file (``*.safetensors``, ``*.bin``, ``*.pt``), 16 hex digits. A random-init and a trained
    teacher of the same name differ here."""
    import hashlib

    path = Path(path)
    files = [path / "config.json"] + sorted(
        p for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".pt") and p.is_file()
        and p.name != "train_state.pt")
    h = hashlib.blake2b(digest_size=8)
    for f in files:
        h.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()


def check_teacher(path, layer: int, device="auto", dtype="auto") -> str:
    """Load a teacher and run 1 s of noise through ``layer``; returns a one-line summary.

    Raises:
        OSError / ValueError: unloadable teacher, layer out of range, NaN/Inf output.
    """
    teacher = load_teacher(path, device=device, dtype=dtype)
    teacher.check_layer(layer)
    wav = np.random.default_rng(0).standard_normal(SAMPLE_RATE).astype(np.float32) * 0.1
    emb = teacher.extract([wav], layer)[0]
    if not torch.isfinite(emb).all():
        raise ValueError(f"teacher {path} gives NaN/Inf at layer {layer} on 1 s of noise")
    info = teacher.info
    return (f"teacher {teacher.name}: {info.model_type}, {teacher.num_layers} layers, dim {teacher.dim}, "
            f"{'group' if info.group_norm else 'layer'}-norm front-end, do_normalize={info.do_normalize}; "
            f"layer {layer}: 1 s -> {tuple(emb.shape)}")


def load_teacher(
    path: str | Path, device: str | torch.device = "auto", dtype: str | torch.dtype = "auto"
) -> Teacher:
    """Load a HuBERT / WavLM / wav2vec2 / data2vec-audio checkpoint or a Whisper model
    (``save_pretrained`` layout) from a local directory. Checkpoints with a head
    (``*ForCTC`` etc.) load their encoder only; Whisper loads its encoder only.

    Args:
        path: directory with ``config.json``, weights and, ideally, ``preprocessor_config.json``.
        device: ``"auto"``, ``"cpu"``, ``"cuda:1"``...
        dtype: ``"auto"`` (float32), ``"float32"``, ``"float16"``, ``"bfloat16"``.
    """
    from transformers import AutoConfig, AutoModel

    from mvqkd.logs import quiet_transformers

    quiet_transformers()
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"teacher directory {path} has no config.json")
    config = AutoConfig.from_pretrained(str(path))
    if config.model_type == "whisper":
        from mvqkd.teacher.whisper import load_whisper_teacher

        return load_whisper_teacher(path, config, resolve_device(device), resolve_dtype(dtype, None))
    if config.model_type not in SSL_MODEL_TYPES:
        raise ValueError(
            f"teacher {path}: model_type {config.model_type!r} is not supported "
            f"({', '.join(SSL_MODEL_TYPES)}, whisper)"
        )
    archs = getattr(config, "architectures", None) or []
    if any(a.endswith(_CTC_ARCH_SUFFIXES) for a in archs):
        logger.info("teacher %s is a %s checkpoint: using the encoder inside", path, archs[0])
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    model = AutoModel.from_pretrained(str(path), dtype=dt)
    model.eval().to(dev)
    for p in model.parameters():
        p.requires_grad_(False)
    group_norm = getattr(config, "feat_extract_norm", "layer") == "group"  # data2vec-audio: layer norm
    info = TeacherInfo(
        name=path.resolve().name,
        model_type=config.model_type,
        num_layers=config.num_hidden_layers,
        dim=config.hidden_size,
        group_norm=group_norm,
        do_normalize=read_normalize_flag(path, group_norm),
    )
    logger.info(
        "loaded teacher %s (%s, %d layers, dim %d, %s-norm front-end, do_normalize=%s) on %s/%s",
        info.name, info.model_type, info.num_layers, info.dim,
        "group" if group_norm else "layer", info.do_normalize, dev, dt,
    )
    return Teacher(model, info, dev, dt)
