import numpy as np
import pytest


def make_gaussian(frames: int, dim: int, seed: int = 0, decay: float = 10.0) -> np.ndarray:
    """Anisotropic Gaussian with an exponentially decaying spectrum, non-zero mean."""
    rng = np.random.default_rng(seed)
    std = np.exp(-np.arange(dim) / decay)
    rot, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    return ((rng.standard_normal((frames, dim)) * std) @ rot + 2.0).astype(np.float32)


@pytest.fixture(scope="session")
def gauss():
    """(3000, 32) float32 training data."""
    return make_gaussian(3000, 32)


@pytest.fixture(scope="session")
def small_q(gauss):
    from mvqkd.quantizer import train_quantizer

    return train_quantizer(gauss, num_codebooks=4, codebook_size=16, iters=3, seed=0, progress=False)
