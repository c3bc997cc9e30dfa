"""The simulation kernel: a SimPy environment, seeded RNG streams (``fleet.core.rng``) and the event
recorder (``fleet.core.recorder``), one of each per run."""

from __future__ import annotations

import simpy

from fleet.core.recorder import EVENT_COLUMNS, EventRecorder
from fleet.core.rng import FLEET_WIDE, PURPOSES, DeviceDraws, RngStreams

__all__ = ["Kernel", "EVENT_COLUMNS", "EventRecorder", "FLEET_WIDE", "PURPOSES", "DeviceDraws", "RngStreams"]


class Kernel:
    """The run's clock and its sources of randomness and record: one per simulation.

    ``env`` is the clock: a plain ``simpy.Environment`` by default, or one that paces virtual time
    (``fleet.core.paced.PacedEnvironment``) when real devices take part."""

    def __init__(self, seed: int, env: simpy.Environment | None = None) -> None:
        self.env = simpy.Environment() if env is None else env
        self.rng = RngStreams(seed)
        self.recorder = EventRecorder()
