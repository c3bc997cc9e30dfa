"""The coordinators against ``FunctionTransport``: no network, no devices, exact event rows.

Each fleet selects every device it has (so the selection draw cannot change who is asked), and each
device's reply is scripted: what it sends and how long after the task. Times are binary fractions, so
every expected time is exact."""

from __future__ import annotations

from algorithms.base import ResourceDemand, TaskConfig
from fleet.coordinator.asynchronous import AsyncConfig, AsyncCoordinator
from fleet.coordinator.sync import SyncConfig, SyncCoordinator
from fleet.core.kernel import EVENT_COLUMNS, Kernel
from fleet.core.messages import Refusal, Task, Update
from fleet.core.transport import FunctionTransport, Reply

PEAK = 10**6
DEMAND = ResourceDemand(peak_memory_bytes=PEAK, flops=10**9, bytes_down=1000, bytes_up=500)
LINK_S = 0.25  # the upload's link time every update reports
DOWN_S = 0.125  # the download's link time every update carries


def _plan(round_index: int, device: int):
    return TaskConfig("train", 1, 1), DEMAND


def row(time_s, event, **cells) -> tuple:
    """An event row: ``time_s``, ``event`` and the named cells, None elsewhere."""
    values = dict.fromkeys(EVENT_COLUMNS)
    values.update(time_s=time_s, event=event, **cells)
    return tuple(values[c] for c in EVENT_COLUMNS)


def dispatch(t, r, device, task, version=0):
    return row(t, "dispatch", round=r, device=device, task=task, model_version=version, demand_bytes=PEAK)


def update(t, r, device, task, sent_s, version=0, staleness=0, compute_s=1.0):
    return row(t, "update", round=r, device=device, task=task, model_version=version, compute_s=compute_s,
               link_s=DOWN_S + LINK_S, queue_s=0.0, task_s=t - sent_s, staleness=staleness)


def answers(script: dict[int, tuple[float, str]]):
    """A handler: device -> (seconds after the task, ``update`` / ``memory`` refusal / ``lost``)."""
    def handler(task: Task) -> Reply | None:
        if task.device not in script:
            return None
        after_s, what = script[task.device]
        if what == "lost":
            return Reply(after_s, None)
        if what == "update":
            msg = Update(task.task_id, task.device, task.round_index, task.model_version, 1.0, DOWN_S, 0.0,
                         task.bytes_up)
            return Reply(after_s, msg, LINK_S)
        return Reply(after_s, Refusal(task.task_id, task.device, task.round_index, what, PEAK, 0))

    return handler


