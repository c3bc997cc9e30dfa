"""Unchecked scalar twins of ``devices.physics`` formulas, for the simulator's hot path.

Each is the formula of the ``devices`` function it names, for Python scalars, without the argument
checks (the caller passes fields of a ``DeviceProfile`` or of a ``Task``, checked when they were
made). ``tests/sim/test_twins.py`` holds each equal to its ``devices`` function on a grid of inputs,
as ``devices.framed_transfer_time_scalar_s`` is held to ``framed_transfer_time_s``.
"""

from __future__ import annotations

__all__ = ["compute_time_scalar_s", "free_memory_scalar_bytes", "serialization_time_scalar_s"]


def compute_time_scalar_s(flops: int, flops_per_s: float, slowdown: float = 1.0) -> float:
    """``devices.compute_time_s``: seconds to execute ``flops`` at ``flops_per_s`` / ``slowdown``."""
    return flops * slowdown / flops_per_s


def free_memory_scalar_bytes(trainable_bytes: int, background_bytes: float) -> int:
    """``devices.free_memory_bytes``: bytes a task may use, ``max(0, trainable - background)`` rounded
    down (``trainable_bytes`` is ``ram - runtime reserve``)."""
    return max(0, int(trainable_bytes - background_bytes))


def serialization_time_scalar_s(size_bytes: int, bit_per_s: float) -> float:
    """``devices.serialization_time_s``: seconds to put ``size_bytes`` on a link of ``bit_per_s``."""
    return 8.0 * size_bytes / bit_per_s  # 8 bits a byte
