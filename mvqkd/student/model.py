"""The transducer student: Conformer encoder, stateless predictor, joiner, distillation heads.

``loss = transducer + ctc_loss_scale * ctc + codebook_loss_scale * codebook + kd_loss_scale * kd``

- ``rnnt``: :func:`mvqkd.losses.rnnt_loss` (reduction "mean": mean over utterances of
  ``-log P(y|x)``), or with ``rnnt_loss="pruned"`` the pruned loss of the full joiner
  inside the pruning ranges, next to ``simple``, the trivial joiner's loss
  (:mod:`mvqkd.student.pruned`); the transducer term of ``loss`` is then
  ``s * simple + p * rnnt`` with the warm-up weights of
  :func:`mvqkd.student.pruned.warmup_scales` at the training step (``forward(step=...)``).
- ``ctc``: optional auxiliary CTC loss of a linear layer on the final encoder output
  (``ctc_loss_scale > 0``; icefall's ``--use-ctc``), mean over utterances of the summed
  negative log-likelihood, the same normalisation as ``rnnt``. It speeds up the escape from
  the all-blank phase of a transducer trained from scratch on little data.
- ``codebook``: per-codebook cross-entropy of the 2N codebooks predicted at 25 Hz from the
  distillation layer against the paired 50 Hz teacher indexes
  (:func:`mvqkd.student.heads.align_teacher_to_student`), summed over codebooks and valid
  frames, divided by the batch size (``loss_norm="utterance"``, the reference's balance)
  or by the number of valid frames (``loss_norm="frame"``).
- ``kd``: the L1/L2/cosine baseline onto float teacher embeddings, normalised the same way.
"""

from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from mvqkd.conventions import IGNORE_INDEX, TEACHER_FRAMES_PER_STUDENT_FRAME as R

from .config import TransducerConfig
from .decoder import Decoder, Joiner
from .encoder import ConformerEncoder
from .heads import (CodebookHead, KDHead, align_embeddings_to_student,
                    align_teacher_to_student)

logger = logging.getLogger(__name__)

#: the scalar losses returned by :meth:`Transducer.forward` (logged and validated)
LOSS_KEYS = ("loss", "rnnt", "simple", "ctc", "codebook", "kd")


def pad_tokens(tokens: Sequence[Sequence[int]], pad: int, device=None
               ) -> Tuple[torch.Tensor, torch.Tensor]:
    """list of token lists -> (targets (B, U_max) long padded with ``pad``, lengths (B,))."""
    lens = torch.tensor([len(t) for t in tokens], dtype=torch.long)
    out = torch.full((len(tokens), max(1, int(lens.max()) if len(tokens) else 1)), pad,
                     dtype=torch.long)
    for i, t in enumerate(tokens):
        if len(t):
            out[i, : len(t)] = torch.as_tensor(t, dtype=torch.long)
    return out.to(device), lens.to(device)


