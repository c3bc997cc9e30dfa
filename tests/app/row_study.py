"""The study as one pass over the event log's rows and one call per device: how ``fleet.app.study.analyse`` and
``fleet.app.timeline`` were written before they read columns and arrays. Kept as the oracle the vectorized
analysis is held equal to (``tests/app/test_study_columns.py``)."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from fleet.app.study import Study
from fleet.app.timeline import ClassTimeline
from fleet.core.recorder import EVENT_COLUMNS

_TERMINAL = frozenset(("update", "refusal", "dropout", "discard"))
_COL = {name: i for i, name in enumerate(EVENT_COLUMNS)}


def analyse_rows(sim) -> Study:
    fleet = sim.fleet
    cls_of = [fleet.device_class(d) for d in fleet.devices]
    devices_by_class = dict(Counter(cls_of))
    tasks, accepted = Counter(), Counter()
    dropouts: dict[str, Counter] = defaultdict(Counter)
    completion: dict[str, list[float]] = defaultdict(list)
    parts: list[tuple[str, float, float, float, float]] = []
    participants: set[int] = set()
    ended: set[int] = set()
    dispatched: dict[int, str] = {}  # task -> its device's class
    discarded: dict[str, Counter] = defaultdict(Counter)
    by_cause: Counter = Counter()
    by_round: dict[int, Counter] = defaultdict(Counter)
    peak_demand: dict[str, int] = {}
    ev, dev_i, cause_i, task_i = _COL["event"], _COL["device"], _COL["cause"], _COL["task"]
    demand_i = _COL["demand_bytes"]
    for row in sim.kernel.recorder.rows:
        kind = row[ev]
        if kind == "dispatch":
            c = cls_of[row[dev_i]]
            tasks[c] += 1
            dispatched[row[task_i]] = c
            if row[demand_i] is not None and row[demand_i] > peak_demand.get(c, -1):
                peak_demand[c] = row[demand_i]
            continue
        if kind not in _TERMINAL or row[task_i] in ended:
            continue
        ended.add(row[task_i])
        if kind == "discard":
            discarded[cls_of[row[dev_i]]][row[cause_i]] += 1
        elif kind == "update":
            c = cls_of[row[dev_i]]
            accepted[c] += 1
            participants.add(row[dev_i])
            task_s = row[_COL["task_s"]]
            completion[c].append(task_s)
            parts.append((c, task_s, row[_COL["compute_s"]], row[_COL["link_s"]],
                          row[_COL["queue_s"]]))
        else:
            dropouts[cls_of[row[dev_i]]][row[cause_i]] += 1
            by_cause[row[cause_i]] += 1
            by_round[row[_COL["round"]]][row[cause_i]] += 1
    tail: dict[str, Counter] = defaultdict(Counter)
    threshold = None
    if parts:
        threshold = float(np.percentile([p[1] for p in parts], 90))
        for c, task_s, compute_s, link_s, queue_s in parts:
            if task_s >= threshold:
                shares = {"compute": compute_s, "link": link_s, "queueing": queue_s}
                tail[c][max(shares, key=shares.get)] += 1
    ended_rounds = sim.coordinator.rounds
    round_time_s = [r.end_s - r.start_s for r in ended_rounds if r.status != "empty"]
    in_flight = Counter(c for task, c in dispatched.items() if task not in ended)
    return Study(devices_by_class, tasks, accepted, dict(dropouts), dict(completion), dict(tail),
                 threshold, len(participants), round_time_s, by_cause, dict(by_round), peak_demand,
                 Counter(cls_of[d] for d in participants), dict(discarded), in_flight,
                 sum(r.status == "empty" for r in ended_rounds))


def _round_count(sim, dispatches: list[tuple]) -> int:
    coord = sim.coordinator
    ended = len(coord.rounds) + (coord.unfinished_round is not None)
    return max(ended, max((row[_COL["round"]] + 1 for row in dispatches), default=0))


def _round_demand(dispatches: list[tuple], rounds: int) -> tuple[list[int | None], list[float | None]]:
    """Per round: the largest dispatched demand (bytes) and the time of the first dispatch (s)."""
    demand: list[int | None] = [None] * rounds
    first_s: list[float | None] = [None] * rounds
    r_i, d_i, t_i = _COL["round"], _COL["demand_bytes"], _COL["time_s"]
    for row in dispatches:
        r = row[r_i]
        if first_s[r] is None:
            first_s[r] = row[t_i]
        if row[d_i] is not None and (demand[r] is None or row[d_i] > demand[r]):
            demand[r] = row[d_i]
    return demand, first_s


def _eligible(sim, cls_of: list[str], classes: list[str], demand: list[int | None],
              first_s: list[float | None]) -> dict[str, list[int]]:
    out = {c: [0] * len(demand) for c in classes}
    fleet = sim.fleet
    for r, (need, t_s) in enumerate(zip(demand, first_s)):
        if need is None:
            continue
        for d in fleet.devices:
            if fleet.free_bytes_at(d, t_s) >= need:
                out[cls_of[d]][r] += 1
    return out


def class_timeline_rows(sim) -> ClassTimeline:
    """The participation timeline of ``sim`` (see the module docstring). A task counts once, at its first
    terminal row, as in ``fleet.app.study.analyse``."""
    fleet = sim.fleet
    cls_of = [fleet.device_class(d) for d in fleet.devices]
    classes = sorted(set(cls_of))
    rows = sim.kernel.recorder.rows
    ev, dev_i, task_i, r_i, cause_i = (_COL[k] for k in ("event", "device", "task", "round", "cause"))
    dispatches = [row for row in rows if row[ev] == "dispatch"]
    rounds = _round_count(sim, dispatches)
    demand, first_s = _round_demand(dispatches, rounds)
    zeros = lambda: {c: [0] * rounds for c in classes}  # noqa: E731
    dispatched, accepted, refused = zeros(), zeros(), zeros()
    for row in dispatches:
        dispatched[cls_of[row[dev_i]]][row[r_i]] += 1
    ended: set[int] = set()
    first_update: dict[int, int] = {}  # device -> round of its first accepted update
    refused_in: dict[int, int] = {}  # device -> round of its first memory refusal
    later: dict[int, bool] = defaultdict(bool)  # device -> accepted in a round after a memory refusal
    for row in rows:
        kind = row[ev]
        if kind not in _TERMINAL or row[task_i] in ended:
            continue
        ended.add(row[task_i])
        d, r = row[dev_i], row[r_i]
        if kind == "update":
            accepted[cls_of[d]][r] += 1
            first_update.setdefault(d, r)
            if d in refused_in and r > refused_in[d]:
                later[d] = True
        elif kind in ("refusal", "dropout") and row[cause_i] == "memory":
            refused[cls_of[d]][r] += 1
            refused_in.setdefault(d, r)
    so_far = zeros()
    for d, r in first_update.items():
        for k in range(r, rounds):
            so_far[cls_of[d]][k] += 1
    rejoined = {c: 0 for c in classes}
    for d, joined in later.items():
        rejoined[cls_of[d]] += int(joined)
    series = {"eligible": _eligible(sim, cls_of, classes, demand, first_s), "dispatched": dispatched,
              "accepted": accepted, "memory_refused": refused, "participants_so_far": so_far}
    return ClassTimeline(demand, series, rejoined)


def class_energy_j_rows(sim) -> dict[str, float]:
    """Joules the simulated devices of each class spent on tasks (compute and radio, ``devices.physics.
    energy_j``; ``SimulatedDevices.energy_spent_j``). Real devices report none."""
    spent = sim.devices.energy_spent_j
    fleet = sim.fleet
    out: dict[str, float] = defaultdict(float)
    for d in fleet.devices:
        if not fleet.is_real(d):
            out[fleet.device_class(d)] += float(spent(d))
    return dict(sorted(out.items()))
