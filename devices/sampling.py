"""Sampling a fleet: from a mix of (device class, link class, fraction) to one profile per device.

Counts per mix entry come from largest-remainder rounding, so they are exact and deterministic;
then each entry's devices are drawn in one vectorised batch per quantity. Per device:

* ``flops_per_s`` = class sustained throughput x LogNormal(0, ``flops_sigma``) (median 1);
* ``up_bit_per_s`` and ``down_bit_per_s`` = class rates x one shared LogNormal(0,
  ``bandwidth_sigma``) factor (a device with poor signal is slow both ways);
* ``latency_s`` = class latency x LogNormal(0, ``latency_sigma``);
* link figures come from the entry's link class with the entry's ``link`` overrides applied;
* ``background``: mean and amplitude are the class fractions of ``ram - reserve``, period
  ``background_period_s``, phase Uniform[0, 2 pi).

Draw order per entry (fixed, part of the reproducibility contract): throughput factors,
bandwidth factors, latency factors, phases. Entries with no devices draw nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from fractions import Fraction
from types import MappingProxyType
from typing import Mapping, Sequence

import numpy as np

from devices._checks import (
    check_finite_nonneg,
    check_int_at_least,
    check_positive,
    check_unit_closed_open,
    check_unit_open_closed,
)
from devices.background import BackgroundMemory
from devices.catalog import DeviceClass
from devices.links import LINK_CLASSES, LinkClass

#: How far the mix fractions may sum from 1.
FRACTION_SUM_TOLERANCE = 1e-6


#: The link figures a mix entry may override (``MixEntry.link``).
LINK_OVERRIDES = frozenset({"up_bit_per_s", "down_bit_per_s", "bandwidth_sigma", "latency_s",
                            "latency_sigma", "loss_prob"})


@dataclass(frozen=True, slots=True)
class MixEntry:
    """``fraction`` of the fleet is ``device_class`` on ``link_class`` (names from the catalogs).

    ``link`` replaces figures of the link class for this entry only (keys in ``LINK_OVERRIDES``,
    values as ``LinkClass`` requires them: e.g. a poor WiFi is ``{"loss_prob": 0.3}``); the
    sampled devices then draw their spread around the replaced medians exactly as around the
    class's, from the same random numbers.
    """

    device_class: str
    link_class: str
    fraction: float
    link: Mapping[str, float] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        for name in ("device_class", "link_class"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string, got {getattr(self, name)!r}")
        check_finite_nonneg("fraction", self.fraction)
        unknown = sorted(set(self.link) - LINK_OVERRIDES)
        if unknown:
            raise ValueError(f"link: cannot override {', '.join(map(repr, unknown))}; "
                             f"valid: {', '.join(sorted(LINK_OVERRIDES))}")
        object.__setattr__(self, "link", MappingProxyType(dict(self.link)))

    def link_class_of(self, link_classes: Mapping[str, LinkClass] = LINK_CLASSES) -> LinkClass:
        """The entry's link class with ``link`` applied (validated as any ``LinkClass``)."""
        lc = link_classes[self.link_class]
        if not self.link:
            return lc
        cited = {**lc.sources, **{k: "[scenario] fleet.mix link override" for k in self.link}}
        return replace(lc, **self.link, sources=cited)


