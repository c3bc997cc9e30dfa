"""What the face reads of the fleet, simulated and real devices alike: ``FleetView``.

The simulated devices (``fleet.sim.view``) and the real devices behind the bridge (``fleet.bridge.view``)
each implement it over the device ids they hold; ``JoinedView`` puts views of consecutive id ranges
together, so the study and the report never ask which world a device lives in.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Mapping, Protocol, Sequence

import numpy as np

__all__ = ["FleetView", "JoinedView", "codes_of"]


class FleetView(Protocol):
    """Devices as the study sees them, by fleet-wide device id.

    ``devices``: the ids this view answers for, consecutive. ``device_class(d)``: the class the study
    groups ``d`` under. ``free_bytes_at(d, t_s)``: memory free for a task on ``d`` at virtual time ``t_s``
    (what the device itself says: a real device's figure is the one it reported when it last attached,
    whatever ``t_s``). ``is_real(d)``: ``d`` is a physical device. ``flops_spent``: FLOPs the devices spent
    on tasks (a simulated device's computed work, interrupted work pro rata; a real device's accepted
    tasks at the cost model's figure). ``real_updates_accepted``: updates from real devices the
    coordinator accepted. ``rejected``: what the devices sent that was rejected (bad frames, wrong or
    stale updates, failed handshakes), count by reason; ids outside ``devices`` raise ``IndexError`` or
    ``KeyError``.

    The same, for every device at once (a study of millions of devices reads these, not one call each),
    in the order of ``devices``: ``class_codes()``, the distinct classes (sorted) and each device's index
    into them; ``free_bytes_all(t_s)``, each device's ``free_bytes_at(d, t_s)`` (int64); ``real_mask()``,
    each device's ``is_real(d)``.
    """

    @property
    def devices(self) -> range: ...
    def device_class(self, device: int) -> str: ...
    def free_bytes_at(self, device: int, t_s: float) -> int: ...
    def is_real(self, device: int) -> bool: ...
    @property
    def flops_spent(self) -> int: ...
    @property
    def real_updates_accepted(self) -> int: ...
    @property
    def rejected(self) -> Mapping[str, int]: ...
    def class_codes(self) -> tuple[list[str], np.ndarray]: ...
    def free_bytes_all(self, t_s: float) -> np.ndarray: ...
    def real_mask(self) -> np.ndarray: ...


def codes_of(classes: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """(the distinct ``classes``, sorted; each one's index into them): ``class_codes`` from a list of names."""
    names, codes = np.unique(np.asarray(classes, dtype=str), return_inverse=True)
    return names.tolist(), codes.astype(np.int32).reshape(-1)


class JoinedView:
    """Views of consecutive id ranges as one: a device's questions go to the view that holds it, the
    fleet-wide figures are sums. ``ValueError`` unless each view's ids start where the previous ended."""

    def __init__(self, views: Sequence[FleetView]) -> None:
        if not views:
            raise ValueError("JoinedView needs at least one view")
        for before, after in zip(views, views[1:]):
            if before.devices.stop != after.devices.start:
                raise ValueError(f"device ids must be consecutive: {before.devices} then {after.devices}")
        held = [v for v in views if len(v.devices)]
        self._views = tuple(views)
        self._held = tuple(held)
        self._starts = [v.devices.start for v in held]
        self.devices = range(views[0].devices.start, views[-1].devices.stop)

    def _of(self, device: int) -> FleetView:
        if device not in self.devices:
            raise IndexError(f"device {device} is not in {self.devices}")
        return self._held[bisect_right(self._starts, device) - 1]

    def device_class(self, device: int) -> str:
        return self._of(device).device_class(device)

    def free_bytes_at(self, device: int, t_s: float) -> int:
        return self._of(device).free_bytes_at(device, t_s)

    def is_real(self, device: int) -> bool:
        return self._of(device).is_real(device)

    def class_codes(self) -> tuple[list[str], np.ndarray]:
        parts = [v.class_codes() for v in self._views]
        names = sorted({name for part_names, _ in parts for name in part_names})
        index = {name: i for i, name in enumerate(names)}
        return names, np.concatenate([np.array([index[n] for n in part_names], dtype=np.int32)[codes]
                                      for part_names, codes in parts]).astype(np.int32)

    def free_bytes_all(self, t_s: float) -> np.ndarray:
        return np.concatenate([v.free_bytes_all(t_s) for v in self._views]).astype(np.int64)

    def real_mask(self) -> np.ndarray:
        return np.concatenate([v.real_mask() for v in self._views]).astype(bool)

    @property
    def flops_spent(self) -> int:
        return sum(v.flops_spent for v in self._views)

    @property
    def real_updates_accepted(self) -> int:
        return sum(v.real_updates_accepted for v in self._views)

    @property
    def rejected(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for view in self._views:
            for reason, count in view.rejected.items():
                out[reason] = out.get(reason, 0) + count
        return out
