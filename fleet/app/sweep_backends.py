"""Where a sweep's runs execute: a local pool of processes, or Ray tasks on a cluster.

Both run each job as its own process, ``[python, *argv]`` in the sweep's working folder (``execute``), and
yield ``(key, Outcome)`` as jobs finish, in completion order, with at most ``jobs`` running at once. Leaving
the iteration early (Ctrl-C, an error) stops what is still running: the local pool terminates its child
processes, the Ray pool cancels its tasks. Ray is optional (``pip install '.[ray]'``) and imported only when
the Ray pool is made; ``RayMissing`` says it is absent.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Hashable, Iterable, Iterator, Sequence

__all__ = ["LocalPool", "Outcome", "RayMissing", "RayPool", "execute", "tail"]

TAIL_LINES = 20
TAIL_CHARS = 2000


@dataclass(frozen=True)
class Outcome:
    """How one job ended: its exit status (negative: killed by that signal, or it could not start), the
    end of its stderr, and its wall time."""

    returncode: int
    stderr_tail: str
    wall_s: float


def tail(text: str) -> str:
    """The last ``TAIL_LINES`` lines of ``text``, at most ``TAIL_CHARS`` characters."""
    out = "\n".join(text.rstrip().splitlines()[-TAIL_LINES:])
    return out if len(out) <= TAIL_CHARS else "..." + out[-TAIL_CHARS + 3:]


def _finish(proc: subprocess.Popen, start: float) -> Outcome:
    _, err = proc.communicate()
    return Outcome(proc.returncode, tail(err.decode("utf-8", "replace")), time.monotonic() - start)


def _start(argv: Sequence[str], cwd: str) -> subprocess.Popen:
    """``[this interpreter, *argv]`` in ``cwd``, its stderr kept (``OSError`` when it cannot start)."""
    return subprocess.Popen([sys.executable, *argv], cwd=cwd, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def execute(argv: Sequence[str], cwd: str) -> Outcome:
    """Run ``[python, *argv]`` in ``cwd`` to the end with the caller's interpreter (a Ray task: its node's)."""
    start = time.monotonic()
    try:
        proc = _start(argv, cwd)
    except OSError as exc:
        return Outcome(-1, f"cannot start: {exc}", time.monotonic() - start)
    return _finish(proc, start)


class LocalPool:
    """``jobs`` child processes at a time on this machine (threads wait on them; the work is the children's)."""

    def __init__(self, jobs: int):
        self.jobs = max(1, jobs)
        self._procs: set[subprocess.Popen] = set()
        self._lock = threading.Lock()
        self._stopping = False

    def _job(self, argv: Sequence[str], cwd: str) -> Outcome:
        start = time.monotonic()
        with self._lock:
            if self._stopping:
                return Outcome(-1, "cancelled", 0.0)
            try:
                proc = _start(argv, cwd)
            except OSError as exc:
                return Outcome(-1, f"cannot start: {exc}", time.monotonic() - start)
            self._procs.add(proc)
        try:
            return _finish(proc, start)
        finally:
            with self._lock:
                self._procs.discard(proc)

    def run(self, jobs: Iterable[tuple[Hashable, Sequence[str]]], cwd: str) -> Iterator[tuple[Hashable, Outcome]]:
        pool = ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="sweep")
        try:
            pending = {pool.submit(self._job, argv, cwd): key for key, argv in jobs}
            while pending:
                done, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for future in done:
                    yield pending.pop(future), future.result()
        finally:
            with self._lock:
                self._stopping = True
                for proc in self._procs:
                    proc.terminate()
            pool.shutdown(wait=True, cancel_futures=True)


class RayMissing(Exception):
    """``--backend ray`` without the ray package installed, or with a cluster address that does not answer."""


class RayPool:
    """Each job a Ray task (one CPU) on the cluster ``RAY_ADDRESS`` names, else on a private Ray instance on
    this machine (loopback only, no dashboard, no usage reporting: ``fleet.learning.ray_cluster.connect``),
    connected when the pool is made and shut down after the runs if this pool started it. Every node must see
    the project, the scenario and the sweep's folder at the same paths (a shared file system) and have the
    project installed (``python -m fleet.run``)."""

    def __init__(self, jobs: int | None):
        from fleet.learning.backends import BackendUnavailable
        from fleet.learning.ray_cluster import connect

        try:
            self._started = connect(None)
        except BackendUnavailable as exc:
            raise RayMissing(f"--backend ray: {exc}") from None
        import ray

        self.ray = ray
        self.jobs = jobs

    def run(self, jobs: Iterable[tuple[Hashable, Sequence[str]]], cwd: str) -> Iterator[tuple[Hashable, Outcome]]:
        ray, todo = self.ray, list(jobs)
        if not todo:
            return
        remote = ray.remote(num_cpus=1)(execute)
        limit = self.jobs or len(todo)
        pending: dict = {}
        try:
            while todo or pending:
                while todo and len(pending) < limit:
                    key, argv = todo.pop(0)
                    pending[remote.remote(list(argv), cwd)] = key
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    key = pending.pop(ref)
                    try:
                        outcome = ray.get(ref)
                    except Exception as exc:  # a lost node or a crashed worker: this run failed, not the sweep
                        outcome = Outcome(-1, tail(f"ray task failed: {exc}"), 0.0)
                    yield key, outcome
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
            if self._started:
                ray.shutdown()
