"""The study a run answers: participation, dropouts by cause, stragglers by class and by cause.

Pure analysis of a finished ``Simulation``'s event log; ``report`` writes and draws it. Every field of
``summary.json`` is described in ``docs/study.md``, with the accounting identity every run satisfies::

    client_tasks = updates_accepted + sum(dropouts) + sum(discarded) + in_flight_at_end

(also per device class). A task's one outcome is its first terminal row in the log. Who could and who did
take part round by round (``timeline``) and the energy per class come from ``fleet.app.timeline``.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from fleet.app.simulation import Simulation
from fleet.app.timeline import class_energy_j, class_timeline, energy_json, timeline_json
from fleet.app.view import classes_of, free_bytes_of, task_peak_bytes_all
from fleet.core.messages import CAUSES

#: Every cause the summary reports, zero or not.
DROPOUT_CAUSES = CAUSES  # the one list, fleet.core.messages
#: Why an update that arrived was not used: ``late`` (the coordinator had stopped waiting for it: an
#: over-selected straggler after the round closed, or a task past its timeout) or ``stale``.
DISCARD_CAUSES = ("late", "stale")
_TERMINAL = ("update", "refusal", "dropout", "discard")


def percentiles(values, qs=(50, 90, 99)) -> dict[str, float | None]:
    """``{"p50": ..., ...}``; ``None`` for each when there are no values."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return {f"p{q}": None for q in qs}
    return {f"p{q}": float(np.percentile(arr, q)) for q in qs}


@dataclass
class Study:
    """What a run's event log says. A task's outcome is its *first* terminal event: an update, a
    refusal/dropout with its cause, or a discarded update (late or stale); a task with none was in
    flight at the end. A task the coordinator gave up on at the deadline but whose device had already
    gone offline (or refused) counts as ``offline`` (the device's row comes first), not ``deadline``;
    the coordinator's view is ``dropouts_seen_by_coordinator``."""

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
    discarded_by_class: dict[str, Counter]  # class -> discard cause -> count
    in_flight_by_class: Counter  # class -> tasks with no outcome when the run stopped
    empty_rounds: int  # rounds that ended having selected nobody (not in ``round_time_s``)


def _counter(keys: np.ndarray, names: list) -> Counter:
    """Counter of ``names[k]`` over the codes ``keys`` (only keys that occur)."""
    codes, counts = np.unique(keys, return_counts=True)
    return Counter({names[k]: int(n) for k, n in zip(codes.tolist(), counts.tolist())})


def _nested(outer: np.ndarray, inner: np.ndarray, outer_name, inner_names: list) -> dict:
    """{outer_name(o): Counter({inner_names[i]: count})} over the pairs (``outer``, ``inner``)."""
    out: dict = {}
    if len(outer):
        pairs, counts = np.unique(np.stack([outer, inner]), axis=1, return_counts=True)
        for (o, i), n in zip(pairs.T.tolist(), counts.tolist()):
            out.setdefault(outer_name(o), Counter())[inner_names[i]] = int(n)
    return out


def first_outcomes(table) -> np.ndarray:
    """Row numbers, in log order, of each task's first terminal row (its one outcome)."""
    terminal = np.flatnonzero(np.isin(table["event"], [table.code("event", k) for k in _TERMINAL]))
    _, first = np.unique(table["task"][terminal], return_index=True)
    return terminal[np.sort(first)]


def analyse(sim: Simulation) -> Study:
    """The study of ``sim``'s event log, read as columns (``EventRecorder.table``): the same figures as one
    pass over the rows would give, a task counted at its first terminal row."""
    names, cls_of = classes_of(sim.fleet)
    devices_by_class = {names[c]: n for c, n in enumerate(np.bincount(cls_of, minlength=len(names)).tolist())
                        if n}
    t = sim.kernel.recorder.table(("event", "round", "device", "task", "cause", "demand_bytes", "compute_s",
                                   "link_s", "queue_s", "task_s"))
    ev, dev, causes = t["event"], t["device"], [*t.names["cause"], None]  # code -1: an empty cell
    dispatch = np.flatnonzero(ev == t.code("event", "dispatch"))
    dispatch_cls = cls_of[dev[dispatch]]
    tasks = _counter(dispatch_cls, names)
    demand = t["demand_bytes"][dispatch]
    with_demand = demand >= 0
    peak = np.full(len(names), -1, dtype=np.int64)
    np.maximum.at(peak, dispatch_cls[with_demand], demand[with_demand])
    peak_demand = {names[c]: int(v) for c, v in enumerate(peak.tolist()) if v >= 0}

    first = first_outcomes(t)
    kind, first_cls, cause = ev[first], cls_of[dev[first]], t["cause"][first]
    discard = kind == t.code("event", "discard")
    discarded = _nested(first_cls[discard], cause[discard], names.__getitem__, causes)
    update = kind == t.code("event", "update")
    accepted = _counter(first_cls[update], names)
    participants = np.unique(dev[first][update])
    rows = first[update]
    task_s, upd_cls = t["task_s"][rows], first_cls[update]
    completion = {names[c]: task_s[upd_cls == c].tolist() for c in np.unique(upd_cls).tolist()}
    dropped = ~(discard | update)
    dropouts = _nested(first_cls[dropped], cause[dropped], names.__getitem__, causes)
    by_cause = _counter(cause[dropped], causes)
    by_round = _nested(t["round"][first][dropped], cause[dropped], int, causes)

    tail: dict[str, Counter] = {}
    threshold = None
    if len(rows):
        threshold = float(np.percentile(task_s, 90))
        slow = task_s >= threshold
        shares = np.stack([t["compute_s"][rows], t["link_s"][rows], t["queue_s"][rows]], axis=1)[slow]
        tail = _nested(upd_cls[slow], np.argmax(shares, axis=1), names.__getitem__,
                       ["compute", "link", "queueing"])
    ended_rounds = sim.coordinator.rounds
    round_time_s = [r.end_s - r.start_s for r in ended_rounds if r.status != "empty"]
    open_tasks = ~np.isin(t["task"][dispatch], t["task"][first])
    in_flight = _counter(dispatch_cls[open_tasks], names)
    return Study(devices_by_class, tasks, accepted, dropouts, completion, tail,
                 threshold, len(participants), round_time_s, by_cause, by_round, peak_demand,
                 _counter(cls_of[participants], names), discarded, in_flight,
                 sum(r.status == "empty" for r in ended_rounds))


