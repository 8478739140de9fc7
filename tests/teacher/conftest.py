"""The TF32 switches of extraction (mvqkd.teacher.model.ieee_float32), for the teacher tests."""

from __future__ import annotations

import pytest

from mvqkd.teacher.model import tf32_state, tf32_switched, tf32_switches


@pytest.fixture
def tf32_on():
    """The switches set to allow TF32 (torch's cuDNN default; CUDA matmul too), restored after."""
    allowed = ["tf32" if isinstance(ieee, str) else True for _, _, ieee in tf32_switches()]
    with tf32_switched(allowed):
        yield tf32_state()
