"""mvqkd.teacher: speech SSL teachers (HuBERT / WavLM / wav2vec2) from a local directory.

Public API (imported lazily, so ``import mvqkd.teacher`` stays light)::

    teacher = load_teacher("path/to/hubert", device="auto")
    embs = teacher.extract([wav_16k_a, wav_16k_b], layer=6)   # list of (T, D) float32
    make_teacher("out/tiny", size="tiny")                       # random-init checkpoint
"""

from mvqkd._lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {"load_teacher": "model", "Teacher": "model",
                                               "make_teacher": "make"})
