"""The executor: where the real torch work of local updates runs, decoupled from virtual time.

``LearningPlane`` implements the coordinator's ``LocalWork``: a task is *submitted* when it is dispatched
(with the model version it downloads), *cancelled* when it drops out, *collected* when its update is
accepted, and the collected updates are *aggregated* when the coordinator aggregates. Only then does the work
run, in one batch, on a ``Backend``: so a straggler the round gave up on, or a device that refused, costs no
real computation, and the clients of one aggregation compute together (vectorized or in parallel) while the
event loop keeps its own order.

Why results do not depend on how they are computed: each update is a function of (the global state it
started from, its task, its client's data, its seed), and the seed is derived from (run seed, device, round,
task id). The backends only decide where and in which grouping that function is evaluated; the aggregation
order is fixed (task id). Sequential and process-pool backends run the same code and give bit-identical
weights; the vectorized backend computes the same formulas with batched kernels whose float rounding can
differ (docs/learning.md states and tests the bound).

Backends: ``sequential`` (in this process), ``process_pool`` (spawned workers that load the data themselves),
``vectorized`` (``algorithms.batched``: many clients in one computation). A Ray backend would implement
``Backend.run`` the same way as the pool.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Sequence

import numpy as np

from algorithms.base import Algorithm, ResourceDemand, TaskConfig
from algorithms.local import ClientData, ClientResult, ModelState, derive_seed
from fleet.learning.checkpoints import CheckpointStore, CheckpointWriteError
from fleet.core.rng import PURPOSES
from fleet.core.messages import Task

__all__ = ["Job", "CheckpointStore", "CheckpointWriteError", "Backend", "SequentialBackend",
           "ProcessPoolBackend", "VectorizedBackend", "BACKENDS", "make_backend", "LearningPlane",
           "Evaluation", "ClientDataSource"]


@dataclass(frozen=True)
class Job:
    """One local update to compute: everything it depends on except the weights and the data."""

    task_id: int
    device: int
    round_index: int
    version: int  # the global model version it starts from
    config: TaskConfig
    seed: int


@dataclass(frozen=True)
class ClientDataSource:
    """How to get a client's samples: the dataset (by name, so workers can load it) and index arrays."""

    dataset: str
    data_dir: str | None
    partitions: tuple[np.ndarray, ...]

    def load(self):
        from algorithms.datasets import load_dataset

        return load_dataset(self.dataset, self.data_dir)


def _client_data(train_x, train_y, indices: np.ndarray) -> ClientData:
    import torch

    idx = torch.from_numpy(np.asarray(indices, dtype=np.int64))
    return ClientData(train_x[idx], train_y[idx])


class Backend(ABC):
    """Computes a batch of jobs. ``run`` returns results in the order of ``jobs``."""

    name: str

    @abstractmethod
    def run(self, algorithm: Algorithm, states: dict[int, ModelState], jobs: Sequence[Job],
            data_of: Callable[[int], ClientData]) -> list[ClientResult]: ...

    def close(self) -> None:
        """Release workers, if any."""


LOCAL_UPDATE_THREADS = 1  # intra-op threads of one local update in the sequential and pool backends


class SequentialBackend(Backend):
    """One job after another in this process, each on ``LOCAL_UPDATE_THREADS`` torch thread: the reference.

    Why one thread: CPU reductions (a linear layer's weight gradient, a bias gradient) split their sums
    across threads, so the same update on 1 and on 2 threads can differ in the last bits. Pinning the
    thread count makes this backend and the process pool compute with identical kernels."""

    name = "sequential"

    def run(self, algorithm, states, jobs, data_of):
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(LOCAL_UPDATE_THREADS)
        try:
            return [algorithm.local_update(states[j.version], j.config, data_of(j.device), j.seed)
                    for j in jobs]
        finally:
            torch.set_num_threads(threads)