class Transducer(nn.Module):
    """Transducer student (see module docstring). Decoding uses :meth:`encode`,
    ``decoder`` (stateless, ``need_pad=False``), ``joiner``, ``blank_id``, ``vocab_size``."""

    def __init__(self, cfg: TransducerConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = ConformerEncoder(
            cfg.feature_dim, cfg.encoder_dim, cfg.num_layers, cfg.num_heads, cfg.ff_dim,
            cfg.conv_kernel, cfg.dropout, cfg.resolved_distill_layer, cfg.sigma_reparam,
            cfg.subsampling_channels)
        self.decoder = Decoder(cfg.vocab_size, cfg.decoder_dim, cfg.blank_id, cfg.context_size)
        self.joiner = Joiner(cfg.encoder_dim, cfg.decoder_dim, cfg.joiner_dim, cfg.vocab_size)
        self.ctc_output = (nn.Linear(cfg.encoder_dim, cfg.vocab_size)
                           if cfg.ctc_loss_scale > 0 else None)
        self.codebook_head = None
        if cfg.num_codebooks > 0:
            self.codebook_head = CodebookHead(
                cfg.encoder_dim, R * cfg.num_codebooks, cfg.codebook_size,
                joint=cfg.codebook_loss == "joint", hidden_dim=cfg.codebook_hidden_dim,
                mlp_dim=cfg.codebook_mlp_dim, label_smoothing=cfg.codebook_label_smoothing,
                neighbour_codebooks=cfg.num_codebooks if cfg.codebook_smoothing_temperature > 0 else 0,
                geometry_dim=cfg.codebook_geometry_dim,
                geometry_residual=cfg.codebook_geometry_residual,
                weighting=cfg.codebook_weighting, weighting_power=cfg.codebook_weighting_power)
        self.kd_head = (KDHead(cfg.encoder_dim, cfg.kd_dim, cfg.kd_mode, cfg.kd_normalize)
                        if cfg.kd_mode else None)
        self.pruned = None
        if cfg.rnnt_loss == "pruned" or cfg.rnnt_backend == "k2":
            from .pruned import PrunedRnntLoss  # a clear error for k2 without k2

            self.pruned = PrunedRnntLoss(cfg.encoder_dim, cfg.decoder_dim, cfg.vocab_size,
                                         cfg.prune_range, cfg.lm_scale, cfg.am_scale,
                                         backend=cfg.rnnt_backend)

    @property
    def blank_id(self) -> int:
        return self.cfg.blank_id

    @property
    def vocab_size(self) -> int:
        return self.cfg.vocab_size

    def encode(self, features: torch.Tensor, feature_lens: torch.Tensor
               ) -> Tuple[torch.Tensor, torch.Tensor]:
        """fbank (B, T, F), lengths (B,) -> (encoder_out (B, T', E), encoder_out_lens (B,)),
        ``T' = (T + 3) // 4``."""
        out = self.encoder(features, feature_lens)
        return out.out, out.lens

    def _normalise(self, total: torch.Tensor, num_frames, batch_size: int) -> torch.Tensor:
        if self.cfg.loss_norm == "utterance":
            return total / batch_size
        return total / torch.as_tensor(num_frames, dtype=total.dtype,
                                       device=total.device).clamp(min=1.0)

    def rnnt_loss(self, encoder_out: torch.Tensor, encoder_lens: torch.Tensor,
                  tokens: List[List[int]]) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(rnnt, simple)``: the transducer loss, mean over utterances of ``-log P(y|x)``
        (inside the pruning ranges for the pruned loss), and the simple loss (0 for the
        full loss)."""
        bad = [i for i, t in enumerate(tokens) if any(s == self.blank_id or not
                                                      0 <= s < self.vocab_size for s in t)]
        if bad:
            raise ValueError(f"utterances {bad} of the batch contain the blank id "
                             f"{self.blank_id} or a token outside [0, {self.vocab_size})")
        targets, target_lens = pad_tokens(tokens, self.blank_id, encoder_out.device)
        if self.pruned is not None:
            simple, pruned = self.pruned(self.joiner, self.decoder, encoder_out, encoder_lens,
                                         targets, target_lens, self.blank_id)
            return pruned, simple
        from mvqkd.losses import rnnt_loss

        sos_y = nn.functional.pad(targets, (1, 0), value=self.blank_id)  # (B, U + 1)
        dec = self.decoder(sos_y, need_pad=True)  # (B, U + 1, Dd)
        logits = self.joiner(encoder_out.unsqueeze(2), dec.unsqueeze(1))  # (B, T, U+1, V)
        loss = rnnt_loss(logits.float(), targets.int(), encoder_lens.int(), target_lens.int(),
                         blank=self.blank_id, reduction="mean")
        return loss, loss.new_zeros(())

    def ctc_loss(self, encoder_out: torch.Tensor, encoder_lens: torch.Tensor,
                 tokens: List[List[int]]) -> torch.Tensor:
        """Auxiliary CTC loss of encoder_out (B, T', E): mean over utterances of
        ``-log P_ctc(y|x)`` (infeasible utterances, U > T', contribute 0)."""
        log_probs = self.ctc_output(encoder_out).float().log_softmax(-1)  # (B, T', V)
        targets, target_lens = pad_tokens(tokens, self.blank_id, encoder_out.device)
        total = nn.functional.ctc_loss(
            log_probs.transpose(0, 1), targets, encoder_lens, target_lens,
            blank=self.blank_id, reduction="sum", zero_infinity=True)
        return total / encoder_out.size(0)

    def codebook_loss(self, distill: torch.Tensor, encoder_lens: torch.Tensor,
                      codebook_indexes: torch.Tensor) -> torch.Tensor:
        """Codebook CE from the distillation-layer output (B, T', E) and 50 Hz teacher
        indexes (B, T50, N) (-100 = padding)."""
        if self.codebook_head is None:
            raise ValueError("codebook indexes were given but the model has no codebook head "
                             "(num_codebooks=0 in its config)")
        n = self.cfg.num_codebooks
        if codebook_indexes.dim() != 3 or codebook_indexes.shape[-1] != n:
            raise ValueError(f"codebook indexes must be (B, T50, {n}) (num_codebooks={n}), "
                             f"got {tuple(codebook_indexes.shape)}")
        targets = align_teacher_to_student(codebook_indexes.to(distill.device),
                                           distill.size(1), encoder_lens)
        total = self.codebook_head(distill, targets)
        frames = (targets != IGNORE_INDEX).sum() / (R * n)
        return self._normalise(total, frames, distill.size(0))

    def kd_loss(self, distill: torch.Tensor, encoder_lens: torch.Tensor,
                teacher_embeddings: torch.Tensor, teacher_lens: Optional[torch.Tensor]
                ) -> torch.Tensor:
        """L1/L2/cosine regression onto teacher embeddings (B, T50, D), lengths (B,)."""
        if self.kd_head is None:
            raise ValueError("teacher embeddings were given but the model has no KD head "
                             "(kd_mode=None in its config)")
        if teacher_lens is None:
            teacher_lens = torch.full((teacher_embeddings.size(0),), teacher_embeddings.size(1))
        target, valid = align_embeddings_to_student(
            teacher_embeddings.to(distill.device), teacher_lens, distill.size(1), encoder_lens)
        total = self.kd_head(distill, target, valid)
        return self._normalise(total, valid.sum() / R, distill.size(0))

    def forward(self, features: torch.Tensor, feature_lens: torch.Tensor,
                tokens: List[List[int]], codebook_indexes: Optional[torch.Tensor] = None,
                teacher_embeddings: Optional[torch.Tensor] = None,
                teacher_lens: Optional[torch.Tensor] = None,
                step: Optional[int] = None) -> Dict[str, torch.Tensor]:
        """features (B, T, F), feature_lens (B,), tokens (B lists of ids) ->
        dict ``loss``, ``rnnt``, ``simple``, ``ctc``, ``codebook``, ``kd`` (each 0 when
        unused), ``attn_entropy`` (num_layers, num_heads) detached, ``num_frames`` (encoder
        frames in the batch). ``step`` (the optimiser step) sets the pruned loss's warm-up
        weights; None means after the warm-up."""
        if len(tokens) != features.size(0):
            raise ValueError(f"{len(tokens)} transcripts for a batch of {features.size(0)}")
        enc = self.encoder(features, feature_lens)
        rnnt, simple = self.rnnt_loss(enc.out, enc.lens, tokens)
        transducer = rnnt
        if self.pruned is not None:
            from .pruned import warmup_scales

            s_scale, p_scale = warmup_scales(step, self.cfg.rnnt_warmup_steps, self.cfg.simple_loss_scale)
            transducer = s_scale * simple + p_scale * rnnt
        zero = rnnt.new_zeros(())
        ctc = codebook = kd = zero
        if self.ctc_output is not None:
            ctc = self.ctc_loss(enc.out, enc.lens, tokens)
        if codebook_indexes is not None:
            codebook = self.codebook_loss(enc.distill, enc.lens, codebook_indexes)
        if teacher_embeddings is not None:
            kd = self.kd_loss(enc.distill, enc.lens, teacher_embeddings, teacher_lens)
        loss = (transducer + self.cfg.ctc_loss_scale * ctc + self.cfg.codebook_loss_scale * codebook
                + self.cfg.kd_loss_scale * kd)
        return dict(loss=loss, rnnt=rnnt, simple=simple, ctc=ctc, codebook=codebook, kd=kd,
                    attn_entropy=enc.attn_entropy, num_frames=enc.lens.sum())


def build_model(cfg_dict) -> Transducer:
    """:class:`Transducer` from ``asdict(TransducerConfig)`` (or a config object)."""
    cfg = cfg_dict if isinstance(cfg_dict, TransducerConfig) else TransducerConfig.from_dict(
        dict(cfg_dict))
    model = Transducer(cfg)
    logger.info("built transducer student: %.2fM parameters",
                sum(p.numel() for p in model.parameters()) / 1e6)
    return model
