"""Reading the TF32 switches around a teacher's forward (tests of mvqkd.teacher.model.ieee_float32)."""

from __future__ import annotations

from mvqkd.teacher.model import tf32_state, tf32_switches


def ieee_state() -> tuple:
    """What ieee_float32 sets the switches to."""
    return tuple(value for _, _, value in tf32_switches())


def tf32_during_forward(teacher) -> list[tuple]:
    """The TF32 switches as the teacher's model saw them, call by call (a spy on its forward)."""
    seen, forward = [], teacher.model.forward

    def spy(*args, **kwargs):
        seen.append(tf32_state())
        return forward(*args, **kwargs)

    teacher.model.forward = spy
    return seen
