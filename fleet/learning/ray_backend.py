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
* **Where Ray runs.** ``address`` (the scenario key ``executor.ray_address``), else ``RAY_ADDRESS``, joins an
  existing cluster after a ``CONNECT_TIMEOUT_S`` TCP probe (Ray itself waits minutes for a silent address);
  without one, a private Ray instance starts on this machine, on loopback only, without dashboard, usage
  reporting or worker log forwarding, and ``close`` shuts it down. A process that already called
  ``ray.init`` keeps its own session. The address is probed when the backend is made, so that a wrong one is
  reported at once; everything else about starting happens in the background.

Ray is an optional dependency (``pip install '.[ray]'``): it is imported only when this backend is made.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import signal
import socket
import sys
import tempfile
import threading
import warnings
from collections import deque
from contextlib import contextmanager
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

__all__ = ["RayBackend", "RAY_MISSING", "CONNECT_TIMEOUT_S", "START_TIMEOUT_S", "import_ray", "connect",
           "ray_address", "check_cluster"]

RAY_MISSING = "the ray backend needs the ray package: pip install '.[ray]' (or pip install 'fleet-sim[ray]')"
CONNECT_TIMEOUT_S = 5.0  # a cluster address must accept a TCP connection within this
START_TIMEOUT_S = 120.0  # the workers must be built (torch imported, algorithm made) within this
IN_FLIGHT = 2  # chunks queued on one actor: the next one's arguments arrive while it computes
CHUNK_SHARE = 2  # a chunk is at most the pending jobs / (CHUNK_SHARE * workers): ~15 actor calls for 100 jobs on 2
_LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray's node address is 127.0.0.1 (its macOS default)


def ray_installed() -> bool:
    """Whether ``import ray`` would find the package, without importing it (the import costs seconds of CPU)."""
    if "ray" in sys.modules:
        return sys.modules["ray"] is not None  # None: importing it is known to fail
    try:
        return importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):
        return False


def import_ray():
    """The ``ray`` module, with usage reporting off unless the user set ``RAY_USAGE_STATS_ENABLED``;
    ``BackendUnavailable`` (one line) when it is not installed."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError as exc:
        raise BackendUnavailable(f"{RAY_MISSING} ({exc})") from None
    return ray


def ray_address(configured: str | None) -> tuple[str | None, str]:
    """The cluster to join and where that address came from: ``executor.ray_address``, else ``RAY_ADDRESS``;
    ``(None, "")`` for a private instance on this machine (neither set, or either is ``local``)."""
    if configured == "local":
        return None, ""
    if configured:
        return configured, "executor.ray_address"
    env = os.environ.get("RAY_ADDRESS", "").strip()
    if env and env != "local":
        return env, "RAY_ADDRESS"
    return None, ""


def check_cluster(address: str | None = None) -> None:
    """Check the Ray cluster a run would join, without importing Ray: ``address`` (``executor.ray_address``),
    else ``RAY_ADDRESS``; nothing to check for a private instance (neither set, or ``local``).
    ``BackendUnavailable`` (one line) when the address is malformed, when nothing at it accepts a TCP
    connection within ``CONNECT_TIMEOUT_S``, when what accepts does not speak gRPC (a Ray cluster's GCS and
    its Ray Client server do), or, for ``auto``, when no Ray instance runs on this machine."""
    target, where = ray_address(address)
    if target is not None:
        _probe(target, where, CONNECT_TIMEOUT_S)


_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  # + an empty SETTINGS
_HTTP2_SETTINGS = 4  # the frame type a gRPC (HTTP/2) server's first frame has


def _probe(address: str, where: str, timeout_s: float) -> None:
    """Fail fast, in one line, unless a gRPC server answers at ``address`` (host:port, or ray://host:port)
    within ``timeout_s``: a TCP connection, then the HTTP/2 connection preface, to which an HTTP/2 server
    answers with its SETTINGS frame (Ray itself retries a wrong address for minutes, its C++ core printing
    each retry). Over TLS (``RAY_USE_TLS``) only the TCP connection is checked. ``auto`` (the instance
    started on this machine) is checked for an instance: Ray's address file or a running GCS server."""
    if address == "auto":
        _probe_auto(where)
        return
    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    if not sep or not host or not port.isdigit():
        raise BackendUnavailable(f"{where} {address!r}: expected host:port (or ray://host:port, or auto)")
    fix = "start one with `ray start --head`, or unset it to run Ray on this machine"
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s) as conn:
            if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
                return
            conn.settimeout(timeout_s)
            conn.sendall(_HTTP2_PREFACE)
            head = b""
            while len(head) < 9:
                part = conn.recv(9 - len(head))
                if not part:
                    break
                head += part
    except socket.timeout:
        raise BackendUnavailable(f"{where} {address}: no Ray cluster answers within {timeout_s:g} s (something "
                                 f"accepts connections there but says nothing); {fix}") from None
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise BackendUnavailable(f"{where} {address}: no Ray cluster answers within {timeout_s:g} s ({reason}); "
                                 f"{fix}") from None
    if len(head) < 9 or head[3] != _HTTP2_SETTINGS:
        seen = head[:9].decode("ascii", "replace").split("\r")[0].strip() or "nothing"
        raise BackendUnavailable(f"{where} {address}: not a Ray cluster (it does not speak gRPC; it answered "
                                 f"{seen!r}): a Ray cluster's address is its GCS port (6379 unless `ray start "
                                 f"--port` said otherwise), or ray://host:10001 for Ray Client") from None


