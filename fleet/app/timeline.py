"""Who could and who did take part, per device class and per round; what each class spent in energy.

Pure analysis of a finished run, as ``fleet.app.study``: the event log, the fleet's free memory and the
devices' energy counters; never the model. Round ``r``'s *demand* is the largest peak memory of a task
dispatched in it (the ``demand_bytes`` of its ``dispatch`` rows, the round's full task; a device with
less data than a batch gets a smaller one), read from the log, so an algorithm whose model shrinks during
the run shows its demand falling round by round. A device is *memory-eligible* in round ``r`` when its free
memory at the round's first dispatch covers that demand; a round that dispatched nothing has demand None
and no eligible devices. Every figure here is an int, a finite float or None (strict JSON). The log is read
as columns and the fleet as arrays, so a run of millions of devices is analysed in numpy, not per event.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from devices.catalog import DEVICE_CLASSES
from fleet.app.simulation import Simulation
from fleet.app.view import classes_of, free_bytes_of, real_mask_of

__all__ = ["ClassTimeline", "class_energy_j", "class_timeline", "energy_json", "timeline_json"]

#: The per-round, per-class series, in ``timeline_json`` order.
SERIES = ("eligible", "dispatched", "accepted", "memory_refused", "participants_so_far")


@dataclass(frozen=True)
class ClassTimeline:
    """Per round (index = round) and per class: ``demand_bytes[r]`` (None: nothing dispatched) and
    ``series[name][cls][r]`` for each name of ``SERIES``: memory-eligible devices; tasks dispatched;
    updates accepted; tasks whose outcome was a memory refusal or an out-of-memory dropout; distinct devices
    with an accepted update in rounds ``0..r``. ``rejoined[cls]``: devices whose task was refused for memory
    in some round and that had an update accepted in a later round (memory-dropped early, joined later)."""

    demand_bytes: list[int | None]
    series: dict[str, dict[str, list[int]]]
    rejoined: dict[str, int]


def _grid(cls: np.ndarray, rounds_of: np.ndarray, n_classes: int, rounds: int) -> np.ndarray:
    """Counts per (class, round) of the pairs (``cls``, ``rounds_of``)."""
    flat = np.bincount(cls.astype(np.int64) * rounds + rounds_of, minlength=n_classes * rounds)
    return flat.reshape(n_classes, rounds) if rounds else np.zeros((n_classes, 0), dtype=np.int64)


def _as_series(grid: np.ndarray, classes: list[str]) -> dict[str, list[int]]:
    return {c: grid[i].tolist() for i, c in enumerate(classes)}


def class_timeline(sim: Simulation) -> ClassTimeline:
    """The participation timeline of ``sim`` (see the module docstring). A task counts once, at its first
    terminal row, as in ``fleet.app.study.analyse``."""
    from fleet.app.study import first_outcomes  # study imports this module

    classes, cls_of = classes_of(sim.fleet)
    n_classes = len(classes)
    t = sim.kernel.recorder.table(("time_s", "event", "round", "device", "task", "cause", "demand_bytes"))
    ev, dev, rnd = t["event"], t["device"], t["round"]
    dispatch = np.flatnonzero(ev == t.code("event", "dispatch"))
    coord = sim.coordinator
    rounds = max(len(coord.rounds) + (coord.unfinished_round is not None),
                 int(rnd[dispatch].max()) + 1 if len(dispatch) else 0)
    demand: list[int | None] = [None] * rounds
    first_s: list[float | None] = [None] * rounds
    d_round, d_demand = rnd[dispatch], t["demand_bytes"][dispatch]
    seen, first_row = np.unique(d_round, return_index=True)
    for r, i in zip(seen.tolist(), first_row.tolist()):
        first_s[r] = t["time_s"][dispatch[i]].item()
    with_demand = d_demand >= 0
    peak = np.full(rounds, -1, dtype=np.int64)
    np.maximum.at(peak, d_round[with_demand], d_demand[with_demand])
    demand = [None if v < 0 else v for v in peak.tolist()]

    eligible = np.zeros((n_classes, rounds), dtype=np.int64)
    for r, (need, t_s) in enumerate(zip(demand, first_s)):
        if need is not None:
            eligible[:, r] = np.bincount(cls_of[free_bytes_of(sim.fleet, t_s) >= need], minlength=n_classes)
    dispatched = _grid(cls_of[dev[dispatch]], d_round, n_classes, rounds)

    first = first_outcomes(t)
    kind, f_dev, f_round = ev[first], dev[first], rnd[first]
    update = kind == t.code("event", "update")
    memory = (np.isin(kind, [t.code("event", "refusal"), t.code("event", "dropout")])
              & (t["cause"][first] == t.code("cause", "memory")))
    accepted = _grid(cls_of[f_dev[update]], f_round[update], n_classes, rounds)
    refused = _grid(cls_of[f_dev[memory]], f_round[memory], n_classes, rounds)

    # Each device's first accepted update (its round), and whether one came after its first memory refusal.
    u_dev, u_first = np.unique(f_dev[update], return_index=True)
    joined_round = f_round[update][u_first]
    so_far = np.cumsum(_grid(cls_of[u_dev], joined_round, n_classes, rounds), axis=1)
    m_dev, m_first = np.unique(f_dev[memory], return_index=True)
    m_row, m_round = np.flatnonzero(memory)[m_first], f_round[memory][m_first]
    u_rows = np.flatnonzero(update)
    at = np.searchsorted(m_dev, f_dev[u_rows])
    has_refusal = at < len(m_dev)
    has_refusal[has_refusal] = m_dev[at[has_refusal]] == f_dev[u_rows][has_refusal]
    later = has_refusal.copy()
    later[has_refusal] = ((u_rows[has_refusal] > m_row[at[has_refusal]])
                          & (f_round[u_rows][has_refusal] > m_round[at[has_refusal]]))
    rejoined_devices = np.unique(f_dev[u_rows][later])
    rejoined_counts = np.bincount(cls_of[rejoined_devices], minlength=n_classes).tolist()
    series = {"eligible": _as_series(eligible, classes), "dispatched": _as_series(dispatched, classes),
              "accepted": _as_series(accepted, classes), "memory_refused": _as_series(refused, classes),
              "participants_so_far": _as_series(so_far, classes)}
    return ClassTimeline(demand, series, dict(zip(classes, rejoined_counts)))


def class_energy_j(sim: Simulation) -> dict[str, float]:
    """Joules the simulated devices of each class spent on tasks (compute and radio, ``devices.physics.
    energy_j``; ``SimulatedDevices.energy_spent_j``), summed in device order. Real devices report none."""
    fleet = sim.fleet
    classes, cls_of = classes_of(fleet)
    simulated = ~real_mask_of(fleet)
    out: dict[str, float] = defaultdict(float)
    for c in np.unique(cls_of[simulated]).tolist():
        out[classes[c]] = 0.0
    by_device = getattr(sim.devices, "energy_by_device", None)
    spent = by_device() if by_device is not None else {d: sim.devices.energy_spent_j(d) for d in fleet.devices}
    for d, joules in spent.items():  # the devices that spent nothing add nothing
        if simulated[d]:
            out[classes[cls_of[d]]] += float(joules)
    return dict(sorted(out.items()))


def timeline_json(timeline: ClassTimeline) -> dict:
    """``summary.json``'s ``timeline``: ``demand_bytes`` per round and, per class, each series of
    ``SERIES`` and ``rejoined_after_memory_refusal``."""
    classes = sorted(timeline.rejoined)
    return {"demand_bytes": list(timeline.demand_bytes),
            "by_class": {c: {**{name: list(timeline.series[name][c]) for name in SERIES},
                             "rejoined_after_memory_refusal": timeline.rejoined[c]} for c in classes}}


def _parts_by_class(sim: Simulation) -> dict[str, list]:
    """Per class of simulated devices: [compute J, radio received J, radio sent J, devices that ran flat, times
    a battery ran flat] (``SimulatedDevices.energy_parts_by_device``; a world without it spent nothing)."""
    fleet = sim.fleet
    classes, cls_of = classes_of(fleet)
    simulated = ~real_mask_of(fleet)
    out = {classes[c]: [0.0, 0.0, 0.0, 0, 0] for c in np.unique(cls_of[simulated]).tolist()}
    parts = getattr(sim.devices, "energy_parts_by_device", None)
    for d, (compute_j, rx_j, tx_j, flats) in (parts() if parts is not None else {}).items():
        if simulated[d]:
            row = out[classes[cls_of[d]]]
            row[0] += compute_j
            row[1] += rx_j
            row[2] += tx_j
            row[3] += flats > 0
            row[4] += flats
    return dict(sorted(out.items()))


def _per_update(compute_j: float, radio_j: float, accepted: int) -> dict | None:
    if not accepted:
        return None
    return {"compute_j": compute_j / accepted, "radio_j": radio_j / accepted,
            "total_j": (compute_j + radio_j) / accepted}


def _figures(compute_j: float, rx_j: float, tx_j: float, accepted: int) -> dict:
    return {"compute_j": compute_j, "radio_rx_j": rx_j, "radio_tx_j": tx_j, "radio_j": rx_j + tx_j,
            "total_j": compute_j + rx_j + tx_j, "per_accepted_update_j": _per_update(compute_j, rx_j + tx_j,
                                                                                     accepted)}


def accuracy_gain(evaluations) -> float | None:
    """The last evaluation's accuracy less the first's (the initial model's), in accuracy units (0.05 is five
    points); None without two finite evaluations."""
    if len(evaluations) < 2:
        return None
    first, last = evaluations[0].accuracy, evaluations[-1].accuracy
    gain = last - first
    return gain if np.isfinite(gain) else None


def energy_json(sim: Simulation, accepted_by_class) -> dict:
    """``summary.json``'s ``energy`` (docs/study.md, "Energy"): what the simulated devices spent, compute and
    radio (received, sent) apart, in total and per class, per accepted update (everything the class spent,
    wasted work included, over its accepted updates; None with none), the joules drawn from batteries
    (``battery_drained_j``: all a battery class spent; None for a mains class), the devices whose battery ran
    flat and how often, and, in learning mode, the joules per accuracy point (``total_j`` over a hundred times
    ``accuracy_gain``; None when the accuracy did not rise). Every number finite or None."""
    by_class, totals = {}, [0.0, 0.0, 0.0, 0, 0]
    drained = 0.0
    for c, (compute_j, rx_j, tx_j, ran_flat, flats) in _parts_by_class(sim).items():
        dc = DEVICE_CLASSES.get(c)
        battery = dc is not None and dc.battery_j is not None
        row = _figures(compute_j, rx_j, tx_j, accepted_by_class.get(c, 0))
        row.update(battery=battery, battery_drained_j=row["total_j"] if battery else None,
                   devices_ran_flat=ran_flat, battery_flat_events=flats)
        by_class[c] = row
        drained += row["total_j"] if battery else 0.0
        totals = [a + b for a, b in zip(totals, (compute_j, rx_j, tx_j, ran_flat, flats))]
    compute_j, rx_j, tx_j, ran_flat, flats = totals
    out = _figures(compute_j, rx_j, tx_j, sum(accepted_by_class.get(c, 0) for c in by_class))
    gain = accuracy_gain(sim.record.evaluations)
    points = None if gain is None else 100.0 * gain
    out.update(battery_drained_j=drained, devices_ran_flat=ran_flat, battery_flat_events=flats,
               accuracy_gain=gain,
               j_per_accuracy_point=out["total_j"] / points if points is not None and points > 0 else None,
               by_class=by_class)
    return out
