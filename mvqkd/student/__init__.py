"""mvqkd.student: the transducer student (encoder, stateless predictor, joiner,
distillation heads).

Public API (imported lazily so that ``mvqkd --help`` does not import torch):
:class:`TransducerConfig`, :func:`preset_config`, :class:`Transducer`, :func:`build_model`,
:func:`align_teacher_to_student`, :func:`subsampled_lengths`.
"""

from mvqkd._lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "TransducerConfig": "config",
    "preset_config": "config",
    "PRESETS": "config",
    "Transducer": "model",
    "build_model": "model",
    "align_teacher_to_student": "heads",
    "subsampled_lengths": "encoder",
})
