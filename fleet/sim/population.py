"""Per-device facts of a large simulated fleet, kept as arrays and made into objects only when asked for.

A fleet of millions cannot hold an availability timeline and a battery object per device, and most
devices never receive a task. ``LazyAvailability`` makes device ``d``'s timeline the first time the
simulator asks for it (from its mix entry's maker, which reads the per-device draws made at build
time) and keeps it; ``OptionalFloats`` is a float array read as ``float | None`` (NaN for None).
Both are plain ``Sequence``s, so the simulated devices take them as they take lists.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from devices import Availability

__all__ = ["LazyAvailability", "OptionalFloats"]


class LazyAvailability(Sequence[Availability]):
    """``availability[d]`` is ``makers[entry_of[d]](d)``, made on first use and kept.

    A maker must be a function of the device alone (its own draws and random streams), so the timeline
    of a device does not depend on which other devices were asked for first, or whether they were."""

    def __init__(self, entry_of: np.ndarray, makers: Sequence[Callable[[int], Availability]]) -> None:
        self._entry_of = entry_of
        self._makers = tuple(makers)
        self._made: dict[int, Availability] = {}

    def __len__(self) -> int:
        return len(self._entry_of)

    def __getitem__(self, device):
        if isinstance(device, slice):
            return [self[i] for i in range(*device.indices(len(self)))]
        made = self._made.get(device)
        if made is None:
            if not 0 <= device < len(self):
                raise IndexError(f"device {device} is not in a fleet of {len(self)}")
            made = self._made[device] = self._makers[self._entry_of[device]](int(device))
        return made


class OptionalFloats(Sequence):
    """A float64 array read as ``float | None``: NaN reads as None."""

    def __init__(self, values: np.ndarray) -> None:
        self._values = values

    def __len__(self) -> int:
        return len(self._values)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        value = self._values.item(i)
        return None if math.isnan(value) else value
