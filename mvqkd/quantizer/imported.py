"""Quantizers trained with k2-fsa's ``multi_quantization`` (icefall's MVQ recipe).

icefall saves its quantizer as ``torch.save(quantizer.state_dict(), path)``: the keys of
:data:`MQ_KEYS`, no format tag. Its reconstruction of codes ``i`` (N,) is
``sum_m exp(10 * centers_scale) * centers[m, i_m]`` (``scale_speed`` = 10 is a constant of
multi_quantization's ``Quantizer``, not stored), with no input mean or scale. So the
equivalent mvqkd :class:`~mvqkd.quantizer.model.Quantizer` has codebooks
``exp(10 * centers_scale) * centers``, mean 0 and scale 1, and decodes any codes to the same
vectors.

Encoding is a choice. multi_quantization starts from its linear predictor's argmax and
refines the codes (5 passes, as icefall extracts); mvqkd's own encoder runs a beam search
plus ICM over the same codebooks and may pick other codes. Measured on a
multi_quantization quantizer (dim 32, 2 x 256, 500 + 500 training iterations; see
docs/new-corpus.md), mvqkd's beam-4 encoder reconstructed *worse* (relative error 0.218,
beam 16 / 3 ICM passes 0.201) than the package's own (0.198): its codebooks were trained
for its encoder. So the default is ``encoder="multi_quantization"`` (index-identical to
icefall; the package must be installed when encoding), and ``encoder="mvqkd"`` is an
opt-in that needs nothing but mvqkd.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

#: the state_dict keys of multi_quantization.Quantizer
MQ_KEYS = ("to_logits.weight", "to_logits.bias", "centers", "logits_scale", "centers_scale", "id_buf")
#: multi_quantization.Quantizer.scale_speed (a constant of the class, not saved)
MQ_SCALE_SPEED = 10.0
#: multi_quantization.Quantizer.encode's default, which icefall's extraction uses
MQ_REFINE_ITERS = 5
ENCODERS = ("multi_quantization", "mvqkd")
DEFAULT_ENCODER = "multi_quantization"


def is_multi_quantization_state(state) -> bool:
    """True for a dict holding exactly a multi_quantization Quantizer's state_dict."""
    return isinstance(state, dict) and set(state) == set(MQ_KEYS)


def _check(state: dict, source: str) -> tuple[int, int, int]:
    centers = state["centers"]
    if centers.dim() != 3:
        raise ValueError(f"{source}: 'centers' has shape {tuple(centers.shape)}, expected (N, K, D)")
    N, K, D = centers.shape
    if tuple(state["to_logits.weight"].shape) != (N * K, D):
        raise ValueError(f"{source}: 'to_logits.weight' has shape {tuple(state['to_logits.weight'].shape)}, "
                         f"expected ({N * K}, {D}) for centers {tuple(centers.shape)}")
    return N, K, D


def from_multi_quantization(state: dict, source: str = "<state_dict>", encoder: str = DEFAULT_ENCODER):
    """A multi_quantization state_dict -> an mvqkd Quantizer decoding identically.

    Args:
        state: the dict of :data:`MQ_KEYS` (``torch.load(path, weights_only=True)``).
        source: the file name, for messages and the history.
        encoder: "multi_quantization" (the package's own, index-identical to icefall) or "mvqkd"
            (beam search + ICM over the same codebooks).
    """
    from mvqkd.quantizer.model import Quantizer

    if encoder not in ENCODERS:
        raise ValueError(f"encoder must be one of {ENCODERS}, got {encoder!r}")
    N, K, D = _check(state, source)
    centers = state["centers"].detach().float()
    scale = (state["centers_scale"].detach().float() * MQ_SCALE_SPEED).exp()
    mq_id = bytes(state["id_buf"].tolist()).decode("utf-8", errors="replace")
    q = Quantizer(scale * centers, torch.zeros(D), 1.0, id=mq_id, history={
        "imported": {"from": str(source), "format": "multi_quantization state_dict",
                     "centers_scale": float(state["centers_scale"])}})
    if encoder == "multi_quantization":
        q.set_mq_encoder({k: state[k].detach().cpu().clone() for k in MQ_KEYS})
    logger.info("imported multi_quantization quantizer %s from %s: %d x %d, dim %d, encoder %s",
                mq_id, source, N, K, D, encoder)
    return q


def mq_encode(mq_state: dict, x: Tensor, refine_iters: int = MQ_REFINE_ITERS) -> Tensor:
    """Encode (B, D) frames with multi_quantization's own encoder -> (B, N) int64 codes."""
    try:
        from multi_quantization import Quantizer as MqQuantizer
    except ImportError as e:
        raise RuntimeError("this quantizer was imported with encoder 'multi_quantization', which needs "
                           "the package: pip install multi_quantization (or re-import with "
                           "--encoder mvqkd)") from e
    N, K, D = mq_state["centers"].shape
    mq = MqQuantizer(dim=D, codebook_size=K, num_codebooks=N)
    mq.load_state_dict(mq_state)
    mq = mq.to(x.device).eval()
    with torch.no_grad():
        return mq.encode(x.float(), refine_indexes_iters=refine_iters, as_bytes=False).long()
