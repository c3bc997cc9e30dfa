"""The real devices behind the bridge as the face sees them: ``RealView``, a ``fleet.core.view.FleetView``.

Torch-free and ZeroMQ-free: it reads the bridge's public figures, nothing else.
"""

from __future__ import annotations

from typing import Mapping, Protocol

import numpy as np

from fleet.core.view import codes_of

__all__ = ["RealView", "real_class"]


def real_class(device_class: str) -> str:
    """The class the study groups a real device under: ``real:`` and the class it named in its hello."""
    return f"real:{device_class}"


class _Attached(Protocol):
    device_class: str
    free_memory_bytes: int


class _Bridge(Protocol):
    """What ``RealView`` reads of ``fleet.bridge.transport.BridgeTransport``."""

    first_real: int
    real: Mapping[int, _Attached]
    real_flops: int
    real_updates_accepted: int

    @property
    def rejected(self) -> Mapping[str, int]: ...


class RealView:
    """``FleetView`` of the real devices ``first_real ..``, one per device that attached (``bridge.real``:
    fleet index -> device). Free memory is what a device reported when it last attached; FLOPs are the
    cost model's for its accepted updates; ``rejected`` is everything the bridge refused."""

    def __init__(self, bridge: _Bridge) -> None:
        self._bridge = bridge

    @property
    def devices(self) -> range:
        first = self._bridge.first_real
        return range(first, first + len(self._bridge.real))

    def device_class(self, device: int) -> str:
        return real_class(self._bridge.real[device].device_class)

    def free_bytes_at(self, device: int, t_s: float) -> int:
        return self._bridge.real[device].free_memory_bytes

    def is_real(self, device: int) -> bool:
        if device not in self._bridge.real:
            raise KeyError(f"device {device} is not a real device here ({self.devices})")
        return True

    def class_codes(self) -> tuple[list[str], np.ndarray]:
        return codes_of([self.device_class(d) for d in self.devices])

    def free_bytes_all(self, t_s: float) -> np.ndarray:
        return np.array([self.free_bytes_at(d, t_s) for d in self.devices], dtype=np.int64)

    def real_mask(self) -> np.ndarray:
        return np.ones(len(self.devices), dtype=bool)

    @property
    def flops_spent(self) -> int:
        return self._bridge.real_flops

    @property
    def real_updates_accepted(self) -> int:
        return self._bridge.real_updates_accepted

    @property
    def rejected(self) -> Mapping[str, int]:
        return self._bridge.rejected
