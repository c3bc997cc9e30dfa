"""Where a batch of local updates runs: the backends of the learning plane.

Why results do not depend on how they are computed: each update is a function of (the global state it
started from, its task, its client's data, its seed), and the seed is derived from (run seed, device, round,
task id). A backend only decides where and in which grouping that function is evaluated; the aggregation
order is fixed by the plane (task id). Sequential and process-pool backends run the same code and give
bit-identical weights; the vectorized backend runs the algorithm's batched kernel, whose float rounding can
differ (docs/learning.md states and tests the bound).

Backends: ``sequential`` (in this process), ``process_pool`` (spawned workers that load the data themselves),
``vectorized`` (``algorithms.batched``: the learner's ``batched_kernel``, when it declares one; ``fit``
otherwise), ``ray`` (``fleet.learning.ray_backend``: long-lived Ray actors sharing one copy of the data, on this
machine or a cluster; the only module that imports ray, and only when that backend is made).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from algorithms.base import Learner, TaskConfig
from algorithms.local import ClientData, ClientResult, ModelState

__all__ = ["Job", "ClientDataSource", "client_data", "Backend", "BackendUnavailable", "SequentialBackend",
           "VectorizedBackend", "ProcessPoolBackend", "BACKENDS", "LOCAL_UPDATE_THREADS", "make_backend"]


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


def client_data(train_x, train_y, indices: np.ndarray) -> ClientData:
    """The client's samples: rows ``indices`` of the training split (copies)."""
    import torch

    idx = torch.from_numpy(np.asarray(indices, dtype=np.int64))
    return ClientData(train_x[idx], train_y[idx])


class BackendUnavailable(RuntimeError):
    """A backend cannot start here: its package is missing, its cluster does not answer, its workers do not
    start. The message is one line saying what to do; the CLI reports it as a scenario error (exit 2)."""


class Backend(ABC):
    """Computes a batch of jobs. ``run`` returns results in the order of ``jobs``."""

    name: str

    @abstractmethod
    def run(self, learner: Learner, states: dict[int, ModelState], jobs: Sequence[Job],
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

    def run(self, learner, states, jobs, data_of):
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(LOCAL_UPDATE_THREADS)
        try:
            return [learner.fit(states[j.version], j.config, data_of(j.device), j.seed) for j in jobs]
        finally:
            torch.set_num_threads(threads)


class VectorizedBackend(Backend):
    """Jobs that share a start version, a phase, a step count, a mode and an architecture run as one batched
    computation: the learner's ``batched_kernel`` (through ``algorithms.batched.batched_local_updates``,
    which fits each client's batch to its data as the sequential path does); what the kernel cannot compute,
    or a learner without a kernel, runs ``fit``."""

    name = "vectorized"

    def __init__(self, max_group: int = 128) -> None:
        self.max_group = max_group

    def run(self, learner, states, jobs, data_of):
        from algorithms.batched import batched_local_updates

        out: list[ClientResult | None] = [None] * len(jobs)
        groups: dict[tuple, list[int]] = {}
        for i, j in enumerate(jobs):  # a client's batch is min(batch, its samples): one group for all sizes
            c = j.config
            groups.setdefault((j.version, c.phase, c.local_steps, c.mode, c.architecture), []).append(i)
        for (version, phase, steps, mode, architecture), members in groups.items():
            config = TaskConfig(phase, steps, max(jobs[i].config.batch_size for i in members), mode, architecture)
            for start in range(0, len(members), self.max_group):
                part = members[start:start + self.max_group]
                results = batched_local_updates(learner, states[version], config,
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
    with warnings.catch_warnings():  # the cached split is read-only; nothing writes to it (clients copy rows)
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        _WORKER["x"] = torch.from_numpy(np.asarray(dataset.train_x))
        _WORKER["y"] = torch.from_numpy(np.asarray(dataset.train_y))
    _WORKER["partitions"] = source.partitions


def _worker_run(state: ModelState, job: Job) -> ClientResult:
    data = client_data(_WORKER["x"], _WORKER["y"], _WORKER["partitions"][job.device])
    return _WORKER["algorithm"].fit(state, job.config, data, job.seed)


class ProcessPoolBackend(Backend):
    """Jobs spread over ``workers`` spawned processes (one torch thread each); each worker builds the
    algorithm from its registry name and parameters and loads the dataset itself."""

    name = "process_pool"

    def __init__(self, algorithm_name: str, algorithm_params: dict, source: ClientDataSource,
                 workers: int = 2, threads_per_worker: int = LOCAL_UPDATE_THREADS) -> None:
        self._pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init,
            initargs=(algorithm_name, dict(algorithm_params), source, threads_per_worker))

    def run(self, learner, states, jobs, data_of):
        futures = [self._pool.submit(_worker_run, states[j.version], j) for j in jobs]
        return [f.result() for f in futures]

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


BACKENDS = ("sequential", "vectorized", "process_pool", "ray")


def make_backend(name: str, algorithm_name: str, algorithm_params: dict, source: ClientDataSource,
                 workers: int = 2, ray_address: str | None = None,
                 threads_per_worker: int = LOCAL_UPDATE_THREADS) -> Backend:
    """The backend ``name`` (one of ``BACKENDS``); the pool and Ray build the algorithm ``algorithm_name`` with
    ``algorithm_params`` in each of their ``workers`` and take the data from ``source``. ``ray_address`` joins
    a Ray cluster (else ``RAY_ADDRESS``, else Ray starts on this machine). ``BackendUnavailable`` when the
    backend cannot start here."""
    if name == "sequential":
        return SequentialBackend()
    if name == "vectorized":
        return VectorizedBackend()
    if name == "process_pool":
        return ProcessPoolBackend(algorithm_name, algorithm_params, source, workers, threads_per_worker)
    if name == "ray":
        from fleet.learning.ray_backend import RayBackend

        return RayBackend(algorithm_name, algorithm_params, source, workers, threads_per_worker, ray_address)
    raise ValueError(f"executor backend must be one of {', '.join(BACKENDS)}, got {name!r}")