def _probe_auto(where: str) -> None:
    """``auto``: Ray joins the instance whose address ``ray start`` left in its temporary folder, else any GCS
    server running here; with neither, say so now rather than after Ray's own search."""
    base = os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or ("/tmp" if os.path.isdir("/tmp")
                                                                        else tempfile.gettempdir())
    folder = os.path.join(base, "ray")  # Ray's default temporary folder
    if os.path.exists(os.path.join(folder, "ray_current_cluster")) or _gcs_running():
        return
    raise BackendUnavailable(f"{where} auto: no Ray instance runs on this machine; start one with "
                             "`ray start --head`, give its address, or unset it to run Ray on this machine")


def _gcs_running() -> bool:
    """Whether a process named ``gcs_server`` (a Ray head's) runs on this machine (Linux's /proc; elsewhere
    assume yes and let Ray look)."""
    if not os.path.isdir("/proc"):
        return True
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/comm") as f:
                    if f.read().strip() == "gcs_server":
                        return True
            except OSError:
                continue
    return False


def _quiet_token_notice(record: logging.LogRecord) -> bool:
    """Drop Ray's start-up notice that token authentication is on (its default for a new local instance,
    whose token lives in ~/.ray/auth_token): a line on every run, nothing to act on."""
    return not record.getMessage().startswith("Token authentication is enabled for this Ray cluster")


def _quiet_thread_notice(record: logging.LogRecord) -> bool:
    """Drop ``ray.init``'s warning that, called off the main thread, it sets no SIGTERM handler: the backend
    sets the same handler itself, from the main thread (``_exit_on_sigterm``)."""
    return not record.getMessage().startswith("SIGTERM handler is not set")


def _exit_on_sigterm(signum, frame) -> None:
    """What ``ray.init`` installs when called on the main thread: SIGTERM exits through ``sys.exit``, so the
    interpreter's exit hooks (Ray's shutdown among them) run."""
    sys.exit(signum)


