"""The seam between the coordinator and the learning plane: ``LocalWork``.

The coordinator (``fleet.coordinator``) calls it; the learning plane (``fleet.learning.plane``)
implements it. It lives in the core so neither world imports the other.
"""

from __future__ import annotations

from typing import Protocol

from fleet.core.messages import Task

__all__ = ["LocalWork"]


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
