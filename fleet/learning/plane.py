"""The learning plane: where the real torch work of local updates is planned, run and aggregated, decoupled
from virtual time.

``LearningPlane`` implements the coordinator's ``LocalWork``: a task is *submitted* when it is dispatched
(with the model version it downloads), *cancelled* when it drops out, *collected* when its update is
accepted, and the collected updates are *aggregated* when the coordinator aggregates. Only then does the work
run, in one batch, on a ``Backend`` (``fleet.learning.backends``): so a straggler the round gave up on, or a
device that refused, costs no real computation, and the clients of one aggregation compute together
(vectorized or in parallel) while the event loop keeps its own order. It talks to the algorithm only through
``algorithms.base``: the cost side (``task``, ``demand``) and the learning side (``init``, ``fit_config``,
``aggregate``, ``evaluate``; the backend calls ``fit`` or the batched kernel).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Sequence

import numpy as np

from algorithms.base import LEARNING_PLANE_MISSING, Algorithm, Learner, ResourceDemand, TaskConfig
from algorithms.local import ClientData, ClientResult, ModelState, derive_seed
from fleet.core.messages import Task
from fleet.core.rng import PURPOSES
from fleet.learning.backends import Backend, Job
from fleet.learning.checkpoints import CheckpointStore

__all__ = ["LearningPlane", "Evaluation"]


@dataclass(frozen=True)
class Evaluation:
    """The global model measured on the held-out set at virtual time ``time_s``."""

    time_s: float
    model_version: int
    accuracy: float
    loss: float
    client_flops: int
    bytes_up: int
    bytes_down: int


@dataclass
class LearningPlane:
    """The coordinator's ``LocalWork`` in learning mode: global state, pending jobs, aggregation, evaluation."""

    algorithm: Algorithm
    backend: Backend
    run_seed: int
    train_x: object  # torch tensors of the whole training split (clients index into them)
    train_y: object
    test_x: object
    test_y: object
    partitions: Sequence[np.ndarray]
    evaluate_every_round: bool = True
    checkpoints: CheckpointStore | None = None
    state: ModelState = field(init=False)
    version: int = field(init=False, default=0)
    jobs_run: int = field(init=False, default=0)
    versions_resumed: int = field(init=False, default=0)
    evaluations: list[Evaluation] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.algorithm, Learner):
            raise ValueError(LEARNING_PLANE_MISSING.format(name=self.algorithm.name))
        self.state = self.algorithm.init(derive_seed(self.run_seed, PURPOSES["model_init"]))
        self._states: dict[int, ModelState] = {0: self.state}
        self._pending: dict[int, Job] = {}  # submitted, not yet resolved
        self._collected: dict[int, Job] = {}  # accepted, waiting for the aggregation
        self._provided: dict[int, ClientResult] = {}  # results computed elsewhere (real devices)
        self._demand = lru_cache(maxsize=None)(self.algorithm.demand)
        self._metrics: dict[int, dict[str, float]] = {}
        self._x, self._y = np.asarray(self.train_x), np.asarray(self.train_y)  # numpy views of the same memory

    # --- the plan: what a task asks of one device, given the current state -----------------------------
    def plan(self, round_index: int, device: int) -> tuple[TaskConfig, ResourceDemand]:
        config = self.algorithm.task(round_index, self.state)
        config = self.algorithm.fit_config(config, len(self.partitions[device]))
        return config, self._demand(config)

    # --- LocalWork -------------------------------------------------------------------------------------
    def submit(self, task: Task) -> None:
        config = task.config
        seed = derive_seed(self.run_seed, PURPOSES["local"], task.device, task.round_index, task.task_id)
        self._pending[task.task_id] = Job(task.task_id, task.device, task.round_index, task.model_version,
                                          config, seed)

    def cancel(self, task_id: int) -> None:
        self._pending.pop(task_id, None)
        self._collected.pop(task_id, None)
        self._provided.pop(task_id, None)
        self._forget_unused_states()

    def job(self, task_id: int) -> tuple[Job, ModelState]:
        """A submitted task's job and the global state it starts from (what a real device is sent)."""
        job = self._pending[task_id]
        return job, self._states[job.version]

    def provide(self, task_id: int, result: ClientResult) -> None:
        """The update of ``task_id`` was computed outside this process (a real device); it is aggregated
        like any other, and never computed here."""
        self._provided[task_id] = result

    def collect(self, task: Task) -> None:
        job = self._pending.pop(task.task_id, None)
        if job is not None:
            self._collected[task.task_id] = job

    def aggregate(self, task_ids: Sequence[int], weights: Sequence[float]) -> None:
        """Compute the collected updates ``task_ids`` and fold them (with ``weights``) into a new version.

        With ``checkpoints``, a sound file of the new version is loaded instead; a missing or unsound one
        (reported by the store) is computed here and written. Metrics always come from the weights."""
        order = sorted(range(len(task_ids)), key=lambda i: task_ids[i])
        jobs = [self._collected.pop(task_ids[i]) for i in order]
        store = self.checkpoints
        resumed = store.load(self.version + 1, self.state) if store is not None else None
        if resumed is not None:
            self.state = resumed
            self.versions_resumed += 1
        else:
            local = [j for j in jobs if j.task_id not in self._provided]
            computed = iter(self.backend.run(self.algorithm, self._states, local, self._data))
            self.jobs_run += len(local)
            results = [self._provided.pop(j.task_id) if j.task_id in self._provided else next(computed)
                       for j in jobs]
            self.state = self.algorithm.aggregate(self.state, results, [weights[i] for i in order])
        self.version += 1
        self._states[self.version] = self.state
        self._forget_unused_states()
        if resumed is None and store is not None:
            store.save(self.version, self.state)
        if self.evaluate_every_round:
            self.metrics()  # from the weights, loaded or computed alike

    def _forget_unused_states(self) -> None:
        live = {j.version for j in self._pending.values()} | {j.version for j in self._collected.values()}
        live.add(self.version)
        for v in [v for v in self._states if v not in live]:
            del self._states[v]

    def _data(self, device: int) -> ClientData:
        """The device's samples: its rows of the training split, copied per job (tens of microseconds in
        numpy, which runs no OpenMP threads), and never kept: a kept copy per device would duplicate the
        training split over a run."""
        import torch

        idx = self.partitions[device]
        return ClientData(torch.from_numpy(self._x[idx]), torch.from_numpy(self._y[idx]))

    # --- evaluation ----------------------------------------------------------------------------------
    @property
    def metrics_by_version(self) -> dict[int, dict[str, float]]:
        return self._metrics

    def metrics(self) -> dict[str, float]:
        """Accuracy and loss of the current global model (computed once per version)."""
        found = self._metrics.get(self.version)
        if found is None:
            found = self._metrics[self.version] = self.algorithm.evaluate(self.state, self.test_x, self.test_y)
        return found

    def record_evaluation(self, time_s: float, client_flops: int, bytes_up: int, bytes_down: int) -> Evaluation:
        m = self.metrics()
        ev = Evaluation(time_s, self.version, m["accuracy"], m["loss"], client_flops, bytes_up, bytes_down)
        self.evaluations.append(ev)
        return ev

    def close(self) -> None:
        self.backend.close()
