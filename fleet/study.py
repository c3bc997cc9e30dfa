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
    peak_demand_by_class: dict[str, int]  # class -> largest memory demand of a task dispatched to it
    participants_by_class: Counter  # class -> devices with at least one accepted update


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
    peak_demand: dict[str, int] = {}
    ev, dev_i, cause_i, task_i = _COL["event"], _COL["device"], _COL["cause"], _COL["task"]
    demand_i = _COL["demand_bytes"]
    for row in sim.kernel.recorder.rows:
        kind = row[ev]
        if kind == "dispatch":
            c = cls_of[row[dev_i]]
            tasks[c] += 1
            if row[demand_i] is not None and row[demand_i] > peak_demand.get(c, -1):
                peak_demand[c] = row[demand_i]
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
                 threshold, len(participants), round_time_s, by_cause, dict(by_round), peak_demand,
                 Counter(cls_of[d] for d in participants))


def time_to_target_s(evaluations, target: float) -> float | None:
    """The first evaluation time at which accuracy reached ``target`` (None if never)."""
    return next((e.time_s for e in evaluations if e.accuracy >= target), None)


def learning_summary(sim: Simulation) -> dict:
    """The learning figures of ``summary.json`` (None in timing mode)."""
    plane = sim.learning
    if plane is None or not plane.evaluations:
        return {"final_accuracy": None, "final_loss": None, "best_accuracy": None,
                "time_to_target_s": None, "target_accuracy": None, "local_updates_computed": 0,
                "versions_resumed": 0}
    last = plane.evaluations[-1]
    target = sim.scenario.evaluation.target_accuracy
    accuracies = [m["accuracy"] for m in plane.metrics_by_version.values()]
    return {"final_accuracy": last.accuracy, "final_loss": last.loss, "best_accuracy": max(accuracies),
            "time_to_target_s": time_to_target_s(plane.evaluations, target), "target_accuracy": target,
            "final_density": plane.state.density, "local_updates_computed": plane.jobs_run,
            "versions_resumed": plane.versions_resumed}


def memory_eligible(sim: Simulation) -> int:
    """Devices whose free memory at t = 0 covers their own training task's peak demand: how many could
    take part at all, before availability, links and deadlines have their say."""
    free = sim.devices.free_memory_bytes
    config = sim.task_configs.get("train")
    if config is None:
        return 0
    if sim.learning is not None:  # each device's task is fitted to its data
        algorithm, parts = sim.learning.algorithm, sim.learning.partitions
        demand = lambda d: algorithm.demand(algorithm.client_task(config, len(parts[d]))).peak_memory_bytes  # noqa: E731
    else:
        demand = lambda d: sim.demands["train"].peak_memory_bytes  # noqa: E731
    simulated = sim.first_real if sim.bridge is not None else len(sim.profiles)
    eligible = sum(1 for d in range(simulated) if free(d, 0.0) >= demand(d))
    if sim.bridge is not None:  # real devices: the free memory they reported when they attached
        eligible += sum(1 for d, real in sim.bridge.real.items() if real.free_memory_bytes >= demand(d))
    return eligible


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
            "participants": study.participants_by_class.get(c, 0),
            "peak_demand_bytes": study.peak_demand_by_class.get(c),
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
        "memory_eligible": memory_eligible(sim),
        "real_devices": 0 if sim.bridge is None else len(sim.bridge.real),
        "real_updates_accepted": 0 if sim.bridge is None else sim.bridge.real_updates_accepted,
        "bridge_rejected": {} if sim.bridge is None else dict(sorted(sim.bridge.rejected.items())),
        "dropouts": dropouts,
        "dropouts_seen_by_coordinator": seen,
        "round_time_s": percentiles(study.round_time_s),
        "straggler_tail_threshold_s": study.tail_threshold_s,
        "demand": {phase: {"peak_memory_bytes": d.peak_memory_bytes, "flops": d.flops,
                           "bytes_down": d.bytes_down, "bytes_up": d.bytes_up}
                   for phase, d in sim.demands.items()},
        "client_flops": sim.client_flops,
        "bytes_up": sim.network.bytes_sent[True],
        "bytes_down": sim.network.bytes_sent[False],
        "server_demand": None if sim.server_demand is None else {
            "peak_memory_bytes": sim.server_demand.peak_memory_bytes, "flops": sim.server_demand.flops},
        **learning_summary(sim),
        "by_class": by_class,
        "event_log_sha256": event_log_sha256,
        "events": len(sim.kernel.recorder.rows),
        "wall_s": sim.wall_s,
    }
