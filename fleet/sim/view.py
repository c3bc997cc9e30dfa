"""The simulated devices as the face sees them: ``SimulatedView``, a ``fleet.core.view.FleetView``."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from devices import DeviceProfile, SampledFleet
from fleet.core.view import codes_of
from fleet.sim.devices import SimulatedDevices

__all__ = ["SimulatedView"]


class SimulatedView:
    """``FleetView`` of the simulated devices ``0 .. len(profiles) - 1``, their classes from ``profiles``,
    the rest read from ``devices`` (free memory at any virtual time, FLOPs computed). Simulated devices
    are never real and send nothing to reject. With ``profiles`` a ``SampledFleet``, the readings of every
    device at once come from its arrays, without a profile object per device."""

    def __init__(self, devices: SimulatedDevices, profiles: Sequence[DeviceProfile]) -> None:
        self._devices = devices
        self._profiles = profiles
        self.devices = range(len(profiles))
        self._free: tuple[float, np.ndarray] | None = None

    def _held(self, device: int) -> int:
        if device not in self.devices:
            raise IndexError(f"device {device} is not simulated here ({self.devices})")
        return device

    def device_class(self, device: int) -> str:
        if isinstance(self._profiles, SampledFleet):
            return self._profiles.device_class_of(self._held(device))
        return self._profiles[self._held(device)].device_class

    def free_bytes_at(self, device: int, t_s: float) -> int:
        return self._devices.free_memory_bytes(self._held(device), t_s)

    def is_real(self, device: int) -> bool:
        self._held(device)
        return False

    def class_codes(self) -> tuple[list[str], np.ndarray]:
        if isinstance(self._profiles, SampledFleet):
            return self._profiles.class_codes()
        return codes_of([p.device_class for p in self._profiles])

    def free_bytes_all(self, t_s: float) -> np.ndarray:
        """Every device's free memory at ``t_s``, equal to ``free_bytes_at`` device by device (the last time
        asked is kept: the study reads t = 0 several times). Read-only."""
        if self._free is not None and self._free[0] == t_s:
            return self._free[1]
        if isinstance(self._profiles, SampledFleet):
            free = self._profiles.free_bytes_at_all(t_s)
        else:
            free = np.array([self._devices.free_memory_bytes(d, t_s) for d in self.devices], dtype=np.int64)
        free.flags.writeable = False
        self._free = (t_s, free)
        return free

    def real_mask(self) -> np.ndarray:
        return np.zeros(len(self.devices), dtype=bool)

    @property
    def flops_spent(self) -> int:
        return self._devices.flops_spent_total

    @property
    def real_updates_accepted(self) -> int:
        return 0

    @property
    def rejected(self) -> dict[str, int]:
        return {}
