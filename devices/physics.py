"""Device physics: compute time, free memory, energy, link time, battery. Pure functions.

Every function takes plain numbers in the units its parameter names state and returns a Python
scalar for scalar input; numeric arguments may also be numpy arrays (broadcast together), in
which case the result is an array. Invalid input raises ``ValueError`` naming the parameter.

Units: seconds, bytes, FLOPs, joules, watts. Link rates are in bits per second with SI prefixes
(1 kbit = 1000 bit) and 8 bits per byte; nothing here is 1024-based.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from devices._checks import (
    check_finite_nonneg,
    check_int_at_least,
    check_nonneg,
    check_positive,
    check_unit_open_closed,
    scalar_or_array,
)

BITS_PER_BYTE = 8


def compute_time_s(flops: Any, flops_per_s: Any, slowdown: Any = 1.0) -> Any:
    """Seconds to execute ``flops`` at ``flops_per_s`` slowed by ``slowdown``.

    ``flops / (flops_per_s / slowdown)``. ``slowdown`` 1 is nominal speed, 2 is half speed;
    values below 1 (a speed-up) are allowed. Raises on ``flops < 0``, ``flops_per_s <= 0`` or
    ``slowdown <= 0``.
    """
    check_finite_nonneg("flops", flops)
    check_positive("flops_per_s", flops_per_s)
    check_positive("slowdown", slowdown)
    return scalar_or_array(np.asarray(flops, float) * slowdown / np.asarray(flops_per_s, float))


def free_memory_bytes(ram_bytes: Any, runtime_reserve_bytes: Any, background_bytes: Any) -> Any:
    """Bytes a task may use now: ``max(0, ram - reserve - background)``, rounded down.

    ``background_bytes`` may be fractional (``BackgroundMemory.at`` returns a float). Returns an
    ``int`` for scalar input, an ``int64`` array otherwise.
    """
    check_finite_nonneg("ram_bytes", ram_bytes)
    check_finite_nonneg("runtime_reserve_bytes", runtime_reserve_bytes)
    check_finite_nonneg("background_bytes", background_bytes)
    free = np.floor(np.asarray(ram_bytes, float) - runtime_reserve_bytes - background_bytes)
    free = np.maximum(free, 0.0).astype(np.int64)
    return int(free) if free.ndim == 0 else free


def fits_memory(demand_bytes: Any, free_bytes: Any) -> Any:
    """True where a task needing ``demand_bytes`` at its peak fits in ``free_bytes`` (``<=``)."""
    check_finite_nonneg("demand_bytes", demand_bytes)
    check_finite_nonneg("free_bytes", free_bytes)
    fits = np.asarray(demand_bytes) <= np.asarray(free_bytes)
    return bool(fits) if fits.ndim == 0 else fits


def joules_per_flop(compute_power_w: Any, sustained_flops_per_s: Any) -> Any:
    """Energy of one FLOP in joules: ``compute_power_w / sustained_flops_per_s``."""
    check_finite_nonneg("compute_power_w", compute_power_w)
    check_positive("sustained_flops_per_s", sustained_flops_per_s)
    return scalar_or_array(np.asarray(compute_power_w, float) / sustained_flops_per_s)


def energy_j(flops: Any, bytes_moved: Any, joules_per_flop: Any, tx_j_per_byte: Any) -> Any:
    """Joules to compute ``flops`` and move ``bytes_moved`` over the radio.

    ``flops * joules_per_flop + bytes_moved * tx_j_per_byte``: ``compute_energy_j`` plus
    ``radio_energy_j``. Idle and base power are not included (callers add them if they model them).
    """
    check_finite_nonneg("flops", flops)
    check_finite_nonneg("bytes_moved", bytes_moved)
    check_finite_nonneg("joules_per_flop", joules_per_flop)
    check_finite_nonneg("tx_j_per_byte", tx_j_per_byte)
    return scalar_or_array(np.asarray(flops, float) * joules_per_flop
                           + np.asarray(bytes_moved, float) * tx_j_per_byte)


def compute_energy_j(flops: Any, joules_per_flop: Any) -> Any:
    """Joules to compute ``flops`` at ``joules_per_flop``: ``flops * joules_per_flop``.

    The compute part of ``energy_j``. Energy per FLOP is constant, so a slowed-down task (thermal,
    background load) costs the same joules over a longer time: its draw is lower, not its total.
    """
    check_finite_nonneg("flops", flops)
    check_finite_nonneg("joules_per_flop", joules_per_flop)
    return scalar_or_array(np.asarray(flops, float) * joules_per_flop)


def radio_energy_j(bytes_moved: Any, radio_j_per_byte: Any) -> Any:
    """Joules to move ``bytes_moved`` over the radio, sent or received: ``bytes_moved * radio_j_per_byte``.

    The radio part of ``energy_j``. The link catalog gives one incremental figure per byte
    (``LinkClass.tx_j_per_byte``) for both directions; base and tail power are not modelled.
    """
    check_finite_nonneg("bytes_moved", bytes_moved)
    check_finite_nonneg("radio_j_per_byte", radio_j_per_byte)
    return scalar_or_array(np.asarray(bytes_moved, float) * radio_j_per_byte)


def battery_empty_after_s(level_j: Any, draw_w: Any, recharge_w: Any) -> Any:
    """Seconds until a battery holding ``level_j`` is empty while drawing ``draw_w`` and recharging at
    ``recharge_w``: ``level_j / (draw_w - recharge_w)``, ``inf`` when the draw does not exceed the
    recharge (the level never falls). A falling level never reaches the capacity cap, so the formula is
    exact. 0 for an empty battery under a net draw.
    """
    check_finite_nonneg("level_j", level_j)
    check_finite_nonneg("draw_w", draw_w)
    check_finite_nonneg("recharge_w", recharge_w)
    net = np.asarray(draw_w, float) - np.asarray(recharge_w, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        after = np.where(net > 0, np.asarray(level_j, float) / np.where(net > 0, net, 1.0), np.inf)
    return scalar_or_array(after)


def recharge_time_s(level_j: Any, target_j: Any, recharge_w: Any) -> Any:
    """Seconds for a battery at ``level_j`` to reach ``target_j`` at ``recharge_w``:
    ``max(0, target_j - level_j) / recharge_w``; 0 when already there, ``inf`` with no recharge power.
    """
    check_finite_nonneg("level_j", level_j)
    check_finite_nonneg("target_j", target_j)
    check_finite_nonneg("recharge_w", recharge_w)
    short = np.maximum(0.0, np.asarray(target_j, float) - np.asarray(level_j, float))
    power = np.asarray(recharge_w, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        time = np.where(short == 0, 0.0, np.where(power > 0, short / np.where(power > 0, power, 1.0), np.inf))
    return scalar_or_array(time)


def serialization_time_s(size_bytes: Any, bit_per_s: Any) -> Any:
    """Seconds to clock ``size_bytes`` onto a link of ``bit_per_s``: ``8 * size / rate``."""
    check_finite_nonneg("size_bytes", size_bytes)
    check_positive("bit_per_s", bit_per_s)
    return scalar_or_array(BITS_PER_BYTE * np.asarray(size_bytes, float) / bit_per_s)


def framed_transfer_time_s(size_bytes: Any, bit_per_s: Any, duty_cycle: Any,
                           max_frame_payload_bytes: int | None, frame_overhead_bytes: int) -> Any:
    """Seconds from the first bit of a message to its last bit, on a framed, duty-cycled radio.

    The message is split into ``n = max(1, ceil(size / max_frame_payload_bytes))`` frames, all
    full except the last; each frame carries ``frame_overhead_bytes`` of header as well. A frame
    of ``b`` bytes takes ``8 b / bit_per_s`` of airtime, after which the radio stays silent for
    ``airtime * (1 / duty_cycle - 1)`` before the next frame (so its average duty cycle is
    exactly ``duty_cycle``). No silence follows the last frame. With ``max_frame_payload_bytes``
    None the message is a single frame, so with ``duty_cycle`` 1 and no overhead the result
    equals ``serialization_time_s``. An empty message still sends one (header-only) frame.

    ``size_bytes``, ``bit_per_s`` and ``duty_cycle`` may be arrays; the framing arguments are
    scalars.
    """
    check_finite_nonneg("size_bytes", size_bytes)
    check_positive("bit_per_s", bit_per_s)
    check_unit_open_closed("duty_cycle", duty_cycle)
    if max_frame_payload_bytes is not None:
        check_int_at_least("max_frame_payload_bytes", max_frame_payload_bytes, 1)
    check_int_at_least("frame_overhead_bytes", frame_overhead_bytes, 0)

    size = np.asarray(size_bytes, float)
    if max_frame_payload_bytes is None:
        n_frames = np.ones_like(size)
        last_payload = size
    else:
        full = np.floor(size / max_frame_payload_bytes)
        rest = size - full * max_frame_payload_bytes
        exact = (rest == 0) & (size > 0)  # the last frame is a full one
        n_frames = np.where(exact, full, full + 1)
        last_payload = np.where(exact, float(max_frame_payload_bytes), rest)
    total_bits = BITS_PER_BYTE * (size + n_frames * frame_overhead_bytes)
    last_bits = BITS_PER_BYTE * (last_payload + frame_overhead_bytes)
    rate = np.asarray(bit_per_s, float)
    silence_factor = 1.0 / np.asarray(duty_cycle, float) - 1.0
    return scalar_or_array((total_bits + (total_bits - last_bits) * silence_factor) / rate)


def framed_transfer_time_scalar_s(size_bytes: int, bit_per_s: float, duty_cycle: float,
                                  max_frame_payload_bytes: int | None,
                                  frame_overhead_bytes: int) -> float:
    """``framed_transfer_time_s`` for Python scalars, unchecked: the simulator's hot path.

    Same formula, same result (a test compares the two); the caller guarantees valid inputs,
    e.g. fields of a ``DeviceProfile``, whose constructor checked them.
    """
    if max_frame_payload_bytes is None:
        n_frames, last_payload = 1, size_bytes
    else:
        full, rest = divmod(size_bytes, max_frame_payload_bytes)
        if rest == 0 and size_bytes > 0:
            n_frames, last_payload = full, max_frame_payload_bytes
        else:
            n_frames, last_payload = full + 1, rest
    total_bits = BITS_PER_BYTE * (size_bytes + n_frames * frame_overhead_bytes)
    if duty_cycle == 1.0:
        return total_bits / bit_per_s
    last_bits = BITS_PER_BYTE * (last_payload + frame_overhead_bytes)
    return (total_bits + (total_bits - last_bits) * (1.0 / duty_cycle - 1.0)) / bit_per_s


def battery_level_j(level_j: Any, capacity_j: Any, recharge_w: Any, elapsed_s: Any) -> Any:
    """Battery charge after ``elapsed_s`` of recharging at ``recharge_w``, capped at capacity.

    ``min(capacity_j, level_j + recharge_w * elapsed_s)``. Spending is the caller's job. Raises
    on a negative level, a level above capacity, a non-positive capacity, negative recharge power
    or negative elapsed time.
    """
    check_finite_nonneg("level_j", level_j)
    check_positive("capacity_j", capacity_j)
    check_finite_nonneg("recharge_w", recharge_w)
    check_nonneg("elapsed_s", elapsed_s)
    if not np.all(np.asarray(level_j, float) <= np.asarray(capacity_j, float)):
        raise ValueError(f"level_j must be <= capacity_j, got level_j={level_j!r}, "
                         f"capacity_j={capacity_j!r}")
    power = np.asarray(recharge_w, float)
    with np.errstate(invalid="ignore"):  # 0 W for an infinite time charges nothing, not NaN
        gained = np.where(power == 0, 0.0, power * np.asarray(elapsed_s, float))
    return scalar_or_array(np.minimum(capacity_j, np.asarray(level_j, float) + gained))
