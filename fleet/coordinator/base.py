"""The coordinator: selects devices, sends tasks, collects updates, aggregates.

It talks only to a ``Transport`` and so cannot tell simulated devices from real ones. Two
disciplines share the bookkeeping in ``Coordinator``:

* ``SyncCoordinator``: rounds. Each selects ``ceil(K * (1 + over_selection))`` idle devices at
  random, and ends when ``K`` updates arrived, when every task was resolved, or at the deadline.
  Tasks still out at the deadline are ``deadline`` dropouts (stragglers); tasks still out when
  ``K`` arrived are over-selected stragglers, discarded. The round aggregates when at least
  ``ceil(quorum * K)`` updates arrived, otherwise it fails and the model version stays.
* ``AsyncCoordinator`` (``fleet.coordinator.asynchronous``): FedBuff (Nguyen et al. 2022) keeps
  ``concurrency`` tasks in flight and aggregates every ``buffer_size`` updates, each weighted
  ``(1 + staleness) ** -staleness_exponent`` (``staleness_weight``); FedAsync (Xie et al. 2019) is
  the same with a buffer of one. Staleness is the number of aggregations since the version the client
  *downloaded* (carried in its task), not since receipt.

A device is busy from dispatch until the coordinator hears back from it (an update, a refusal, a
leave notice or a link loss), even if the coordinator stopped waiting for it.

Every run ends, with the reason in ``stopped_by`` (None until then; ``Simulation`` adds
``max_sim_time``): ``completed`` (all rounds or aggregations done), ``no_eligible_devices`` (no update
can ever arrive: every device refused the current task for a reason that cannot pass, as
``can_ever_complete`` judges, and nothing is in flight), or ``no_progress`` (nothing aggregated for
``max_idle_s`` of virtual time). A device whose refusal ``can_ever_complete`` judges hopeless is not
asked again while the task stays the same (same model version and round configuration).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from algorithms.base import ResourceDemand, TaskConfig
from fleet.core.kernel import Kernel
from fleet.core.messages import Leave, Message, Refusal, Task, Update
from fleet.core.transport import Delivery, Transport
from fleet.core.work import LocalWork, NullWork

TaskPlan = Callable[[int, int], tuple[TaskConfig, ResourceDemand]]  # (round, device) -> task, demand
#: (task, virtual time it was dispatched) -> could its device ever complete a task like it (same demand,
#: same time allowed)? What a device declares of itself (capacity, budgets, when it is online).
CanEverComplete = Callable[[Task, float], bool]


@dataclass(slots=True)
class RoundRecord:
    """One row of ``rounds.csv``: a synchronous round, or one asynchronous aggregation.

    ``end_s`` is None while the round is open; a round the run stopped in stays so (``unfinished``)."""

    round_index: int
    start_s: float
    end_s: float | None = None
    selected: int = 0
    accepted: int = 0
    aggregated: bool = False
    model_version: int = 0
    mean_staleness: float = 0.0
    dropouts: dict[str, int] = field(default_factory=dict)

    @property
    def status(self) -> str:
        """``aggregated``; ``unfinished`` (the run stopped first); ``empty`` (selected nobody);
        ``failed`` (ended with fewer updates than the quorum)."""
        if self.aggregated:
            return "aggregated"
        if self.end_s is None:
            return "unfinished"
        return "empty" if self.selected == 0 else "failed"


@dataclass(slots=True)
class _Outstanding:
    task: Task
    dispatched_s: float
    waiting: bool = True  # False once the coordinator stopped waiting (deadline, round closed)


class Coordinator:
    """Bookkeeping shared by both disciplines: dispatch, busy devices, dropout counts.

    ``work`` is told of every task's fate (``LocalWork``'s contract); None is timing mode, ``NullWork``."""

    def __init__(self, kernel: Kernel, transport: Transport, n_devices: int, plan: TaskPlan,
                 work: LocalWork | None = None, can_ever_complete: CanEverComplete | None = None,
                 max_idle_s: float | None = None) -> None:
        self._kernel = kernel
        self._env = kernel.env
        self._record = kernel.recorder.record
        self._row = kernel.recorder.appender()  # a whole row, on the hot path
        self._transport = transport
        self._plan = plan
        self._work: LocalWork = work if work is not None else NullWork()
        self._rng = kernel.rng.stream("selection")
        self.n_devices = n_devices
        self.busy = np.zeros(n_devices, dtype=bool)
        self.outstanding: dict[int, _Outstanding] = {}
        self.version = 0
        self.client_tasks = 0
        self.updates_accepted = 0
        self.dropouts: dict[str, int] = {}
        self.rounds: list[RoundRecord] = []
        self._next_task_id = 0
        self._accepted: list[int] = []  # task ids accepted since the last aggregation
        self.finished = self._env.event()
        self.stopped_by: str | None = None
        self.on_round_end: Callable[[int], None] | None = None  # progress hook: rounds done
        self._can_ever_complete = can_ever_complete
        self._hopeless = np.zeros(n_devices, dtype=bool)  # refused the task of ``_hopeless_key`` for good
        self._hopeless_key: tuple | None = None
        self._max_idle_s = max_idle_s
        self._progress_s = 0.0  # virtual time of the last aggregation (or of the start)
        transport.attach_server(self._on_message, self._on_lost)

    # --- dispatch -------------------------------------------------------------------------
    def _dispatch(self, device: int, round_index: int, deadline_s: float | None) -> Task:
        task = self._prepare(device, round_index, deadline_s)
        self._transport.send(task)
        return task

    def _dispatch_all(self, devices: list[int], round_index: int, deadline_s: float | None) -> None:
        """``_dispatch`` each of ``devices`` (the same tasks, rows and calls, in the same order), the tasks sent in
        one go (``Transport.send_many``)."""
        self._transport.send_many([self._prepare(device, round_index, deadline_s) for device in devices])

    def _prepare(self, device: int, round_index: int, deadline_s: float | None) -> Task:
        """A task for ``device``, booked (busy, outstanding, counted, recorded, submitted) but not sent."""
        config, demand = self._plan(round_index, device)
        task = Task(self._next_task_id, device, round_index, self.version, config.phase,
                    config.local_steps, config.batch_size, demand.peak_memory_bytes, demand.flops,
                    demand.bytes_up, deadline_s, demand.bytes_down, config.mode, config.architecture)
        self._next_task_id += 1
        self.busy[device] = True
        now = self._env._now  # env.now without the property's call (every task)
        self.outstanding[task.task_id] = _Outstanding(task, now)
        self.client_tasks += 1
        self._row((now, "dispatch", round_index, device, task.task_id, None, self.version,
                   demand.peak_memory_bytes, None, None, None, None, None, None))
        self._work.submit(task)
        return task

    def _select_idle(self, count: int, round_index: int) -> np.ndarray:
        """Up to ``count`` idle devices at random, leaving out those hopeless for this round's task and those the
        transport cannot reach (``Transport.unreachable``: a real device gone silent, until it is back)."""
        free = ~self.busy
        gone = self._transport.unreachable()
        if gone:
            free[list(gone)] = False
        if self._hopeless_key is not None:
            if self._hopeless_key == self._task_key(round_index):
                free &= ~self._hopeless
            else:
                self._hopeless[:], self._hopeless_key = False, None
        idle = np.flatnonzero(free)
        count = min(count, len(idle))
        return np.sort(self._rng.choice(idle, size=count, replace=False))

    def _task_key(self, round_index: int) -> tuple:
        """What makes two tasks alike for ``can_ever_complete``: the model version and the round's task."""
        return (self.version, *self._plan(round_index, 0))

    def _note_refusal(self, entry: _Outstanding) -> None:
        """A device refused (or left): remember it if it can never complete a task like this one."""
        task = entry.task
        if (self._can_ever_complete is None or task.model_version != self.version
                or self._can_ever_complete(task, entry.dispatched_s)):
            return
        key = self._task_key(task.round_index)
        if key != self._hopeless_key:
            self._hopeless[:], self._hopeless_key = False, key
        self._hopeless[task.device] = True

    def _stop(self, reason: str) -> None:
        if not self.finished.triggered:
            self.stopped_by = reason
            self.finished.succeed()

    def _start_watch(self) -> None:
        """Stop with ``no_progress`` once nothing was aggregated for ``max_idle_s`` (None: never)."""
        def watch():
            while not self.finished.triggered:
                since = self._progress_s
                yield self._env.timeout(max(0.0, since + self._max_idle_s - self._env.now))
                if self._progress_s == since:
                    self._stop("no_progress")

        if self._max_idle_s is not None:
            self._env.process(watch())

    @property
    def unfinished_round(self) -> RoundRecord | None:
        """The round (or partial aggregation buffer) open when the run stopped, if anything happened in it."""
        return None

    def _count_dropout(self, cause: str) -> None:
        self.dropouts[cause] = self.dropouts.get(cause, 0) + 1

    # --- receiving ------------------------------------------------------------------------
    def _resolve(self, task_id: int) -> _Outstanding | None:
        entry = self.outstanding.pop(task_id, None)
        if entry is not None:
            self.busy[entry.task.device] = False
        return entry

    def _resolve_failed(self, task_id: int) -> _Outstanding | None:
        entry = self._resolve(task_id)
        if entry is not None:
            self._work.cancel(task_id)
        return entry

    def _on_message(self, msg: Message, delivery: Delivery) -> None:
        if type(msg) is Update:  # Update is final: no subclass travels
            entry = self._resolve(msg.task_id)
            if entry is None:
                return
            now = self._env._now  # env.now without the property's call (every update)
            if not entry.waiting:
                self._work.cancel(msg.task_id)
                self._record(now, "discard", entry.task.round_index, msg.device, msg.task_id, "late",
                             msg.model_version)
                self._on_freed()
                return
            link_s = msg.download_link_s + delivery.link_s
            queue_s = msg.download_queue_s + delivery.queue_s
            self._on_update(entry, msg, link_s, queue_s, now - entry.dispatched_s)
        elif isinstance(msg, (Refusal, Leave)):
            entry = self._resolve_failed(msg.task_id)
            if entry is None:
                return
            self._note_refusal(entry)
            if entry.waiting:  # the device recorded the event itself; count it once here
                self._count_dropout(msg.cause)
                self._on_failed(entry, msg.cause)
            else:
                self._on_freed()

    def _on_lost(self, msg: Message, device: int) -> None:
        task_id = getattr(msg, "task_id", None)
        entry = self._resolve_failed(task_id) if task_id is not None else None
        if entry is None:
            return
        self._record(self._env.now, "dropout", entry.task.round_index, device, task_id, "link")
        if entry.waiting:
            self._count_dropout("link")
            self._on_failed(entry, "link")
        else:
            self._on_freed()

    def _accept(self, entry: _Outstanding, msg: Update, link_s: float, queue_s: float,
                task_s: float, staleness: int) -> None:
        self.updates_accepted += 1
        self._row((self._env._now, "update", entry.task.round_index, msg.device, msg.task_id, None,
                   msg.model_version, None, None, msg.compute_s, link_s, queue_s, task_s, staleness))
        self._work.collect(entry.task)
        self._accepted.append(entry.task.task_id)

    # --- hooks for the disciplines ------------------------------------------------------------
    def _on_update(self, entry, msg, link_s, queue_s, task_s) -> None:
        raise NotImplementedError

    def _on_failed(self, entry: _Outstanding, cause: str) -> None:
        raise NotImplementedError

    def _on_freed(self) -> None:
        """A device that the coordinator had stopped waiting for became idle again."""
