"""Synchronous rounds: ``SyncCoordinator`` and its ``SyncConfig``.

Each round selects ``ceil(K * (1 + over_selection))`` idle devices at random, and ends when ``K``
updates arrived, when every task was resolved, or at the deadline (the rules in full:
``fleet.coordinator.base``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from simpy.events import PENDING

from fleet.coordinator.base import CanEverComplete, Coordinator, RoundRecord


@dataclass(frozen=True, slots=True)
class SyncConfig:
    rounds: int
    clients_per_round: int
    over_selection: float = 0.0
    deadline_s: float | None = None
    quorum: float = 1.0
    max_idle_s: float | None = None  # stop when nothing aggregated for this long (virtual s)



class SyncCoordinator(Coordinator):
    def __init__(self, kernel, transport, n_devices, plan, config: SyncConfig, work=None,
                 can_ever_complete: CanEverComplete | None = None):
        super().__init__(kernel, transport, n_devices, plan, work, can_ever_complete, config.max_idle_s)
        if config.clients_per_round < 1:
            raise ValueError("coordinator.clients_per_round must be >= 1")
        self.config = config
        self._current: RoundRecord | None = None
        self._round_done = None

    def process(self):
        cfg, env = self.config, self._env
        k = cfg.clients_per_round
        self._start_watch()
        for r in range(cfg.rounds):
            chosen = self._select_idle(math.ceil(k * (1.0 + cfg.over_selection)), r)
            if len(chosen) == 0 and not self.outstanding:  # every device hopeless, none in flight
                self._stop("no_eligible_devices")
                return
            rec = RoundRecord(r, env.now, model_version=self.version)
            self._current, self._round_done = rec, env.event()
            deadline_s = None if cfg.deadline_s is None else env.now + cfg.deadline_s
            rec.selected = len(chosen)
            self._record(env.now, "round_start", r, None, None, None, self.version)
            self._dispatch_all(chosen.tolist(), r, deadline_s)
            if rec.selected == 0:
                self._round_done.succeed()
            if deadline_s is None:
                yield self._round_done
            else:
                yield self._round_done | env.timeout(cfg.deadline_s)
            if self.finished.triggered:  # stopped meanwhile: the round stays unfinished
                return
            self._close_round(rec, hit_deadline=not self._round_done.triggered)
        self._stop("completed")

    @property
    def unfinished_round(self) -> RoundRecord | None:
        return self._current

    def _close_round(self, rec: RoundRecord, hit_deadline: bool) -> None:
        now = self._env.now
        for entry in self.outstanding.values():
            if entry.waiting and entry.task.round_index == rec.round_index:
                entry.waiting = False
                if hit_deadline:
                    self._count_dropout("deadline")
                    rec.dropouts["deadline"] = rec.dropouts.get("deadline", 0) + 1
                    task = entry.task
                    self._record(now, "dropout", rec.round_index, task.device, task.task_id,
                                 "deadline", task.model_version)
        rec.end_s = now
        needed = math.ceil(self.config.quorum * self.config.clients_per_round)
        rec.aggregated = rec.accepted >= max(1, needed)
        accepted, self._accepted = self._accepted, []
        if rec.aggregated:
            self._work.aggregate(accepted, [1.0] * len(accepted))
            self.version += 1
            self._progress_s = self._env.now
        else:
            for task_id in accepted:
                self._work.cancel(task_id)
        rec.model_version = self.version
        self._record(now, "round_end", rec.round_index, None, None,
                     None if rec.aggregated else "quorum", self.version)
        self._current = None
        self.rounds.append(rec)
        if self.on_round_end is not None:
            self.on_round_end(len(self.rounds))

    def _on_update(self, entry, msg, link_s, queue_s, task_s) -> None:
        rec = self._current
        if rec is None:  # the run stopped between rounds
            return
        self._accept(entry, msg, link_s, queue_s, task_s, self.version - msg.model_version)
        rec.accepted += 1
        self._check_done(rec)

    def _on_failed(self, entry, cause) -> None:
        rec = self._current
        if rec is None:
            return
        rec.dropouts[cause] = rec.dropouts.get(cause, 0) + 1
        self._check_done(rec)

    def _check_done(self, rec: RoundRecord) -> None:
        if self._round_done._value is not PENDING:  # ``triggered`` without the property's call (every task)
            return
        resolved = rec.accepted + sum(rec.dropouts.values())
        if rec.accepted >= self.config.clients_per_round or resolved >= rec.selected:
            self._round_done.succeed()
