"""``DeviceClass``: the schema of one catalog entry (the entries live in ``devices.catalog``).

Each numeric field carries a citation in ``sources`` tagged as in
``shared/reference/devices.md``: **[spec]** the maker's figure, **[measured]** a third-party
measurement, **[approx]** a commonly quoted or derived figure not checked against a primary
source, **[choice]** a modelling choice of ours, with the reason.

Memory sizes are binary (``KIB`` = 1024 bytes, ``MIB``, ``GIB``) because that is how makers
state SRAM and DRAM sizes; link rates elsewhere are SI (see ``devices.links``).

Peak FLOP/s are fp32. Where a maker publishes no FLOP figure, the peak is derived as
cores x clock x fp32 FLOPs per cycle per core and tagged [approx]; ``efficiency`` then scales it
to the sustained training throughput the reference gives.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Mapping

from devices._checks import (
    check_finite_nonneg,
    check_int_at_least,
    check_positive,
    check_sources,
    check_unit_closed,
    check_unit_open_closed,
)

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB


@dataclass(frozen=True, slots=True)
class DeviceClass:
    """One kind of device. Units are in the field names; see the module docstring for sources.

    ``sources`` maps every numeric field name to its citation text; ``DeviceClass`` refuses a
    missing or unknown key. Mains-powered classes have ``battery_j`` None and ``recharge_w`` 0.
    """

    name: str
    ram_bytes: int
    runtime_reserve_bytes: int
    peak_flops_per_s: float
    efficiency: float
    flops_sigma: float
    compute_power_w: float
    battery_j: float | None
    recharge_w: float
    background_mean_fraction: float
    background_amplitude_fraction: float
    sources: Mapping[str, str] = field(hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string, got {self.name!r}")
        check_int_at_least("ram_bytes", self.ram_bytes, 1)
        check_int_at_least("runtime_reserve_bytes", self.runtime_reserve_bytes, 0)
        if self.runtime_reserve_bytes >= self.ram_bytes:
            raise ValueError(f"runtime_reserve_bytes must be < ram_bytes, got "
                             f"{self.runtime_reserve_bytes} >= {self.ram_bytes}")
        check_positive("peak_flops_per_s", self.peak_flops_per_s)
        check_unit_open_closed("efficiency", self.efficiency)
        check_finite_nonneg("flops_sigma", self.flops_sigma)
        check_positive("compute_power_w", self.compute_power_w)
        if self.battery_j is None:
            if self.recharge_w != 0:
                raise ValueError(f"recharge_w must be 0 for a mains-powered class, "
                                 f"got {self.recharge_w!r}")
        else:
            check_positive("battery_j", self.battery_j)
            check_finite_nonneg("recharge_w", self.recharge_w)
        check_unit_closed("background_mean_fraction", self.background_mean_fraction)
        check_unit_closed("background_amplitude_fraction", self.background_amplitude_fraction)
        check_sources(self.sources, DEVICE_FIGURES)
        object.__setattr__(self, "sources", MappingProxyType(dict(self.sources)))

    @property
    def sustained_flops_per_s(self) -> float:
        """Sustained training throughput of a median device of the class: peak x efficiency."""
        return self.peak_flops_per_s * self.efficiency

    @property
    def trainable_bytes(self) -> int:
        """RAM left once the runtime is loaded: ``ram_bytes - runtime_reserve_bytes``."""
        return self.ram_bytes - self.runtime_reserve_bytes


#: The numeric fields of ``DeviceClass``; each must be cited in ``sources``.
DEVICE_FIGURES = frozenset(f.name for f in fields(DeviceClass)) - {"name", "sources"}

