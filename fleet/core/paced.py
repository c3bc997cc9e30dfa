"""Virtual time held back by real devices: ``PacedEnvironment``.

Shaped as SimPy's ``RealtimeEnvironment`` (``simpy/rt.py``): a subclass that overrides only
``step()``. Where the real-time environment sleeps until the wall clock reaches the next event, this
one processes the next event only once it lies at or before ``horizon()``, the virtual time up to
which nothing outside the simulation (a real device's reply, its death) can still land; until then
it waits in ``poll(timeout_s)``, the callback that takes in what the outside world sent (and may
move the horizon). With the horizon at infinity it runs at full speed, servicing ``poll(0)`` every
``service_every_s`` of wall time. ``docs/bridge.md`` ("Pacing") says where the bridge's horizon
comes from.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import simpy

__all__ = ["PacedEnvironment"]

Clock = Callable[[], float]


def _unbounded() -> float:
    return math.inf


def _no_poll(_timeout_s: float) -> None:
    pass


class PacedEnvironment(simpy.Environment):
    """A SimPy environment whose ``step()`` never passes ``horizon()``.

    ``horizon()`` returns a virtual time in seconds; it may only grow as wall time passes or as
    ``poll`` takes things in (a horizon that never reaches a pending event would wait forever).
    ``poll(timeout_s)`` handles what arrived, waiting up to ``timeout_s`` wall seconds for the first
    thing; it may schedule events. ``clock`` (wall seconds, ``time.monotonic`` by default) only times
    the periodic service. Both callbacks can be set after construction with ``pace``, since what
    computes the horizon usually needs the environment first.
    """

    def __init__(self, initial_time: float = 0, horizon: Callable[[], float] = _unbounded,
                 poll: Callable[[float], None] = _no_poll, service_every_s: float = 0.05,
                 clock: Clock = time.monotonic) -> None:
        super().__init__(initial_time)
        if service_every_s <= 0:
            raise ValueError(f"service_every_s must be > 0, got {service_every_s}")
        self.horizon, self.poll = horizon, poll
        self.service_every_s = service_every_s
        self._clock = clock
        self._serviced_s = clock()

    def pace(self, horizon: Callable[[], float], poll: Callable[[float], None]) -> None:
        """Hold virtual time at ``horizon()`` and take in the outside world with ``poll``."""
        self.horizon, self.poll = horizon, poll

    def step(self) -> None:
        """Process the next event once it lies at or before the horizon, polling while it does not.

        Waits (in ``poll``) at most ``service_every_s``, and never longer than the gap between the
        horizon and the next event, since the horizon may advance with wall time. Raises
        ``simpy.core.EmptySchedule`` when no event is scheduled and the horizon is unbounded:
        then nothing can ever happen."""
        while True:
            next_s = self.peek()
            horizon_s = self.horizon()
            if next_s <= horizon_s:
                break
            wait_s = self.service_every_s if next_s == math.inf else min(self.service_every_s,
                                                                           next_s - horizon_s)
            self.poll(wait_s)
            self._serviced_s = self._clock()
        super().step()
        if self._clock() - self._serviced_s >= self.service_every_s:
            self.poll(0.0)
            self._serviced_s = self._clock()
