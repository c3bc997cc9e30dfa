"""The memory a task asks of each device, whichever worlds the run used: ``task_peak_bytes``.

The rest of what the face reads is on the ``Simulation``: ``sim.fleet`` (one ``FleetView`` over the
simulated and the real devices) and ``sim.record`` (the learning's read side, empty in timing mode), so
the study, the report and the CLI never ask whether a bridge exists or whether learning ran.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from fleet.app.simulation import Simulation

__all__ = ["task_peak_bytes"]


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
