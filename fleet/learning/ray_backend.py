"""The Ray backend: local updates on long-lived Ray actors, on this machine or on a cluster.

The shape is the process pool's (``backends.ProcessPoolBackend``): each worker builds the algorithm from its
registry name once, and a job is ``fit(state, config, its client's data, seed)`` with ``LOCAL_UPDATE_THREADS``
torch thread, so the results are bit-identical to ``sequential`` (tested). What Ray adds:

* **Data shared once.** The driver puts the training split (and the partition indices) in Ray's object store
  ONCE; every actor receives the same ``ObjectRef`` and holds zero-copy, read-only numpy views of it (on a
  node other than the driver's, Ray copies the object to that node once). A round's global state is put once
  per aggregation and shared by its jobs.
* **Warm workers, started in the background.** Making the backend checks that Ray is installed (without
  importing it) and the cluster address; then it imports Ray, starts it, puts the data and creates the
  ``workers`` actors (torch imported, the algorithm built, threads set; all at once) on a thread of its own,
  so that Ray's start-up (seconds: its processes, then the actors' imports) overlaps whatever the caller does
  next (building the simulation, the first evaluation, dispatching round 0); the first ``run`` waits for it.
  A failure to start is raised there, as ``BackendUnavailable``. The actors live for the run.
* **Jobs in chunks.** An actor method call carries a chunk of jobs of one global version, sized by guided
  self-scheduling (``_take``: the pending jobs over twice the workers, so chunks shrink as a round drains):
  about 15 calls for a round of 100 jobs on 2 workers instead of 100, each call costing the driver, the
  raylet and the actor milliseconds of CPU, while the last chunks stay small enough to leave no worker idle
  for long. Two chunks are queued per actor, so the next one's arguments arrive while it computes.
* **Failure.** A job whose worker dies (the process killed, its node lost; the rest of its chunk with it) is
  resubmitted, to a surviving worker or to the actor started in the dead one's place, up to
  ``max_retries`` times; ``run`` keeps exactly one result per job, in job order, so nothing is aggregated
  twice. An exception raised by ``fit`` itself is not retried: it propagates as it would from the other backends.
* **Where Ray runs** (``fleet.learning.ray_cluster``): ``address`` (the scenario key ``executor.ray_address``),
  else ``RAY_ADDRESS``, joins an existing cluster, checked when the backend is made so that a wrong one is
  reported at once; without one, a private instance starts on this machine, and ``close`` shuts it down.
  Everything else about starting happens in the background.

Ray is an optional dependency (``pip install '.[ray]'``): it is imported only when this backend is made.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import warnings
from collections import deque
from typing import Sequence

import numpy as np

from fleet.learning.backends import (
    LOCAL_UPDATE_THREADS,
    Backend,
    BackendUnavailable,
    ClientDataSource,
    Job,
    client_data,
)
from fleet.learning.ray_cluster import (  # the public names of reaching Ray are this module's too
    CONNECT_TIMEOUT_S,
    RAY_MISSING,
    _exit_on_sigterm,
    _first_line,
    _probe,
    check_cluster,
    connect,
    import_ray,
    ray_address,
    ray_installed,
)

__all__ = ["RayBackend", "RAY_MISSING", "CONNECT_TIMEOUT_S", "START_TIMEOUT_S", "import_ray", "connect",
           "ray_address", "check_cluster"]

START_TIMEOUT_S = 120.0  # the workers must be built (torch imported, algorithm made) within this
IN_FLIGHT = 2  # chunks queued on one actor: the next one's arguments arrive while it computes
CHUNK_SHARE = 2  # a chunk is at most the pending jobs / (CHUNK_SHARE * workers): ~15 actor calls for 100 jobs on 2


class _Worker:
    """One long-lived worker (a Ray actor): the algorithm built once, the shared data held as views."""

    def __init__(self, algorithm_name: str, algorithm_params: dict, shared: tuple, threads: int) -> None:
        import torch

        from algorithms.registry import create_algorithm

        self._torch, self._threads = torch, threads
        torch.set_num_threads(threads)
        self._shared_x, y, self._partitions = shared  # numpy views of the object store's one copy (read-only)
        with warnings.catch_warnings():  # nothing writes to them: clients take copies of their rows
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            self._x, self._y = torch.from_numpy(self._shared_x), torch.from_numpy(y)
        self._algorithm = create_algorithm(algorithm_name, **algorithm_params)

    def info(self) -> dict:
        """What a test or an operator can check: the process, its torch threads, whether the data is shared."""
        x = self._shared_x
        return {"pid": os.getpid(), "threads": self._torch.get_num_threads(),
                "shared_data": not x.flags.writeable and not x.flags.owndata}

    def run(self, state, job: Job):
        if self._torch.get_num_threads() != self._threads:  # a library reset it: results depend on it
            self._torch.set_num_threads(self._threads)
        data = client_data(self._x, self._y, self._partitions[job.device])
        return self._algorithm.fit(state, job.config, data, job.seed)

    def run_many(self, state, jobs: list[Job]) -> list:
        """``run`` each of ``jobs`` (all from ``state``), in order: one actor call for a chunk of jobs."""
        return [self.run(state, job) for job in jobs]


class RayBackend(Backend):
    """Jobs spread over ``workers`` Ray actors (``threads_per_worker`` torch threads and as many Ray CPUs
    each), retried on worker death; the module docstring says how data, start-up and failures are handled."""

    name = "ray"

    def __init__(self, algorithm_name: str, algorithm_params: dict, source: ClientDataSource,
                 workers: int = 2, threads_per_worker: int = LOCAL_UPDATE_THREADS, address: str | None = None,
                 max_retries: int = 3) -> None:
        if not ray_installed():
            raise BackendUnavailable(RAY_MISSING)
        self._ray = self._actor = None  # set on the starter thread: importing Ray takes seconds of CPU
        self._workers: list = []
        self._shared = None
        self._started = False  # this backend started Ray (close shuts it down)
        self.max_retries = max_retries
        self.retries = 0  # jobs resubmitted after their worker died, over the backend's life
        self.replaced = 0  # workers started in place of dead ones
        self._args = (algorithm_name, dict(algorithm_params), threads_per_worker)
        self._failure: BaseException | None = None
        loaded = sys.modules.get("ray")
        if loaded is None or not loaded.is_initialized():
            target, where = ray_address(address)
            if target is not None:
                _probe(target, where, CONNECT_TIMEOUT_S)  # a wrong address is reported now, in one line
            elif threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, _exit_on_sigterm)  # what ray.init would set on this thread
        dataset = source.load()  # cached in this process: the driver has it already
        shared = (np.asarray(dataset.train_x), np.asarray(dataset.train_y), tuple(source.partitions))
        self._up, self._released = threading.Event(), threading.Event()
        self._starting = True  # until _ready has seen the start-up end
        threading.Thread(target=self._start, args=(address, workers, threads_per_worker, shared),
                         name="ray-start", daemon=True).start()

    def _start(self, address: str | None, workers: int, threads: int, shared: tuple) -> None:
        """On the starter thread: Ray, the data in its object store, the actors (created together, so their
        imports run in parallel), and their first answer; a failure is kept for ``_ready`` to raise.

        The thread then stays until ``close``: the processes of a Ray instance it started are tied to it
        (Ray's fate sharing is Linux's parent-death signal, sent when the thread that spawned a process
        ends, not its process), so their life must be the run's."""
        try:
            ray = self._ray = import_ray()
            self._actor = ray.remote(num_cpus=threads, max_restarts=0)(_Worker)
            self._started = connect(address, num_cpus=max(os.cpu_count() or 1, workers * threads))
            self._shared = ray.put(shared)
            self._workers = [self._new_worker() for _ in range(workers)]
            self._await_workers(workers * threads)
        except BaseException as exc:  # noqa: BLE001 (re-raised on the caller's thread by _ready)
            self._failure = exc
        self._up.set()
        if self._started:
            self._released.wait()

    def _ready(self) -> None:
        """Wait for the start-up begun in ``__init__``; its failure as ``BackendUnavailable`` (the backend is
        then closed)."""
        if not self._starting:
            return
        self._up.wait()
        self._starting = False
        failure, self._failure = self._failure, None
        if failure is not None:
            self.close()
            if isinstance(failure, BackendUnavailable):
                raise failure
            raise BackendUnavailable(f"ray: cannot start: {_first_line(failure)}") from None

    def _new_worker(self):
        name, params, threads = self._args
        return self._actor.remote(name, params, self._shared, threads)

    def _await_workers(self, cpus: int) -> None:
        ray = self._ray
        try:
            ray.get([w.info.remote() for w in self._workers], timeout=START_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            have = ray.cluster_resources().get("CPU", 0)
            raise BackendUnavailable(f"ray: {len(self._workers)} workers did not start within {START_TIMEOUT_S:g} s "
                                     f"(they need {cpus} CPUs; the cluster has {have:g})") from None
        except ray.exceptions.RayError as exc:
            raise BackendUnavailable(f"ray: a worker failed to start: {_first_line(exc)}") from None

    def worker_info(self) -> list[dict]:
        """Each worker's ``_Worker.info``: pid, torch threads, shared_data."""
        self._ready()
        return self._ray.get([w.info.remote() for w in self._workers]) if self._workers else []

    def _submit(self, slot: int, state_ref, jobs: list[Job]):
        """Send ``jobs`` (a chunk: one global version) to the worker in ``slot``; the ObjectRef of their results."""
        return self._workers[slot].run_many.remote(state_ref, jobs)

    def _take(self, todo: deque, jobs: Sequence[Job]) -> list[int]:
        """The next chunk, taken from ``todo`` (job indices, in order): jobs of the first one's version, at most
        the pending jobs over ``CHUNK_SHARE`` times the workers (at least one), in ``todo``'s order. Chunks
        shrink as a round drains (guided self-scheduling), so few calls carry most jobs and the last ones
        leave no worker idle for long."""
        size = max(1, len(todo) // (CHUNK_SHARE * len(self._workers)))
        version = jobs[todo[0]].version
        chunk, rest = [], deque()
        while todo:
            i = todo.popleft()
            if len(chunk) < size and jobs[i].version == version:
                chunk.append(i)
            else:
                rest.append(i)
                if len(chunk) == size:
                    break
        todo.extendleft(reversed(rest))
        return chunk

    def _replace(self, slot: int) -> None:
        """Start a worker in place of the dead one in ``slot`` (it warms up while the jobs queue on it)."""
        try:
            self._ray.kill(self._workers[slot], no_restart=True)
        except Exception:  # already gone
            pass
        self._workers[slot] = self._new_worker()
        self.replaced += 1

    def run(self, learner, states, jobs: Sequence[Job], data_of):
        self._ready()
        ray = self._ray
        lost = (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError, ray.exceptions.ObjectLostError,
                ray.exceptions.NodeDiedError)
        state_refs = {v: ray.put(states[v]) for v in sorted({j.version for j in jobs})}
        out: list = [None] * len(jobs)
        attempts = [0] * len(jobs)
        todo = deque(range(len(jobs)))
        load = [0] * len(self._workers)
        in_flight: dict = {}  # result ref -> (slot, the chunk's job indices, the worker it was sent to)
        while todo or in_flight:
            for slot in range(len(self._workers)):
                while todo and load[slot] < IN_FLIGHT:
                    chunk = self._take(todo, jobs)
                    ref = self._submit(slot, state_refs[jobs[chunk[0]].version], [jobs[i] for i in chunk])
                    in_flight[ref] = (slot, chunk, self._workers[slot])
                    load[slot] += 1
            [ref], _ = ray.wait(list(in_flight), num_returns=1)
            slot, chunk, worker = in_flight.pop(ref)
            load[slot] -= 1
            try:
                results = ray.get(ref)
            except lost as exc:
                for i in chunk:
                    attempts[i] += 1
                    if attempts[i] > self.max_retries:
                        raise RuntimeError(f"ray: the update of task {jobs[i].task_id} lost its worker "
                                           f"{attempts[i]} times; last: {_first_line(exc)}") from None
                if self._workers[slot] is worker:  # the first of its chunks to report the death
                    self._replace(slot)
                todo.extendleft(reversed(chunk))
                self.retries += len(chunk)
                continue
            for i, result in zip(chunk, results, strict=True):
                out[i] = result
        return out

    def close(self) -> None:
        self._up.wait()  # let the start-up finish: Ray is then in a state to be shut down
        self._starting = False
        ray = self._ray
        for w in self._workers:
            try:
                ray.kill(w, no_restart=True)
            except Exception:  # already dead, or Ray already down
                pass
        self._workers = []
        self._shared = None
        if self._started and ray.is_initialized():
            ray.shutdown()
        self._started = False
        self._released.set()
