"""What the face reads of a finished run, whichever worlds it ran in: the single place that knows them.

``view_of`` gives the fleet as one ``FleetView`` (simulated devices, then the real ones behind the bridge,
by device id); ``record_of`` the learning's read side (``NullWork``'s empty one in timing mode);
``task_peak_bytes`` the memory a task asks of each device. The study, the report and the CLI read these
and never ask whether a bridge exists or whether learning ran.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from fleet.core.view import FleetView
from fleet.core.work import LearningRecord

if TYPE_CHECKING:
    from fleet.app.simulation import Simulation

__all__ = ["record_of", "task_peak_bytes", "view_of"]


def view_of(sim: Simulation) -> FleetView:
    """Every device of ``sim``: the simulated ones (``0 .. first_real - 1``), then the real ones (the build
    joins the two views, ``fleet.app.build``)."""
    return sim.fleet


def record_of(sim: Simulation) -> LearningRecord:
    """What ``sim``'s learning left to read: the learning plane, or NullWork's empty record in timing mode."""
    return sim.record


def task_peak_bytes(sim: Simulation, phase: str) -> Callable[[int], int] | None:
    """Device -> peak memory of the run's nominal ``phase`` task on it (``sim.task_configs``): fitted to
    the device's data when it learns (``Learner.fit_config``), the round's one demand in timing mode;
    None when no opening round has that phase."""
    config = sim.task_configs.get(phase)
    if config is None:
        return None
    plane = sim.learning
    if plane is None:
        peak = sim.demands[phase].peak_memory_bytes
        return lambda device: peak
    algorithm, parts = plane.algorithm, plane.partitions

    def fitted(device: int) -> int:
        return algorithm.demand(algorithm.fit_config(config, len(parts[device]))).peak_memory_bytes

    return fitted