class VectorizedBackend(Backend):
    """Jobs that share a start version, a phase and a step count run as one batched computation
    (``algorithms.batched``, which fits each client's batch to its data as the sequential path does);
    what it cannot batch falls back to the sequential path inside it."""

    name = "vectorized"

    def __init__(self, max_group: int = 128) -> None:
        self.max_group = max_group

    def run(self, algorithm, states, jobs, data_of):
        from algorithms.batched import batched_local_updates

        out: list[ClientResult | None] = [None] * len(jobs)
        groups: dict[tuple, list[int]] = {}
        for i, j in enumerate(jobs):  # a client's batch is min(batch, its samples): one group for all sizes
            groups.setdefault((j.version, j.config.phase, j.config.local_steps), []).append(i)
        for (version, phase, steps), members in groups.items():
            config = TaskConfig(phase, steps, max(jobs[i].config.batch_size for i in members))
            for start in range(0, len(members), self.max_group):
                part = members[start:start + self.max_group]
                results = batched_local_updates(algorithm, states[version], config,
                                                [data_of(jobs[i].device) for i in part],
                                                [jobs[i].seed for i in part])
                for i, r in zip(part, results):
                    out[i] = r
        return out  # type: ignore[return-value]


# --- process pool: workers rebuild the algorithm and load the data once ---------------------------------
_WORKER: dict = {}


def _worker_init(algorithm_name: str, algorithm_params: dict, source: ClientDataSource, threads: int) -> None:
    import torch

    from algorithms.registry import create_algorithm

    torch.set_num_threads(threads)
    dataset = source.load()
    _WORKER["algorithm"] = create_algorithm(algorithm_name, **algorithm_params)
    _WORKER["x"] = torch.from_numpy(np.asarray(dataset.train_x))
    _WORKER["y"] = torch.from_numpy(np.asarray(dataset.train_y))
    _WORKER["partitions"] = source.partitions


def _worker_run(state: ModelState, job: Job) -> ClientResult:
    data = _client_data(_WORKER["x"], _WORKER["y"], _WORKER["partitions"][job.device])
    return _WORKER["algorithm"].local_update(state, job.config, data, job.seed)


class ProcessPoolBackend(Backend):
    """Jobs spread over ``workers`` spawned processes (one torch thread each); each worker builds the
    algorithm from its registry name and parameters and loads the dataset itself."""

    name = "process_pool"

    def __init__(self, algorithm_name: str, algorithm_params: dict, source: ClientDataSource,
                 workers: int = 2, threads_per_worker: int = LOCAL_UPDATE_THREADS) -> None:
        self._pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init,
            initargs=(algorithm_name, dict(algorithm_params), source, threads_per_worker))

    def run(self, algorithm, states, jobs, data_of):
        futures = [self._pool.submit(_worker_run, states[j.version], j) for j in jobs]
        return [f.result() for f in futures]

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


BACKENDS = ("sequential", "vectorized", "process_pool")


def make_backend(name: str, algorithm_name: str, algorithm_params: dict, source: ClientDataSource,
                 workers: int = 2) -> Backend:
    if name == "sequential":
        return SequentialBackend()
    if name == "vectorized":
        return VectorizedBackend()
    if name == "process_pool":
        return ProcessPoolBackend(algorithm_name, algorithm_params, source, workers)
    raise ValueError(f"executor backend must be one of {', '.join(BACKENDS)}, got {name!r}")


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
        self.state = self.algorithm.initial_state(derive_seed(self.run_seed, PURPOSES["model_init"]))
        self._states: dict[int, ModelState] = {0: self.state}
        self._pending: dict[int, Job] = {}  # submitted, not yet resolved
        self._collected: dict[int, Job] = {}  # accepted, waiting for the aggregation
        self._provided: dict[int, ClientResult] = {}  # results computed elsewhere (real devices)
        self._demand = lru_cache(maxsize=None)(self.algorithm.demand)
        self._metrics: dict[int, dict[str, float]] = {}
        self._data_cache: dict[int, ClientData] = {}

    # --- the plan: what a task asks of one device, given the current state -----------------------------
    def plan(self, round_index: int, device: int) -> tuple[TaskConfig, ResourceDemand]:
        config = self.algorithm.state_task(round_index, self.state)
        config = self.algorithm.client_task(config, len(self.partitions[device]))
        return config, self._demand(config)

    # --- LocalWork -------------------------------------------------------------------------------------
    def submit(self, task: Task) -> None:
        config = TaskConfig(task.phase, task.local_steps, task.batch_size)
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
        data = self._data_cache.get(device)
        if data is None:
            data = self._data_cache[device] = _client_data(self.train_x, self.train_y, self.partitions[device])
        return data

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
