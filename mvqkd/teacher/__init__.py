"""mvqkd.teacher: speech SSL teachers (HuBERT / WavLM / wav2vec2) from a local directory.

Public API (imported lazily, so ``import mvqkd.teacher`` stays light)::

    teacher = load_teacher("path/to/hubert", device="auto")
    embs = teacher.extract([wav_16k_a, wav_16k_b], layer=6)   # list of (T, D) float32
    make_teacher("out/tiny", size="tiny")                       # random-init checkpoint
"""

_LAZY = {"load_teacher": "mvqkd.teacher.model", "Teacher": "mvqkd.teacher.model",
         "make_teacher": "mvqkd.teacher.make"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mvqkd.teacher' has no attribute {name!r}")


__all__ = list(_LAZY)