def time_to_target_s(evaluations, target: float) -> float | None:
    """The first evaluation time at which accuracy reached ``target`` (None if never)."""
    return next((e.time_s for e in evaluations if e.accuracy >= target), None)


def finite(value: float | None) -> float | None:
    """``value``, or None when it is NaN or infinite (strict JSON has no such numbers)."""
    return value if value is not None and math.isfinite(value) else None


def divergence(sim: Simulation) -> str | None:
    """``"diverged at round r: loss became inf"`` for the first evaluated model whose loss (or accuracy)
    is not finite, naming the round that aggregated it; None when every metric is finite."""
    produced = {r.model_version: r.round_index for r in sim.coordinator.rounds if r.aggregated}
    for version, metrics in sorted(sim.record.metrics_by_version.items()):
        for name in ("loss", "accuracy"):
            value = metrics[name]
            if not math.isfinite(value):
                where = f"round {produced[version]}" if version in produced else f"model version {version}"
                return f"diverged at {where}: {name} became {'nan' if math.isnan(value) else 'inf'}"
    return None


def learning_summary(sim: Simulation) -> dict:
    """The learning figures of ``summary.json`` (None in timing mode); a metric that is not finite is
    None, and ``diverged`` says where it went."""
    plane = sim.record
    if not plane.evaluations:
        return {"final_accuracy": None, "final_loss": None, "best_accuracy": None,
                "time_to_target_s": None, "target_accuracy": None, "local_updates_computed": 0,
                "versions_resumed": 0, "diverged": None}
    last = plane.evaluations[-1]
    target = sim.scenario.evaluation.target_accuracy
    accuracies = [m["accuracy"] for m in plane.metrics_by_version.values() if math.isfinite(m["accuracy"])]
    return {"final_accuracy": finite(last.accuracy), "final_loss": finite(last.loss),
            "best_accuracy": max(accuracies, default=None),
            "time_to_target_s": time_to_target_s(plane.evaluations, target), "target_accuracy": target,
            "final_density": finite(plane.state.density), "final_params": plane.state.weights.numel(),
            "final_architecture": list(plane.state.architecture), "local_updates_computed": plane.jobs_run,
            "versions_resumed": plane.versions_resumed, "diverged": divergence(sim)}


def memory_eligible(sim: Simulation) -> int:
    """Devices whose free memory at t = 0 covers their own training task's peak demand: how many could
    take part at all, before availability, links and deadlines have their say (a real device: the free
    memory it reported when it attached)."""
    return sum(memory_eligible_by_class(sim).values())


def memory_eligible_by_class(sim: Simulation) -> Counter:
    """``memory_eligible`` per device class (classes with none eligible absent)."""
    demand = task_peak_bytes_all(sim, "train")
    if demand is None:
        return Counter()
    names, cls_of = classes_of(sim.fleet)
    return _counter(cls_of[free_bytes_of(sim.fleet, 0.0) >= demand], names)


def free_bytes_p50_by_class(sim: Simulation) -> dict[str, int]:
    """The median free memory at t = 0 of each class's devices (bytes, rounded down)."""
    names, cls_of = classes_of(sim.fleet)
    free = free_bytes_of(sim.fleet, 0.0)
    out = {}
    for c, name in enumerate(names):
        mine = free[cls_of == c]
        if len(mine):
            out[name] = int(np.median(mine))
    return out