@contextmanager
def _loopback():
    """While Ray starts here: make it take 127.0.0.1 as this node's address, so its servers listen on loopback
    only, and keep its token notice quiet. On Linux Ray otherwise replaces 127.0.0.1 (``_node_ip_address``)
    by the routable address and listens on every interface; its macOS/Windows default
    (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``) is loopback. Ray reads that variable when it is imported, so the
    imported constant is set too."""
    try:
        from ray._private import ray_constants
    except ImportError:  # a later Ray moved it: fall back to its own choice of address
        ray_constants = None
    saved_env = os.environ.get(_LOCAL_ONLY_ENV)
    saved = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    os.environ[_LOCAL_ONLY_ENV] = "0"
    if saved is not None:
        ray_constants.ENABLE_RAY_CLUSTER = False
    announcer = logging.getLogger("ray._private.authentication.authentication_token_setup")
    announcer.addFilter(_quiet_token_notice)
    try:
        yield
    finally:
        announcer.removeFilter(_quiet_token_notice)
        if saved_env is None:
            os.environ.pop(_LOCAL_ONLY_ENV, None)
        else:
            os.environ[_LOCAL_ONLY_ENV] = saved_env
        if saved is not None:
            ray_constants.ENABLE_RAY_CLUSTER = saved


def connect(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Make ``ray`` usable in this process; True when this call started it (then the caller shuts it down).

    Already initialised: nothing to do. ``address`` (else ``RAY_ADDRESS``): join that cluster, after a probe.
    Neither: start a private instance on loopback with ``num_cpus`` logical CPUs (default: the machine's)."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    target, where = ray_address(address)
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
    starter = logging.getLogger("ray._private.worker")
    starter.addFilter(_quiet_thread_notice)
    try:
        if target is not None:
            _probe(target, where, CONNECT_TIMEOUT_S)
            _join(ray, target, where, quiet)
        else:
            with _loopback():
                ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                         _node_ip_address="127.0.0.1", **quiet)
    except BackendUnavailable:
        raise
    except (Exception, SystemExit) as exc:  # Ray exits the process on some connection failures
        if isinstance(exc, SystemExit) and exc.code == signal.SIGTERM:
            raise  # the process was told to stop (``_exit_on_sigterm``, or Ray's own handler): not a failure to join
        what = f"cannot join the Ray cluster at {target} ({where})" if target else "cannot start Ray"
        reason = _first_line(exc).replace("`--address` flag", "executor.ray_address")  # Ray's own CLI's words
        raise BackendUnavailable(f"{what}: {reason}") from None
    finally:
        starter.removeFilter(_quiet_thread_notice)
    return True


_RAY_LOG_LINE = re.compile(r"\[\d{4}-\d\d-\d\d [\d:,]+ [DIWEF] \d+ \d+\] ")  # a line of Ray's C++ core on stderr
_TOKEN_REFUSED = ("InvalidAuthToken", "Authentication token is missing or incorrect")


def _join(ray, target: str, where: str, options: dict) -> None:
    """``ray.init(address=target)``, with this process's standard error (file descriptor 2) captured meanwhile:
    Ray's C++ core prints a line on every retry of a cluster that refuses it. Joined: what was captured is
    written out as it came. Refused: the lines that are not Ray's log lines are written out (another thread
    may have printed meanwhile), and a refusal of the token becomes one line saying how to give one
    (``BackendUnavailable``); any other failure is re-raised."""
    sys.stderr.flush()
    saved = os.dup(2)
    failure: BaseException | None = None
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            ray.init(address=target, **options)
        except (Exception, SystemExit) as exc:  # Ray exits the process on some connection failures
            failure = exc
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        text = captured.read().decode("utf-8", "replace")
    if failure is None:
        sys.stderr.write(text)
        return
    sys.stderr.write("".join(line for line in text.splitlines(keepends=True) if not _RAY_LOG_LINE.match(line)))
    if any(sign in text for sign in _TOKEN_REFUSED):
        raise BackendUnavailable(
            f"cannot join the Ray cluster at {target} ({where}): it refused this process's token (token "
            "authentication, Ray's default): set RAY_AUTH_MODE=token, with the cluster's token in RAY_AUTH_TOKEN "
            "or in ~/.ray/auth_token (`ray get-auth-token` on the head prints it)")
    raise failure


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


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
