"""mvqkd.student: the transducer student (encoder, stateless predictor, joiner,
distillation heads).

Public API (imported lazily so that ``mvqkd --help`` does not import torch):
:class:`TransducerConfig`, :func:`preset_config`, :class:`Transducer`, :func:`build_model`,
:func:`align_teacher_to_student`, :func:`subsampled_lengths`.
"""

import importlib

_EXPORTS = {
    "TransducerConfig": "config",
    "preset_config": "config",
    "PRESETS": "config",
    "Transducer": "model",
    "build_model": "model",
    "align_teacher_to_student": "heads",
    "subsampled_lengths": "encoder",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
