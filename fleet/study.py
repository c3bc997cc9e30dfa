"""The study a run answers: participation, dropouts by cause, stragglers by class and by cause.

Pure analysis of a finished ``Simulation``'s event log; ``report`` writes and draws it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

from fleet.kernel import EVENT_COLUMNS
from fleet.simulation import Simulation

#: Every cause the summary reports, zero or not.
DROPOUT_CAUSES = ("memory", "deadline", "offline", "battery", "link", "failure", "flops")
_COL = {name: i for i, name in enumerate(EVENT_COLUMNS)}


def percentiles(values, qs=(50, 90, 99)) -> dict[str, float | None]:
    """``{"p50": ..., ...}``; ``None`` for each when there are no values."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return {f"p{q}": None for q in qs}
    return {f"p{q}": float(np.percentile(arr, q)) for q in qs}


@dataclass
class Study:
    """What a run's event log says. A task's outcome is its *first* terminal event: an update,
    or a refusal/dropout with its cause. A task the coordinator gave up on at the deadline but
    whose device had already gone offline counts as ``offline``, not ``deadline``."""

    devices_by_class: dict[str, int]
    tasks_by_class: Counter
    accepted_by_class: Counter
    dropouts_by_class: dict[str, Counter]  # class -> cause -> count (device-side and coordinator)
    completion_s_by_class: dict[str, list[float]]
    tail_cause_by_class: dict[str, Counter]  # class -> dominant component of tasks in the tail
    tail_threshold_s: float | None
    participants: int
    round_time_s: list[float]
    dropouts: Counter  # cause -> tasks
    dropouts_by_round: dict[int, Counter]


def analyse(sim: Simulation) -> Study:
    profiles = sim.profiles
    cls_of = [p.device_class for p in profiles]
    devices_by_class = dict(Counter(cls_of))
    tasks, accepted = Counter(), Counter()
    dropouts: dict[str, Counter] = defaultdict(Counter)
    completion: dict[str, list[float]] = defaultdict(list)
    parts: list[tuple[str, float, float, float, float]] = []
    participants: set[int] = set()
    ended: set[int] = set()
    by_cause: Counter = Counter()
    by_round: dict[int, Counter] = defaultdict(Counter)
    ev, dev_i, cause_i, task_i = _COL["event"], _COL["device"], _COL["cause"], _COL["task"]
    for row in sim.kernel.recorder.rows:
        kind = row[ev]
        if kind == "dispatch":
            tasks[cls_of[row[dev_i]]] += 1
            continue
        if kind not in ("update", "refusal", "dropout") or row[task_i] in ended:
            continue
        ended.add(row[task_i])
        if kind == "update":
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
    round_time_s = [r.end_s - r.start_s for r in sim.coordinator.rounds]
    return Study(devices_by_class, tasks, accepted, dict(dropouts), dict(completion), dict(tail),
                 threshold, len(participants), round_time_s, by_cause, dict(by_round))


def summary(sim: Simulation, study: Study, event_log_sha256: str) -> dict:
    """The figures ``summary.json`` holds (contract: README, "Outputs")."""
    coord = sim.coordinator
    n = len(sim.profiles)
    dropouts = {cause: study.dropouts.get(cause, 0) for cause in DROPOUT_CAUSES}
    seen = {cause: coord.dropouts.get(cause, 0) for cause in DROPOUT_CAUSES}
    by_class = {}
    for c, count in sorted(study.devices_by_class.items()):
        by_class[c] = {
            "devices": count,
            "client_tasks": study.tasks_by_class.get(c, 0),
            "updates_accepted": study.accepted_by_class.get(c, 0),
            "dropouts": dict(sorted(study.dropouts_by_class.get(c, Counter()).items())),
            "completion_s": percentiles(study.completion_s_by_class.get(c, [])),
            "tail_cause": dict(sorted(study.tail_cause_by_class.get(c, Counter()).items())),
        }
    return {
        "scenario": sim.scenario.name,
        "mode": sim.scenario.mode,
        "coordinator": sim.scenario.coordinator.mode,
        "algorithm": sim.scenario.algorithm.name,
        "seed": sim.scenario.seed,
        "devices": n,
        "rounds": len(coord.rounds),
        "rounds_aggregated": sum(r.aggregated for r in coord.rounds),
        "stopped_by": sim.stopped_by,
        "sim_time_s": sim.sim_time_s,
        "client_tasks": coord.client_tasks,
        "updates_accepted": coord.updates_accepted,
        "participants": study.participants,
        "participation_rate": study.participants / n,
        "dropouts": dropouts,
        "dropouts_seen_by_coordinator": seen,
        "round_time_s": percentiles(study.round_time_s),
        "straggler_tail_threshold_s": study.tail_threshold_s,
        "demand": {phase: {"peak_memory_bytes": d.peak_memory_bytes, "flops": d.flops,
                           "bytes_down": d.bytes_down, "bytes_up": d.bytes_up}
                   for phase, d in sim.demands.items()},
        "by_class": by_class,
        "event_log_sha256": event_log_sha256,
        "events": len(sim.kernel.recorder.rows),
        "wall_s": sim.wall_s,
    }
