"""Who could and who did take part, per device class and per round; what each class spent in energy.

Pure analysis of a finished run, as ``fleet.app.study``: the event log, the fleet's free memory and the
devices' energy counters; never the model. Round ``r``'s *demand* is the largest peak memory of a task
dispatched in it (the ``demand_bytes`` of its ``dispatch`` rows, the round's full task; a device with
less data than a batch gets a smaller one), read from the log, so an algorithm whose model shrinks during
the run shows its demand falling round by round. A device is *memory-eligible* in round ``r`` when its free
memory at the round's first dispatch covers that demand; a round that dispatched nothing has demand None
and no eligible devices. Every figure here is an int, a finite float or None (strict JSON).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from fleet.app.simulation import Simulation
from fleet.core.recorder import EVENT_COLUMNS

__all__ = ["ClassTimeline", "class_energy_j", "class_timeline", "timeline_json"]

_COL = {name: i for i, name in enumerate(EVENT_COLUMNS)}
_TERMINAL = frozenset(("update", "refusal", "dropout", "discard"))
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


def _round_count(sim: Simulation, dispatches: list[tuple]) -> int:
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


def _eligible(sim: Simulation, cls_of: list[str], classes: list[str], demand: list[int | None],
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


def class_timeline(sim: Simulation) -> ClassTimeline:
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


def class_energy_j(sim: Simulation) -> dict[str, float]:
    """Joules the simulated devices of each class spent on tasks (compute and radio, ``devices.physics.
    energy_j``; ``SimulatedDevices.energy_spent_j``). Real devices report none."""
    spent = sim.devices.energy_spent_j
    fleet = sim.fleet
    out: dict[str, float] = defaultdict(float)
    for d in fleet.devices:
        if not fleet.is_real(d):
            out[fleet.device_class(d)] += float(spent(d))
    return dict(sorted(out.items()))


def timeline_json(timeline: ClassTimeline) -> dict:
    """``summary.json``'s ``timeline``: ``demand_bytes`` per round and, per class, each series of
    ``SERIES`` and ``rejoined_after_memory_refusal``."""
    classes = sorted(timeline.rejoined)
    return {"demand_bytes": list(timeline.demand_bytes),
            "by_class": {c: {**{name: list(timeline.series[name][c]) for name in SERIES},
                             "rejoined_after_memory_refusal": timeline.rejoined[c]} for c in classes}}
