"""A simulated device's state and energy ledger: what it spent (compute, radio received, radio sent), its
battery's charge, and the battery running flat and recharging to the rejoin level (docs/energy.md).

Plain state and arithmetic on it, no SimPy: ``fleet.sim.devices`` calls these at the moments it charges a task
and records the rows. The formulas are ``devices.physics``'s (the charge through its scalar twin,
``fleet.sim.twins.battery_level_scalar_j``).
"""

from __future__ import annotations

import math

from devices import AlwaysOn, Availability, DeviceProfile
from devices.catalog import REJOIN_FRACTION
from devices.physics import battery_empty_after_s, recharge_time_s
from fleet.sim.twins import battery_level_scalar_j, joules_per_flop_scalar

__all__ = ["DeviceState", "charge", "go_flat", "level_j", "upload_flat_s"]


class DeviceState:
    """What a device that received a task holds: its profile, timeline and joules per FLOP, looked up
    once, and its mutable battery (``battery_j`` at ``battery_at_s``; None without one), spent FLOPs and
    spent energy (in total and by part: compute, radio received, radio sent), the times its battery ran flat
    and until when it is flat (silent while ``now < flat_until_s``). Made at its first task.

    ``cuttable``: whether the device can ever go silent (be unavailable, or run flat) on its own; False for
    an always-on device without a battery, so an upload's cut need not be asked about (``upload_stop``)."""

    __slots__ = ("profile", "trainable_bytes", "availability", "j_per_flop", "battery_j", "battery_at_s",
                 "flops_spent", "energy_spent_j", "compute_j", "rx_j", "tx_j", "flats", "flat_until_s", "cuttable")

    def __init__(self, profile: DeviceProfile, availability: Availability, battery_j: float | None) -> None:
        self.profile, self.availability = profile, availability
        self.trainable_bytes = profile.trainable_bytes
        self.j_per_flop = joules_per_flop_scalar(profile.compute_power_w, profile.flops_per_s)
        self.battery_j = battery_j
        self.battery_at_s = 0.0
        self.flops_spent = 0
        self.energy_spent_j = 0.0
        self.compute_j = self.rx_j = self.tx_j = 0.0
        self.flats = 0
        self.flat_until_s = -math.inf  # inf: flat for good (no recharge power)
        self.cuttable = type(availability) is not AlwaysOn or battery_j is not None


def level_j(state: DeviceState, t_s: float) -> float:
    """The battery's charge at ``t_s`` (not before its last change); the state must have a battery."""
    p = state.profile
    return battery_level_scalar_j(state.battery_j, p.battery_j, p.recharge_w, t_s - state.battery_at_s)


def charge(state: DeviceState, t_s: float, compute_j: float, rx_j: float, tx_j: float, flat: bool = False) -> bool:
    """Spend the three parts at ``t_s``; True when the battery runs flat on them: it cannot cover them, or
    ``flat`` (the caller computed that it empties now). A flat battery gives what it held, shared between the
    parts pro rata, and is left at 0 (``go_flat`` then). A mains device never runs flat."""
    joules = compute_j + rx_j + tx_j
    if state.battery_j is not None:
        level = level_j(state, t_s)
        flat = flat or level < joules
        if flat and joules > 0.0:
            share = level / joules
            compute_j, rx_j, tx_j, joules = compute_j * share, rx_j * share, tx_j * share, level
        state.battery_j, state.battery_at_s = max(0.0, level - joules), t_s
    else:
        flat = False
    state.energy_spent_j += joules
    state.compute_j += compute_j
    state.rx_j += rx_j
    state.tx_j += tx_j
    return flat


def go_flat(state: DeviceState, t_s: float) -> float:
    """The battery is empty at ``t_s``: count it, and return when it is back, recharged to ``REJOIN_FRACTION``
    of its capacity (``recharge_time_s``; inf without recharge power)."""
    p = state.profile
    state.battery_j, state.battery_at_s = 0.0, t_s
    state.flats += 1
    state.flat_until_s = t_s + recharge_time_s(0.0, REJOIN_FRACTION * p.battery_j, p.recharge_w)
    return state.flat_until_s


def upload_flat_s(state: DeviceState, grant_s: float, hold_s: float, tx_j: float) -> float | None:
    """When the battery runs flat transmitting ``tx_j`` evenly over ``hold_s`` from ``grant_s`` (before the
    airtime ends), or None: it empties after ``battery_empty_after_s(level, tx_j / hold_s, recharge_w)``."""
    if state.battery_j is None or hold_s <= 0.0:
        return None
    level, recharge_w = level_j(state, grant_s), state.profile.recharge_w
    if level + recharge_w * hold_s >= tx_j:  # charge and recharge outlast the draw
        return None
    flat_s = grant_s + battery_empty_after_s(level, tx_j / hold_s, recharge_w)
    return flat_s if flat_s < grant_s + hold_s else None
