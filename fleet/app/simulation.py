"""A wired run (``Simulation``) and how it is driven to the end; ``fleet.app.build`` wires it.
``run_scenario`` builds and runs one scenario: what the CLI (``fleet.app.run``) and the Python API
(``fleet.simulate``) both call, so the two give the same run.

A run is driven the same way whoever takes part: ``env.run`` until the coordinator is done or
``max_sim_time_s``. With real devices the clock is a ``fleet.core.paced.PacedEnvironment``, which holds
virtual time back for them; nothing here needs to know.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from algorithms.base import Algorithm, ResourceDemand, TaskConfig
from devices import (
    Availability,
    DeviceProfile,
)
from fleet.app.scenario import Scenario, ScenarioError
from fleet.coordinator.base import Coordinator
from fleet.core.kernel import Kernel
from fleet.core.transport import Transport
from fleet.core.view import FleetView
from fleet.core.work import LearningRecord, NullWork
from fleet.learning.plane import LearningPlane
from fleet.sim.devices import SimulatedDevices
from fleet.sim.network import SimulatedNetwork


@dataclass
class Simulation:
    """A wired run. ``run()`` advances virtual time until the coordinator is done.

    ``transport`` is the coordinator's (the simulated network, or the bridge wrapping it); ``run`` closes
    it at the end."""

    scenario: Scenario
    kernel: Kernel
    profiles: list[DeviceProfile]
    availability: list[Availability]
    network: SimulatedNetwork
    devices: SimulatedDevices
    algorithm: Algorithm
    coordinator: Coordinator
    transport: Transport
    fleet: FleetView  # every device, simulated then real, as the study reads them
    stopped_by: str = ""
    wall_s: float = 0.0
    demands: dict[str, ResourceDemand] = field(default_factory=dict)
    task_configs: dict[str, TaskConfig] = field(default_factory=dict)  # phase -> the round's nominal task
    learning: LearningPlane | None = None
    bridge: object | None = None  # the BridgeTransport, when real devices take part
    server_demand: ResourceDemand | None = None  # work the server itself does (e.g. data-free pruning)

    def run(self, on_round: Callable[[int], None] | None = None) -> "Simulation":
        env = self.kernel.env
        coord = self.coordinator
        every_round = self.learning is not None and self.scenario.evaluation.every_round

        def round_ended(done: int) -> None:
            if every_round:
                self._evaluate_now()
            if on_round is not None:
                on_round(done)

        coord.on_round_end = round_ended
        started = time.perf_counter()
        env.process(coord.process())
        if self.learning is not None:
            env.process(self._evaluations())
        limit = env.timeout(self.scenario.max_sim_time_s)
        try:
            env.run(until=coord.finished | limit)
            if self.learning is not None:
                self._evaluate_now()
        finally:
            self.record.close()
            self.transport.close()
        self.stopped_by = coord.stopped_by if coord.finished.triggered else "max_sim_time"
        self.wall_s = time.perf_counter() - started
        return self

    def _evaluate_now(self) -> None:
        plane = self.learning
        if plane.evaluations and plane.evaluations[-1].time_s == self.sim_time_s \
                and plane.evaluations[-1].model_version == plane.version:
            return
        sent = self.network.bytes_sent
        plane.record_evaluation(self.sim_time_s, self.client_flops, sent[True], sent[False])

    def _evaluations(self):
        """Evaluate the global model every ``evaluation.interval_s`` of virtual time."""
        interval_s = self.scenario.evaluation.interval_s
        while True:
            self._evaluate_now()
            yield self.kernel.env.timeout(interval_s)

    @property
    def record(self) -> LearningRecord:
        """What the run's learning left to read: the learning plane, or NullWork's empty record in timing mode."""
        return self.learning if self.learning is not None else NullWork()

    @property
    def client_flops(self) -> int:
        """FLOPs the clients spent: simulated devices' computed work, plus real devices' accepted tasks."""
        return self.fleet.flops_spent

    @property
    def sim_time_s(self) -> float:
        return float(self.kernel.env.now)

    @property
    def event_log_sha256(self) -> str:
        """SHA-256 of the event log's CSV text: ``summary.json``'s ``event_log_sha256``, whether or not the
        log is written (``fleet.core.recorder.EventRecorder.sha256``)."""
        return self.kernel.recorder.sha256()


def checkpoint_dir(scenario: Scenario, out: Path, resume: bool = False) -> Path | None:
    """Where a run written to ``out`` keeps its checkpoints: ``out/checkpoints`` in learning mode (emptied
    first unless ``resume``: a fresh run never mixes in another run's states), None in timing mode."""
    if scenario.mode != "learning":
        return None
    checkpoints = out / "checkpoints"
    if checkpoints.exists() and not resume:
        shutil.rmtree(checkpoints)
    return checkpoints


def run_scenario(scenario: Scenario, checkpoints: Path | None = None,
                 on_round: Callable[[int], None] | None = None) -> Simulation:
    """Build ``scenario`` (``fleet.app.build.build_simulation``) and run it to the end; the finished
    ``Simulation``. ``checkpoints``: the folder of its learning checkpoints (``checkpoint_dir``), None for
    none. ``on_round(rounds_done)`` is called after each round. A value only found while building raises
    ``ScenarioError`` naming the field; ``fleet.learning.backends.BackendUnavailable`` comes through when
    the executor goes away mid-run."""
    from fleet.app.build import build_simulation  # build imports this module: imported when called

    try:
        sim = build_simulation(scenario, checkpoints)
    except ValueError as exc:
        raise ScenarioError(str(exc)) from None
    return sim.run(on_round)
