"""The seam between the coordinator and the learning plane: ``LocalWork``, and ``NullWork`` for timing mode.

The coordinator (``fleet.coordinator``) calls ``LocalWork``; the learning plane (``fleet.learning.plane``)
implements it. It lives in the core so neither world imports the other. ``LearningRecord`` is the read
side the face (``fleet.app``) uses after a run. Timing mode, where no local update is computed, is
``NullWork``: it implements both and does nothing, so neither the coordinator nor the face asks which
mode runs.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping, Protocol, Sequence

from fleet.core.messages import Task

__all__ = ["LearningRecord", "LocalWork", "NullWork"]


class LocalWork(Protocol):
    """Where the real work of local updates happens (the executor layer implements this).

    The coordinator calls ``submit`` at dispatch, ``cancel`` when a task will not be aggregated (dropout,
    late or stale update, failed round), ``collect`` when its update is accepted, and ``aggregate`` with
    the accepted task ids (and their weights) exactly when it advances the model version.
    """

    def submit(self, task: Task) -> None: ...
    def cancel(self, task_id: int) -> None: ...
    def collect(self, task: Task) -> None: ...
    def aggregate(self, task_ids: list[int], weights: list[float]) -> None: ...


class LearningRecord(Protocol):
    """What a run's learning left for the face to read (``fleet.app.study``, ``report``).

    ``evaluations``: the global model measured over the run, in time order (rows with ``time_s``,
    ``model_version``, ``accuracy``, ``loss``, ``client_flops``, ``bytes_up``, ``bytes_down``: see
    ``fleet.learning.plane.Evaluation``); ``metrics_by_version``: model version -> ``{"accuracy", "loss"}``
    of every version evaluated; ``jobs_run``: local updates computed in this process; ``versions_resumed``:
    versions loaded from checkpoints instead of computed. All empty or zero when nothing was learned.
    ``close`` releases what the learning held (a process pool); the run calls it once, at the end.
    """

    @property
    def evaluations(self) -> Sequence: ...
    @property
    def metrics_by_version(self) -> Mapping[int, Mapping[str, float]]: ...
    @property
    def jobs_run(self) -> int: ...
    @property
    def versions_resumed(self) -> int: ...
    def close(self) -> None: ...


class NullWork:
    """Timing mode's ``LocalWork`` and ``LearningRecord``: tasks cost time, memory and energy on the
    devices, but no update is computed, aggregated or evaluated. Every call is accepted and forgotten, so
    any sequence of calls is valid; the record stays empty. Holds no state: one instance may serve any
    number of coordinators."""

    __slots__ = ()

    def submit(self, task: Task) -> None:
        pass

    def cancel(self, task_id: int) -> None:
        pass

    def collect(self, task: Task) -> None:
        pass

    def aggregate(self, task_ids: list[int], weights: list[float]) -> None:
        pass

    def close(self) -> None:
        """Nothing to release (the learning plane's ``close`` ends its backend)."""

    @property
    def evaluations(self) -> tuple:
        return ()

    @property
    def metrics_by_version(self) -> Mapping[int, Mapping[str, float]]:
        return MappingProxyType({})

    @property
    def jobs_run(self) -> int:
        return 0

    @property
    def versions_resumed(self) -> int:
        return 0
