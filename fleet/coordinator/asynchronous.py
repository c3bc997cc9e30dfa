"""Asynchronous aggregation: FedBuff (Nguyen et al. 2022) and FedAsync (Xie et al. 2019).

``AsyncCoordinator`` keeps ``concurrency`` tasks in flight and aggregates every ``buffer_size``
updates, each weighted ``staleness_weight(staleness, staleness_exponent)``; FedAsync is the same with a
buffer of one. Staleness is the number of aggregations since the version the client *downloaded*
(carried in its task), not since receipt. A slot is refilled whatever the outcome of its task, late
reports included. The bookkeeping shared with synchronous rounds, and how a run stops, are
``fleet.coordinator.base``'s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fleet.coordinator.base import CanEverComplete, Coordinator, RoundRecord

__all__ = ["AsyncConfig", "AsyncCoordinator", "staleness_weight"]


def staleness_weight(staleness: int, exponent: float) -> float:
    """FedBuff's polynomial discount of an update ``staleness`` aggregations old: ``(1 + staleness) **
    -exponent``; 1 for a fresh update (``staleness`` 0), or for every update when ``exponent`` is 0."""
    return (1.0 + staleness) ** -exponent


@dataclass(frozen=True, slots=True)
class AsyncConfig:
    aggregations: int
    concurrency: int
    buffer_size: int
    staleness_exponent: float = 0.5
    max_staleness: int | None = None
    task_timeout_s: float | None = None
    max_idle_s: float | None = None  # stop when nothing aggregated for this long (virtual s)



class AsyncCoordinator(Coordinator):
    """FedBuff (``buffer_size > 1``) and FedAsync (``buffer_size == 1``)."""

    def __init__(self, kernel, transport, n_devices, plan, config: AsyncConfig, work=None,
                 can_ever_complete: CanEverComplete | None = None):
        super().__init__(kernel, transport, n_devices, plan, work, can_ever_complete, config.max_idle_s)
        if config.concurrency < 1 or config.buffer_size < 1:
            raise ValueError("coordinator.concurrency and buffer_size must be >= 1")
        self.config = config
        self._buffer_staleness: list[int] = []
        self._buffer_weights: list[float] = []
        self._in_flight = 0
        self._open: RoundRecord | None = None

    def staleness_weight(self, staleness: int) -> float:
        """This coordinator's discount: ``staleness_weight(staleness, config.staleness_exponent)``."""
        return staleness_weight(staleness, self.config.staleness_exponent)

    def process(self):
        env = self._env
        self._open = RoundRecord(0, env.now, model_version=self.version)
        self._start_watch()
        self._fill()
        yield self.finished

    @property
    def unfinished_round(self) -> RoundRecord | None:
        rec = self._open
        return rec if rec is not None and (rec.selected or rec.accepted) else None

    def _fill(self) -> None:
        """Keep ``concurrency`` tasks in flight, on idle devices chosen at random, whatever became of the
        tasks before (update, refusal, loss, expiry and late report); stop when none can be sent and
        none is out (every device hopeless: no update can ever arrive)."""
        if self.finished.triggered:
            return
        want = self.config.concurrency - self._in_flight
        if want <= 0:
            return
        timeout_s = self.config.task_timeout_s
        for device in self._select_idle(want, self._open.round_index).tolist():
            task = self._dispatch(int(device), self._open.round_index, None)
            self._in_flight += 1
            self._open.selected += 1
            if timeout_s is not None:
                self._env.timeout(timeout_s).callbacks.append(
                    lambda _e, task_id=task.task_id: self._expire(task_id))
        if not self.outstanding:
            self._stop("no_eligible_devices")

    def _expire(self, task_id: int) -> None:
        entry = self.outstanding.get(task_id)
        if entry is None or not entry.waiting or self.finished.triggered:
            return
        entry.waiting = False  # the device stays busy until it reports back
        self._count_dropout("deadline")
        self._record(self._env.now, "dropout", entry.task.round_index, entry.task.device,
                     task_id, "deadline", entry.task.model_version)
        self._on_failed(entry, "deadline")

    def _on_update(self, entry, msg, link_s, queue_s, task_s) -> None:
        self._in_flight -= 1
        if self.finished.triggered:
            return
        staleness = self.version - msg.model_version
        cap = self.config.max_staleness
        if cap is not None and staleness > cap:
            self._work.cancel(msg.task_id)
            self._record(self._env.now, "discard", entry.task.round_index, msg.device, msg.task_id,
                         "stale",
                         msg.model_version, staleness=staleness)
        else:
            self._accept(entry, msg, link_s, queue_s, task_s, staleness)
            self._open.accepted += 1
            self._buffer_staleness.append(staleness)
            self._buffer_weights.append(self.staleness_weight(staleness))
            if len(self._buffer_staleness) >= self.config.buffer_size:
                self._aggregate()
        self._fill()

    def _aggregate(self) -> None:
        rec, now = self._open, self._env.now
        accepted, self._accepted = self._accepted, []
        self._work.aggregate(accepted, self._buffer_weights)
        self._buffer_weights = []
        self.version += 1
        self._progress_s = now
        rec.end_s, rec.aggregated, rec.model_version = now, True, self.version
        rec.mean_staleness = float(np.mean(self._buffer_staleness))
        self._buffer_staleness.clear()
        self._record(now, "aggregate", rec.round_index, None, None, None, self.version)
        self.rounds.append(rec)
        if self.on_round_end is not None:
            self.on_round_end(len(self.rounds))
        if len(self.rounds) >= self.config.aggregations:
            self._open = None
            self._stop("completed")
        else:
            self._open = RoundRecord(rec.round_index + 1, now, model_version=self.version)

    def _on_failed(self, entry, cause) -> None:
        self._in_flight -= 1
        if not self.finished.triggered:
            self._open.dropouts[cause] = self._open.dropouts.get(cause, 0) + 1
            self._fill()

    def _on_freed(self) -> None:
        """A device the coordinator had given up on (expired task) reported back: refill its slot."""
        self._fill()
