"""Unchecked scalar twins of ``devices.physics`` formulas, for the simulator's hot path.

Each is the formula of the ``devices`` function it names, for Python scalars, without the argument
checks (the caller passes fields of a ``DeviceProfile`` or of a ``Task``, checked when they were
made). ``tests/sim/test_twins.py`` holds each equal to its ``devices`` function on a grid of inputs,
as ``devices.framed_transfer_time_scalar_s`` is held to ``framed_transfer_time_s``.
"""

from __future__ import annotations

__all__ = ["battery_level_scalar_j", "compute_time_scalar_s", "energy_scalar_j", "free_memory_scalar_bytes",
           "joules_per_flop_scalar", "serialization_time_scalar_s"]


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


def energy_scalar_j(flops: int, bytes_moved: int, joules_per_flop: float, tx_j_per_byte: float) -> float:
    """``devices.energy_j``: joules to compute ``flops`` and move ``bytes_moved`` over the radio."""
    return float(flops) * joules_per_flop + float(bytes_moved) * tx_j_per_byte


def battery_level_scalar_j(level_j: float, capacity_j: float, recharge_w: float, elapsed_s: float) -> float:
    """``devices.battery_level_j``: the charge after ``elapsed_s`` of recharging, capped at capacity (no
    recharge power charges nothing, even over an infinite time)."""
    gained = 0.0 if recharge_w == 0 else recharge_w * elapsed_s
    return min(capacity_j, level_j + gained)


def joules_per_flop_scalar(compute_power_w: float, sustained_flops_per_s: float) -> float:
    """``devices.joules_per_flop``: the energy of one FLOP."""
    return float(compute_power_w) / sustained_flops_per_s