def rounds_summary(sim: Simulation, study: Study) -> dict:
    """How the rounds (sync) or aggregation buffers (async) ended: ``rounds`` ended, of which
    ``rounds_aggregated``, ``rounds_failed`` (fewer updates than ``updates_needed``) and ``empty_rounds``
    (selected nobody); ``rounds_unfinished`` (0 or 1) was open when the run stopped and is no round."""
    coord, c = sim.coordinator, sim.scenario.coordinator
    rounds = coord.rounds
    failed = [r for r in rounds if r.status == "failed"]
    open_round = coord.unfinished_round
    if c.mode == "sync":
        needed = max(1, math.ceil(c.quorum * c.clients_per_round))
    else:
        needed = 1 if c.mode == "fedasync" else c.buffer_size
    return {"rounds": len(rounds), "rounds_aggregated": sum(r.aggregated for r in rounds),
            "rounds_failed": len(failed), "empty_rounds": study.empty_rounds,
            "rounds_unfinished": int(open_round is not None), "updates_needed": needed,
            "most_updates_in_a_failed_round": max((r.accepted for r in failed), default=None),
            "unfinished_round_updates": None if open_round is None else open_round.accepted}


def summary(sim: Simulation, study: Study, event_log_sha256: str) -> dict:
    """The figures ``summary.json`` holds (contract: README, "Outputs")."""
    coord, fleet = sim.coordinator, sim.fleet
    n = len(fleet.devices)
    dropouts = {cause: study.dropouts.get(cause, 0) for cause in DROPOUT_CAUSES}
    seen = {cause: coord.dropouts.get(cause, 0) for cause in DROPOUT_CAUSES}
    by_class = {}
    eligible, free_p50 = memory_eligible_by_class(sim), free_bytes_p50_by_class(sim)
    energy = class_energy_j(sim)
    timeline = class_timeline(sim)
    for c, count in sorted(study.devices_by_class.items()):
        by_class[c] = {
            "devices": count,
            "client_tasks": study.tasks_by_class.get(c, 0),
            "updates_accepted": study.accepted_by_class.get(c, 0),
            "dropouts": dict(sorted(study.dropouts_by_class.get(c, Counter()).items())),
            "completion_s": percentiles(study.completion_s_by_class.get(c, [])),
            "tail_cause": dict(sorted(study.tail_cause_by_class.get(c, Counter()).items())),
            "discarded": {cause: study.discarded_by_class.get(c, Counter()).get(cause, 0)
                          for cause in DISCARD_CAUSES},
            "in_flight_at_end": study.in_flight_by_class.get(c, 0),
            "participants": study.participants_by_class.get(c, 0),
            "peak_demand_bytes": study.peak_demand_by_class.get(c),
            "memory_eligible": eligible.get(c, 0),
            "free_bytes_p50": free_p50[c],
            "energy_j": finite(energy.get(c, 0.0)),
            "rejoined_after_memory_refusal": timeline.rejoined[c],
        }
    return {
        "scenario": sim.scenario.name,
        "mode": sim.scenario.mode,
        "coordinator": sim.scenario.coordinator.mode,
        "algorithm": sim.scenario.algorithm.name, "algorithm_params": dict(sim.scenario.algorithm.params),
        "seed": sim.scenario.seed,
        "devices": n,
        **rounds_summary(sim, study),
        "stopped_by": sim.stopped_by,
        "sim_time_s": sim.sim_time_s,
        "client_tasks": coord.client_tasks,
        "updates_accepted": coord.updates_accepted,
        "participants": study.participants,
        "participation_rate": study.participants / n,
        "memory_eligible": sum(eligible.values()),
        "real_devices": sum(map(fleet.is_real, fleet.devices)),
        "real_updates_accepted": fleet.real_updates_accepted,
        "bridge_rejected": dict(sorted(fleet.rejected.items())),
        "dropouts": dropouts,
        "discarded": {cause: sum(c.get(cause, 0) for c in study.discarded_by_class.values())
                      for cause in DISCARD_CAUSES},
        "in_flight_at_end": sum(study.in_flight_by_class.values()),
        "dropouts_seen_by_coordinator": seen,
        "round_time_s": percentiles(study.round_time_s),
        "straggler_tail_threshold_s": study.tail_threshold_s,
        "demand": {phase: {"peak_memory_bytes": d.peak_memory_bytes, "flops": d.flops,
                           "bytes_down": d.bytes_down, "bytes_up": d.bytes_up}
                   for phase, d in sim.demands.items()},
        "client_flops": fleet.flops_spent,
        "energy_j": finite(sum(energy.values())),
        "energy": energy_json(sim, study.accepted_by_class),
        "bytes_up": sim.network.bytes_sent[True],
        "bytes_down": sim.network.bytes_sent[False],
        "server_demand": None if sim.server_demand is None else {
            "peak_memory_bytes": sim.server_demand.peak_memory_bytes, "flops": sim.server_demand.flops},
        **learning_summary(sim),
        "by_class": by_class,
        "timeline": timeline_json(timeline),
        "event_log_sha256": event_log_sha256,
        "events": len(sim.kernel.recorder.rows),
        "wall_s": sim.wall_s,
    }
