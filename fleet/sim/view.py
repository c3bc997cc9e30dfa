"""The simulated devices as the face sees them: ``SimulatedView``, a ``fleet.core.view.FleetView``."""

from __future__ import annotations

from typing import Sequence

from devices import DeviceProfile
from fleet.sim.devices import SimulatedDevices

__all__ = ["SimulatedView"]


class SimulatedView:
    """``FleetView`` of the simulated devices ``0 .. len(profiles) - 1``, their classes from ``profiles``,
    the rest read from ``devices`` (free memory at any virtual time, FLOPs computed). Simulated devices
    are never real and send nothing to reject."""

    def __init__(self, devices: SimulatedDevices, profiles: Sequence[DeviceProfile]) -> None:
        self._devices = devices
        self._profiles = profiles
        self.devices = range(len(profiles))

    def _held(self, device: int) -> int:
        if device not in self.devices:
            raise IndexError(f"device {device} is not simulated here ({self.devices})")
        return device

    def device_class(self, device: int) -> str:
        return self._profiles[self._held(device)].device_class

    def free_bytes_at(self, device: int, t_s: float) -> int:
        return self._devices.free_memory_bytes(self._held(device), t_s)

    def is_real(self, device: int) -> bool:
        self._held(device)
        return False

    @property
    def flops_spent(self) -> int:
        return self._devices.flops_spent_total

    @property
    def real_updates_accepted(self) -> int:
        return 0

    @property
    def rejected(self) -> dict[str, int]:
        return {}
