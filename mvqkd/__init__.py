"""mvqkd: multi-codebook VQ knowledge distillation for transducer ASR.

Layers (one direction): data -> teacher -> quantizer -> indexes -> student -> decode.
"""

__version__ = "0.1.0"