class Work:
    """A ``LocalWork`` that writes down what it is told."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def submit(self, task): self.calls.append(("submit", task.task_id))
    def cancel(self, task_id): self.calls.append(("cancel", task_id))
    def collect(self, task): self.calls.append(("collect", task.task_id))
    def aggregate(self, task_ids, weights): self.calls.append(("aggregate", list(task_ids), list(weights)))


def _sync(script, n, k, until_s=10.0, **config):
    kernel = Kernel(seed=1)
    transport = FunctionTransport(kernel.env, answers(script))
    work = Work()
    coord = SyncCoordinator(kernel, transport, n, _plan, SyncConfig(rounds=1, clients_per_round=k, **config),
                            work)
    kernel.env.process(coord.process())
    kernel.env.run(until=until_s)
    return coord, kernel.recorder.rows, work, transport


def test_a_sync_round_ends_at_the_kth_update_and_aggregates():
    coord, rows, work, transport = _sync({0: (1.0, "update"), 1: (3.0, "update"), 2: (2.0, "update")}, 3, 2,
                                         over_selection=0.5)
    assert rows == [
        row(0.0, "round_start", round=0, model_version=0),
        dispatch(0.0, 0, 0, 0), dispatch(0.0, 0, 1, 1), dispatch(0.0, 0, 2, 2),
        update(1.0, 0, 0, 0, 0.0), update(2.0, 0, 2, 2, 0.0),
        row(2.0, "round_end", round=0, model_version=1),
        row(3.0, "discard", round=0, device=1, task=1, cause="late", model_version=0),  # over-selected
    ]
    assert [t.device for t in transport.sent] == [0, 1, 2]
    assert coord.stopped_by == "completed" and coord.version == 1 and coord.rounds[0].accepted == 2
    assert work.calls == [("submit", 0), ("submit", 1), ("submit", 2), ("collect", 0), ("collect", 2),
                          ("aggregate", [0, 2], [1.0, 1.0]), ("cancel", 1)]


def test_a_sync_deadline_drops_the_straggler_and_fails_the_quorum():
    coord, rows, work, _ = _sync({0: (1.0, "update"), 1: (4.0, "update")}, 2, 2, deadline_s=2.5)
    assert rows == [
        row(0.0, "round_start", round=0, model_version=0),
        dispatch(0.0, 0, 0, 0), dispatch(0.0, 0, 1, 1),
        update(1.0, 0, 0, 0, 0.0),
        row(2.5, "dropout", round=0, device=1, task=1, cause="deadline", model_version=0),
        row(2.5, "round_end", round=0, cause="quorum", model_version=0),
        row(4.0, "discard", round=0, device=1, task=1, cause="late", model_version=0),
    ]
    assert coord.dropouts == {"deadline": 1} and coord.version == 0 and coord.rounds[0].status == "failed"
    assert ("aggregate", [0], [1.0]) not in work.calls and ("cancel", 0) in work.calls


def test_a_refusal_is_a_dropout_under_its_cause_and_the_round_aggregates_on_quorum():
    coord, rows, work, _ = _sync({0: (1.0, "update"), 1: (0.5, "memory")}, 2, 2, quorum=0.5)
    assert rows == [  # the device records its own refusal; the coordinator only counts it
        row(0.0, "round_start", round=0, model_version=0),
        dispatch(0.0, 0, 0, 0), dispatch(0.0, 0, 1, 1),
        update(1.0, 0, 0, 0, 0.0),
        row(1.0, "round_end", round=0, model_version=1),
    ]
    assert coord.dropouts == {"memory": 1} and coord.rounds[0].dropouts == {"memory": 1}
    assert work.calls[2:] == [("cancel", 1), ("collect", 0), ("aggregate", [0], [1.0])]


def test_a_lost_link_is_a_link_dropout_recorded_by_the_coordinator():
    coord, rows, work, _ = _sync({0: (1.0, "update"), 1: (1.5, "lost")}, 2, 2, quorum=0.5)
    assert rows == [
        row(0.0, "round_start", round=0, model_version=0),
        dispatch(0.0, 0, 0, 0), dispatch(0.0, 0, 1, 1),
        update(1.0, 0, 0, 0, 0.0),
        row(1.5, "dropout", round=0, device=1, task=1, cause="link"),
        row(1.5, "round_end", round=0, model_version=1),
    ]
    assert coord.dropouts == {"link": 1} and ("cancel", 1) in work.calls


def test_fedasync_weights_a_stale_update_by_its_staleness():
    """Concurrency 2, buffer 1: device 0's update at 1 s aggregates (version 1) and device 0 gets a new
    task; device 1's update at 2 s was computed on version 0, staleness 1, weight (1 + 1) ** -0.5."""
    kernel = Kernel(seed=1)
    transport = FunctionTransport(kernel.env, answers({0: (1.0, "update"), 1: (2.0, "update")}))
    work = Work()
    coord = AsyncCoordinator(kernel, transport, 2, _plan, AsyncConfig(aggregations=2, concurrency=2,
                                                                     buffer_size=1), work)
    kernel.env.process(coord.process())
    kernel.env.run(until=coord.finished)
    assert kernel.recorder.rows == [
        dispatch(0.0, 0, 0, 0), dispatch(0.0, 0, 1, 1),
        update(1.0, 0, 0, 0, 0.0),
        row(1.0, "aggregate", round=0, model_version=1),
        dispatch(1.0, 1, 0, 2, version=1),
        update(2.0, 0, 1, 1, 0.0, staleness=1),
        row(2.0, "aggregate", round=1, model_version=2),
    ]
    assert [c for c in work.calls if c[0] == "aggregate"] == [("aggregate", [0], [1.0]),
                                                             ("aggregate", [1], [2.0 ** -0.5])]
    assert coord.stopped_by == "completed" and [r.mean_staleness for r in coord.rounds] == [0.0, 1.0]


def test_a_device_the_transport_cannot_reach_is_never_selected():
    """A real device whose hub purged it got a task every round, each an instant dropout: the coordinator now
    leaves out what ``Transport.unreachable`` lists."""
    kernel = Kernel(seed=1)
    transport = FunctionTransport(kernel.env, answers({d: (1.0, "update") for d in range(4)}))
    transport.unreachable = lambda: [1, 3]
    coord = SyncCoordinator(kernel, transport, 4, _plan, SyncConfig(rounds=1, clients_per_round=4,
                                                                    over_selection=0.0), Work())
    kernel.env.process(coord.process())
    kernel.env.run(until=10.0)
    assert sorted(t.device for t in transport.sent) == [0, 2]