@dataclass(frozen=True, slots=True)
class DeviceProfile:
    """One sampled device: everything the simulator needs to know about it. Units in names."""

    device_id: int
    device_class: str
    link_class: str
    ram_bytes: int
    runtime_reserve_bytes: int
    flops_per_s: float
    compute_power_w: float
    battery_j: float | None
    recharge_w: float
    up_bit_per_s: float
    down_bit_per_s: float
    latency_s: float
    loss_prob: float
    duty_cycle: float
    max_frame_payload_bytes: int | None
    frame_overhead_bytes: int
    tx_j_per_byte: float
    background: BackgroundMemory

    def __post_init__(self) -> None:
        # One cheap combined test on plain Python values first (a fleet builds 10^5 of these);
        # anything else (numpy scalars, bad values) goes through the named checks.
        try:
            plain = self._plainly_valid()
        except TypeError:
            plain = False
        if not plain:
            self._check_each()

    def _plainly_valid(self) -> bool:
        return (type(self.device_id) is int and 0 <= self.device_id
                and type(self.device_class) is str and type(self.link_class) is str
                and type(self.ram_bytes) is int and type(self.runtime_reserve_bytes) is int
                and 0 <= self.runtime_reserve_bytes < self.ram_bytes
                and 0 < self.flops_per_s < math.inf and 0 < self.up_bit_per_s < math.inf
                and 0 < self.down_bit_per_s < math.inf
                and 0 <= self.compute_power_w < math.inf and 0 <= self.recharge_w < math.inf
                and 0 <= self.latency_s < math.inf and 0 <= self.tx_j_per_byte < math.inf
                and (self.battery_j is None or 0 < self.battery_j < math.inf)
                and 0 <= self.loss_prob < 1 and 0 < self.duty_cycle <= 1
                and (self.max_frame_payload_bytes is None
                     or (type(self.max_frame_payload_bytes) is int
                         and self.max_frame_payload_bytes >= 1))
                and type(self.frame_overhead_bytes) is int and self.frame_overhead_bytes >= 0
                and type(self.background) is BackgroundMemory)

    def _check_each(self) -> None:
        check_int_at_least("device_id", self.device_id, 0)
        for name in ("device_class", "link_class"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string, got {getattr(self, name)!r}")
        check_int_at_least("ram_bytes", self.ram_bytes, 1)
        check_int_at_least("runtime_reserve_bytes", self.runtime_reserve_bytes, 0)
        if self.runtime_reserve_bytes >= self.ram_bytes:
            raise ValueError(f"runtime_reserve_bytes must be < ram_bytes, got "
                             f"{self.runtime_reserve_bytes} >= {self.ram_bytes}")
        for name in ("flops_per_s", "up_bit_per_s", "down_bit_per_s"):
            check_positive(name, getattr(self, name))
        for name in ("compute_power_w", "recharge_w", "latency_s", "tx_j_per_byte"):
            check_finite_nonneg(name, getattr(self, name))
        if self.battery_j is not None:
            check_positive("battery_j", self.battery_j)
        check_unit_closed_open("loss_prob", self.loss_prob)
        check_unit_open_closed("duty_cycle", self.duty_cycle)
        if self.max_frame_payload_bytes is not None:
            check_int_at_least("max_frame_payload_bytes", self.max_frame_payload_bytes, 1)
        check_int_at_least("frame_overhead_bytes", self.frame_overhead_bytes, 0)
        if not isinstance(self.background, BackgroundMemory):
            raise ValueError(f"background must be a BackgroundMemory, got {self.background!r}")

    @property
    def trainable_bytes(self) -> int:
        """RAM left once the runtime is loaded: ``ram_bytes - runtime_reserve_bytes``."""
        return self.ram_bytes - self.runtime_reserve_bytes


def largest_remainder_counts(fractions: Sequence[float], n: int) -> list[int]:
    """Split ``n`` into integer counts proportional to ``fractions`` (Hamilton's method).

    Each count is the floor of its exact quota ``n * f_i / sum(f)``; the leftover units go to
    the largest fractional parts, ties to the earlier entry. Exact rational arithmetic, so the
    counts always sum to ``n`` and do not depend on float rounding. ``fractions`` must be
    ``>= 0`` with a positive sum.
    """
    check_int_at_least("n", n, 0)
    for f in fractions:
        check_finite_nonneg("fraction", f)
    exact = [Fraction(f) for f in fractions]
    total = sum(exact, Fraction(0))
    if total <= 0:
        raise ValueError(f"fractions must have a positive sum, got {list(fractions)!r}")
    quotas = [f * n / total for f in exact]
    counts = [math.floor(q) for q in quotas]
    leftover = n - sum(counts)
    by_remainder = sorted(range(len(quotas)), key=lambda i: (counts[i] - quotas[i], i))
    for i in by_remainder[:leftover]:
        counts[i] += 1
    return counts


def _lookup(kind: str, name: str, table: Mapping[str, object]) -> object:
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; valid: {', '.join(sorted(table))}")
    return table[name]


def checked_mix(mix: Sequence[MixEntry], n_devices: int, rng: np.random.Generator, background_period_s: float,
                device_classes: Mapping[str, DeviceClass],
                link_classes: Mapping[str, LinkClass]) -> tuple[tuple[MixEntry, ...], list[int], list[LinkClass]]:
    """``sample_fleet``'s arguments checked: the entries, the device count of each, their link classes (with
    their ``link`` overrides applied). Raises ``ValueError`` naming what is wrong."""
    check_int_at_least("n_devices", n_devices, 0)
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    check_positive("background_period_s", background_period_s)
    entries = tuple(mix)
    if not entries:
        raise ValueError("mix must have at least one entry")
    links: list[LinkClass] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, MixEntry):
            raise ValueError(f"mix[{i}] must be a MixEntry, got {entry!r}")
        _lookup("device_class", entry.device_class, device_classes)
        _lookup("link_class", entry.link_class, link_classes)
        try:
            links.append(entry.link_class_of(link_classes))
        except ValueError as exc:
            raise ValueError(f"mix[{i}].link: {exc}") from None
    total = math.fsum(e.fraction for e in entries)
    if abs(total - 1.0) > FRACTION_SUM_TOLERANCE:
        raise ValueError(f"mix fractions must sum to 1 (within {FRACTION_SUM_TOLERANCE}), "
                         f"got {total!r}")
    return entries, largest_remainder_counts([e.fraction for e in entries], n_devices), links
