"""What a device is: the catalog with cited figures, link classes, physics, availability, sampling.

Pure functions and frozen dataclasses on numpy and the standard library only. Import public
names from here; the submodules are the implementation.
"""

from devices.availability import AllOf, AlwaysOn, Availability, Diurnal, RandomFailure
from devices.background import BackgroundMemory
from devices.catalog import DEVICE_CLASSES, DEVICE_FIGURES, GIB, KIB, MIB, DeviceClass
from devices.links import GATEWAY_KINDS, LINK_CLASSES, LINK_FIGURES, LinkClass
from devices.physics import (
    battery_level_j,
    compute_time_s,
    energy_j,
    fits_memory,
    framed_transfer_time_s,
    framed_transfer_time_scalar_s,
    free_memory_bytes,
    joules_per_flop,
    serialization_time_s,
)
from devices.sampled import SampledFleet, sample_fleet, sample_fleet_arrays
from devices.sampling import (
    FRACTION_SUM_TOLERANCE,
    LINK_OVERRIDES,
    DeviceProfile,
    MixEntry,
    largest_remainder_counts,
)

__all__ = [
    "DEVICE_CLASSES",
    "DEVICE_FIGURES",
    "FRACTION_SUM_TOLERANCE",
    "GATEWAY_KINDS",
    "GIB",
    "KIB",
    "LINK_CLASSES",
    "LINK_FIGURES",
    "LINK_OVERRIDES",
    "MIB",
    "AllOf",
    "AlwaysOn",
    "Availability",
    "BackgroundMemory",
    "DeviceClass",
    "DeviceProfile",
    "Diurnal",
    "LinkClass",
    "MixEntry",
    "RandomFailure",
    "SampledFleet",
    "battery_level_j",
    "compute_time_s",
    "energy_j",
    "fits_memory",
    "framed_transfer_time_s",
    "framed_transfer_time_scalar_s",
    "free_memory_bytes",
    "joules_per_flop",
    "largest_remainder_counts",
    "sample_fleet",
    "sample_fleet_arrays",
    "serialization_time_s",
]
