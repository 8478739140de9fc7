"""The TF32 switches of extraction (mvqkd.teacher.model.ieee_float32), for the teacher tests."""

from __future__ import annotations

import pytest

from mvqkd.teacher.model import tf32_switches


def tf32_state() -> tuple:
    """The TF32 switches' current values (those ieee_float32 sets)."""
    return tuple(getattr(holder, name) for holder, name, _ in tf32_switches())


def ieee_state() -> tuple:
    """What ieee_float32 sets them to."""
    return tuple(value for _, _, value in tf32_switches())


def tf32_during_forward(teacher) -> list[tuple]:
    """The TF32 switches as the teacher's model saw them, call by call (a spy on its forward)."""
    seen, forward = [], teacher.model.forward

    def spy(*args, **kwargs):
        seen.append(tf32_state())
        return forward(*args, **kwargs)

    teacher.model.forward = spy
    return seen


@pytest.fixture
def tf32_on():
    """The switches set to allow TF32 (torch's cuDNN default; CUDA matmul too), restored after."""
    switches = tf32_switches()
    saved = tf32_state()
    for holder, name, ieee in switches:
        setattr(holder, name, "tf32" if isinstance(ieee, str) else True)
    yield tf32_state()
    for (holder, name, _), value in zip(switches, saved):
        setattr(holder, name, value)
