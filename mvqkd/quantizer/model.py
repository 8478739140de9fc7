"""The additive multi-codebook quantizer and its one-file format.

A frame ``x`` (D,) is normalised to ``z = (x - mean) / scale`` and coded by N
indexes, one per codebook of K entries; the reconstruction is
``x_hat = mean + scale * sum_m C[m, i_m]``. ``scale`` is one global scalar, or (D,) when
each dimension is standardised. Loading needs only this module.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mvqkd.quantizer.search import cross_table, encode_normalized, reconstruct

logger = logging.getLogger(__name__)

FORMAT = "mvqkd-quantizer"
VERSION = 1
ALLOWED_NUM_CODEBOOKS = (1, 2, 4, 8, 16, 32)
MAX_CODEBOOK_SIZE = 32768  # int16 codes


class Quantizer:
    """Additive (direct-sum) quantizer with input normalisation.

    Args:
        codebooks: (N, K, D) float, in normalised space.
        mean: (D,) input mean.
        scale: input scale, a scalar (one global scale) or (D,) (one per dimension).
        beam: beam width used by :meth:`encode`.
        icm_iters: ICM refinement passes used by :meth:`encode`.
        id: random hex id (a new one is drawn when None).
        history: training record (curve, usage, ...), free-form JSON-like dict.
    """

    def __init__(
        self,
        codebooks: Tensor,
        mean: Tensor,
        scale: float | Tensor,
        beam: int = 4,
        icm_iters: int = 1,
        id: str | None = None,
        history: dict | None = None,
    ):
        if codebooks.dim() != 3:
            raise ValueError(f"codebooks must be (N, K, D), got shape {tuple(codebooks.shape)}")
        N, K, D = codebooks.shape
        if K > MAX_CODEBOOK_SIZE:
            raise ValueError(f"codebook_size {K} > {MAX_CODEBOOK_SIZE} is not supported")
        self.codebooks = codebooks.float()
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=codebooks.device).reshape(D)
        scale = torch.as_tensor(scale, dtype=torch.float32, device=codebooks.device)
        if scale.numel() not in (1, D):
            raise ValueError(f"scale must be a scalar or have {D} entries, got shape {tuple(scale.shape)}")
        self.scale = scale.reshape(()) if scale.numel() == 1 else scale.reshape(D)
        self.beam = int(beam)
        self.icm_iters = int(icm_iters)
        self.id = id if id is not None else secrets.token_hex(8)
        self.history = history if history is not None else {}
        self._table: Tensor | None = None
        self.mq_state: dict | None = None  # multi_quantization's encoder (see quantizer.imported)

    def set_mq_encoder(self, mq_state: dict | None) -> None:
        """Encode with multi_quantization's own encoder, from its state_dict (None: mvqkd's)."""
        self.mq_state = mq_state

    @property
    def encoder(self) -> str:
        return "mvqkd" if self.mq_state is None else "multi_quantization"

    # -- properties -------------------------------------------------------------
    @property
    def num_codebooks(self) -> int:
        return self.codebooks.shape[0]

    @property
    def codebook_size(self) -> int:
        return self.codebooks.shape[1]

    @property
    def dim(self) -> int:
        return self.codebooks.shape[2]

    @property
    def device(self) -> torch.device:
        return self.codebooks.device

    @property
    def code_dtype(self) -> torch.dtype:
        return torch.uint8 if self.codebook_size <= 256 else torch.int16

    @property
    def bits_per_frame(self) -> float:
        return self.num_codebooks * float(np.log2(self.codebook_size))

    def to(self, device) -> "Quantizer":
        """Move the tensors to ``device`` (in place); returns self."""
        if self.mq_state is not None:
            self.mq_state = {k: v.to(device) for k, v in self.mq_state.items()}
        self.codebooks = self.codebooks.to(device)
        self.mean = self.mean.to(device)
        self.scale = self.scale.to(device)
        self._table = None
        return self

    def __repr__(self) -> str:
        return (
            f"Quantizer(id={self.id}, dim={self.dim}, num_codebooks={self.num_codebooks}, "
            f"codebook_size={self.codebook_size}, beam={self.beam}, icm_iters={self.icm_iters}, "
            f"encoder={self.encoder})"
        )

    # -- coding -----------------------------------------------------------------
    def _as_input(self, x) -> tuple[Tensor, torch.device]:
        x = torch.as_tensor(x)
        if x.dim() == 0 or x.shape[-1] != self.dim:
            got = x.shape[-1] if x.dim() else "a scalar"
            raise ValueError(
                f"embedding dim {got} does not match the quantizer's dim {self.dim} "
                f"(quantizer {self.id})"
            )
        return x, x.device

    def normalize(self, x: Tensor) -> Tensor:
        """(..., D) -> (..., D) normalised frames (float32, on the quantizer's device)."""
        return (x.to(self.device, torch.float32) - self.mean) / self.scale

    def encode(self, x) -> Tensor:
        """Quantize frames.

        Args:
            x: (..., D) float tensor (or array).
        Returns:
            (..., N) codes, uint8 when K <= 256 else int16, on x's device.
        Raises:
            ValueError: on a dim mismatch or non-finite input.
        """
        x, dev = self._as_input(x)
        lead = x.shape[:-1]
        z = self.normalize(x.reshape(-1, self.dim))
        bad = ~torch.isfinite(z).all(dim=1)
        if bad.any():
            rows = bad.nonzero().flatten()[:5].tolist()
            raise ValueError(
                f"{int(bad.sum())} of {z.shape[0]} frames contain NaN/Inf (first rows: {rows})"
            )
        if self.mq_state is not None:
            from mvqkd.quantizer.imported import mq_encode

            codes = mq_encode(self.mq_state, z)
        else:
            if self._table is None:
                self._table = cross_table(self.codebooks)
            codes = encode_normalized(z, self.codebooks, self.beam, self.icm_iters, self._table)
        return codes.to(self.code_dtype).reshape(*lead, self.num_codebooks).to(dev)

    def decode(self, codes) -> Tensor:
        """Reconstruct frames.

        Args:
            codes: (..., N) integer codes.
        Returns:
            (..., D) float32 on codes' device.
        """
        codes = torch.as_tensor(codes)
        if codes.dim() == 0 or codes.shape[-1] != self.num_codebooks:
            raise ValueError(
                f"codes have {codes.shape[-1] if codes.dim() else 0} columns, "
                f"the quantizer has {self.num_codebooks} codebooks"
            )
        dev = codes.device
        c = codes.to(self.device).long()
        z_hat = reconstruct(c, self.codebooks)
        return (z_hat * self.scale + self.mean).to(dev)

    # -- file format -------------------------------------------------------------
    def state(self) -> dict:
        """The serialisable dict written by :meth:`save`."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "id": self.id,
            "config": {
                "dim": self.dim,
                "num_codebooks": self.num_codebooks,
                "codebook_size": self.codebook_size,
                "beam": self.beam,
                "icm_iters": self.icm_iters,
            },
            "codebooks": self.codebooks.detach().cpu().clone(),
            "mean": self.mean.detach().cpu().clone(),
            "scale": self.scale.detach().cpu().clone(),
            "history": self.history,
            **({"mq_state": {k: v.detach().cpu() for k, v in self.mq_state.items()}}
               if self.mq_state is not None else {}),
        }

    def save(self, path) -> None:
        """Write the quantizer to one ``torch.save`` file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(self.state(), path)


def load_quantizer(path, device="cpu") -> Quantizer:
    """Load a quantizer written by :meth:`Quantizer.save`, or a multi_quantization
    (icefall) quantizer's state_dict, converted on the fly (:mod:`mvqkd.quantizer.imported`).

    Raises:
        FileNotFoundError: when the file is missing.
        ValueError: when the file is not an mvqkd quantizer.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"quantizer file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle / zip errors of all kinds
        raise ValueError(
            f"{path} is not an mvqkd quantizer file (torch.load failed: {type(e).__name__})"
        ) from e
    from mvqkd.quantizer.imported import from_multi_quantization, is_multi_quantization_state

    if is_multi_quantization_state(state):
        logger.info("%s: a multi_quantization (icefall) quantizer; converted on load "
                    "(mvqkd import-quantizer writes the converted file once)", path)
        return from_multi_quantization(state, source=str(path)).to(device)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is neither an mvqkd quantizer file (no '{FORMAT}' format tag) nor a "
                         "multi_quantization state_dict (icefall's quantizer)")
    if state.get("version", 0) > VERSION:
        raise ValueError(f"{path}: quantizer format version {state['version']} is newer than {VERSION}")
    cfg = state["config"]
    q = Quantizer(
        state["codebooks"],
        state["mean"],
        state["scale"],
        beam=cfg.get("beam", 4),
        icm_iters=cfg.get("icm_iters", 1),
        id=state["id"],
        history=state.get("history", {}),
    )
    q.set_mq_encoder(state.get("mq_state"))
    if (q.dim, q.num_codebooks, q.codebook_size) != (
        cfg["dim"],
        cfg["num_codebooks"],
        cfg["codebook_size"],
    ):
        raise ValueError(f"{path}: config {cfg} does not match the stored tensors")
    return q.to(device)
