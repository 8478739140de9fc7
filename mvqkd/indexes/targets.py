"""What extraction stores per cut: codebook indexes, or float16 teacher embeddings.

A :class:`TargetSpec` is a small picklable description (sent to worker processes);
:meth:`TargetSpec.build` turns it into a :class:`Target` once the teacher is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from mvqkd.conventions import CODEBOOK_INDEXES as INDEXES
from mvqkd.conventions import TEACHER_EMBEDDINGS as EMBEDDINGS
from mvqkd.conventions import info_field


@dataclass(frozen=True)
class TargetSpec:
    """``field`` is :data:`INDEXES` (needs ``quantizer``) or :data:`EMBEDDINGS`."""

    field: str
    teacher_dir: str
    layer: int
    quantizer: str | None = None
    #: filled by :meth:`identify`: what the arrays depend on
    teacher_hash: str | None = None
    quantizer_id: str | None = None

    def identify(self) -> "TargetSpec":
        """Check the settings (:meth:`check`) and return a copy that records the teacher's
        content hash and the quantizer's id (the extraction plan and every cut's info)."""
        from mvqkd.teacher.model import teacher_hash

        qid = self.check()
        return replace(self, teacher_hash=teacher_hash(self.teacher_dir), quantizer_id=qid)

    def check(self) -> str | None:
        """Refuse incompatible settings before any work: unknown field, a layer out of
        range, a quantizer whose dim is not the teacher's hidden size. Returns the
        quantizer's id (None for embeddings)."""
        from transformers import AutoConfig

        if self.field not in (INDEXES, EMBEDDINGS):
            raise ValueError(f"unknown target field {self.field!r}")
        if not (Path(self.teacher_dir) / "config.json").is_file():
            raise FileNotFoundError(f"--teacher {self.teacher_dir}: no config.json there")
        cfg = AutoConfig.from_pretrained(self.teacher_dir)
        if not 0 <= self.layer <= cfg.num_hidden_layers:
            raise ValueError(
                f"--layer {self.layer}: teacher {self.teacher_dir} has layers 0..{cfg.num_hidden_layers}"
            )
        if self.field == INDEXES:
            if self.quantizer is None:
                raise ValueError("codebook indexes need a --quantizer")
            from mvqkd.quantizer import load_quantizer

            q = load_quantizer(self.quantizer)
            if q.dim != cfg.hidden_size:
                raise ValueError(
                    f"quantizer {self.quantizer} (id {q.id}) expects dim {q.dim} but teacher "
                    f"{self.teacher_dir} layer {self.layer} gives dim {cfg.hidden_size}"
                )
            return q.id
        return None

    def build(self, teacher) -> "Target":
        return Target(self, teacher)


class Target:
    def __init__(self, spec: TargetSpec, teacher):
        self.field = spec.field
        self.layer = spec.layer
        self.quantizer = None
        who = {"teacher": teacher.name, "teacher_path": str(Path(spec.teacher_dir).resolve()),
               "teacher_hash": spec.teacher_hash, "layer": spec.layer}
        if spec.field == INDEXES:
            from mvqkd.quantizer import load_quantizer

            self.quantizer = load_quantizer(spec.quantizer, device=teacher.device)
            if spec.quantizer_id is not None and self.quantizer.id != spec.quantizer_id:
                raise ValueError(f"quantizer {spec.quantizer} changed during extraction (id "
                                 f"{spec.quantizer_id} -> {self.quantizer.id})")
            self.info = {"quantizer_id": self.quantizer.id,
                         "num_codebooks": self.quantizer.num_codebooks,
                         "codebook_size": self.quantizer.codebook_size, **who}
        else:
            self.info = {**who, "dim": teacher.dim}

    @property
    def info_field(self) -> str:
        return info_field(self.field)

    def convert(self, emb: torch.Tensor) -> np.ndarray:
        """``(T, D)`` float embeddings -> ``(T, N)`` uint8 codes or ``(T, D)`` float16."""
        if self.quantizer is not None:
            return self.quantizer.encode(emb.to(self.quantizer.device)).cpu().numpy()
        return emb.to(torch.float16).numpy()
