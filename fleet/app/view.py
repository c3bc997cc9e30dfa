"""What the face reads of the fleet, whichever worlds the run used: the memory a task asks of each device
(``task_peak_bytes``, ``task_peak_bytes_all``) and the fleet's readings for every device at once
(``classes_of``, ``free_bytes_of``, ``real_mask_of``).

The rest of what the face reads is on the ``Simulation``: ``sim.fleet`` (one ``FleetView`` over the
simulated and the real devices) and ``sim.record`` (the learning's read side, empty in timing mode), so
the study, the report and the CLI never ask whether a bridge exists or whether learning ran.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

from fleet.core.view import FleetView, codes_of

if TYPE_CHECKING:
    from fleet.app.simulation import Simulation

__all__ = ["classes_of", "free_bytes_of", "real_mask_of", "task_peak_bytes", "task_peak_bytes_all"]


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


def task_peak_bytes_all(sim: Simulation, phase: str) -> np.ndarray | None:
    """``task_peak_bytes`` for every device of ``sim.fleet`` at once (int64, in device order); the demand is
    worked out once per distinct amount of data, not once per device."""
    config = sim.task_configs.get(phase)
    if config is None:
        return None
    n = len(sim.fleet.devices)
    plane = sim.learning
    if plane is None:
        return np.full(n, sim.demands[phase].peak_memory_bytes, dtype=np.int64)
    algorithm, parts = plane.algorithm, plane.partitions
    sizes = np.array([len(parts[d]) for d in sim.fleet.devices], dtype=np.int64)
    distinct, where = np.unique(sizes, return_inverse=True)
    peaks = [algorithm.demand(algorithm.fit_config(config, int(s))).peak_memory_bytes for s in distinct]
    return np.array(peaks, dtype=np.int64)[where.reshape(-1)]


def classes_of(fleet: FleetView) -> tuple[list[str], np.ndarray]:
    """``fleet.class_codes()``: the classes (sorted) and each device's index into them (one call per device
    for a view without it)."""
    bulk = getattr(fleet, "class_codes", None)
    return bulk() if bulk is not None else codes_of([fleet.device_class(d) for d in fleet.devices])


def free_bytes_of(fleet: FleetView, t_s: float) -> np.ndarray:
    """``fleet.free_bytes_all(t_s)``: every device's free memory at ``t_s`` (int64)."""
    bulk = getattr(fleet, "free_bytes_all", None)
    if bulk is not None:
        return bulk(t_s)
    return np.array([fleet.free_bytes_at(d, t_s) for d in fleet.devices], dtype=np.int64)


def real_mask_of(fleet: FleetView) -> np.ndarray:
    """``fleet.real_mask()``: which devices are real."""
    bulk = getattr(fleet, "real_mask", None)
    return bulk() if bulk is not None else np.array([fleet.is_real(d) for d in fleet.devices], dtype=bool)
