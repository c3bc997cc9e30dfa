"""``python -m fleet.run SCENARIO --dry-run``: the fleet a scenario would simulate, without running it.

``dry_run`` samples the devices with ``fleet.app.build.build_fleet`` (the same draws as the run) and reads the
algorithm's nominal task per phase (the opening rounds' demand before it is fitted to a device's data);
``describe`` prints, per device class: the devices, their memory free for a task (at the background's trough
and peak), compute and uplink ranges, how many are online at t = 0, and the gates the nominal task would
meet on every dispatch, device by device with no randomness involved: memory it never fits (even at the
background's trough), memory it misses at the background's peak, a sync deadline it misses even at full
speed with no queueing (what ``devices.refuse_hopeless`` refuses), a FLOP budget it exceeds. Battery and the
slowdown draws depend on the run and are not told. ``fleet_columns`` is the fleet as columns, which the
Python API's ``Run.devices`` also reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from devices.physics import compute_time_s, framed_transfer_time_s
from fleet.app.printing import Line, Table, count
from fleet.app.scenario import Scenario

__all__ = ["ONLINE_COUNTED_UP_TO", "DryRun", "fleet_columns", "dry_run", "describe", "describe_items"]

#: Availability at t = 0 is counted device by device (each timeline made); above this many devices it is not.
ONLINE_COUNTED_UP_TO = 200_000


def fleet_columns(profiles) -> dict[str, np.ndarray]:
    """Per device (in id order): ``device``, ``device_class``, ``link_class``, ``flops_per_s``, ``up_bit_per_s``,
    ``down_bit_per_s``, ``latency_s``, ``ram_bytes``, ``trainable_bytes`` (RAM less the runtime's reserve),
    ``free_bytes_min`` and ``free_bytes_max`` (free for a task at the background's peak and trough),
    ``battery_j`` (NaN without a battery), and the link's ``duty_cycle``. ``profiles``: a
    ``devices.SampledFleet`` (read as arrays) or a sequence of ``DeviceProfile``."""
    entry_of = getattr(profiles, "entry_of", None)
    if entry_of is not None:  # a SampledFleet: the per-device draws as arrays, the rest per mix entry
        dcs, lcs = profiles.device_class_of_entry, profiles.link_class_of_entry

        def per_entry(values, dtype=None):
            return np.asarray(values, dtype=dtype)[entry_of]

        ram = per_entry([dc.ram_bytes for dc in dcs], np.int64)
        trainable = per_entry([dc.ram_bytes - dc.runtime_reserve_bytes for dc in dcs], np.int64)
        mean = per_entry([dc.background_mean_fraction * (dc.ram_bytes - dc.runtime_reserve_bytes) for dc in dcs],
                         float)
        amp = per_entry([dc.background_amplitude_fraction * (dc.ram_bytes - dc.runtime_reserve_bytes)
                         for dc in dcs], float)
        cols = {"device_class": per_entry([e.device_class for e in profiles.entries], object),
                "link_class": per_entry([e.link_class for e in profiles.entries], object),
                "flops_per_s": profiles.flops_per_s, "up_bit_per_s": profiles.up_bit_per_s,
                "down_bit_per_s": profiles.down_bit_per_s, "latency_s": profiles.latency_s,
                "ram_bytes": ram, "trainable_bytes": trainable,
                "battery_j": per_entry([np.nan if dc.battery_j is None else dc.battery_j for dc in dcs], float),
                "duty_cycle": per_entry([lc.duty_cycle for lc in lcs], float)}
    else:
        ps = list(profiles)

        def col(name, dtype=float):
            return np.array([getattr(p, name) for p in ps], dtype=dtype)

        mean = np.array([p.background.mean_bytes for p in ps], dtype=float)
        amp = np.array([p.background.amplitude_bytes for p in ps], dtype=float)
        cols = {"device_class": col("device_class", object), "link_class": col("link_class", object),
                "flops_per_s": col("flops_per_s"), "up_bit_per_s": col("up_bit_per_s"),
                "down_bit_per_s": col("down_bit_per_s"), "latency_s": col("latency_s"),
                "ram_bytes": col("ram_bytes", np.int64),
                "trainable_bytes": col("ram_bytes", np.int64) - col("runtime_reserve_bytes", np.int64),
                "battery_j": np.array([np.nan if p.battery_j is None else p.battery_j for p in ps], dtype=float),
                "duty_cycle": col("duty_cycle")}
    trainable = cols["trainable_bytes"]
    # free memory is trainable less the background (never below 0), which swings mean +- amplitude
    cols["free_bytes_min"] = np.maximum(0, trainable - (mean + amp)).astype(np.int64)
    cols["free_bytes_max"] = np.maximum(0, trainable - np.maximum(0.0, mean - amp)).astype(np.int64)
    n = len(trainable)
    return {"device": np.arange(n, dtype=np.int64), **cols}


@dataclass(frozen=True)
class DryRun:
    """What ``dry_run`` found: the ``scenario``, its fleet as ``columns`` (``fleet_columns``, plus ``online_at_0``
    when counted: ``ONLINE_COUNTED_UP_TO``), the nominal ``demands`` per phase (``algorithms.base.
    ResourceDemand``), and per phase the gates each device meets on every dispatch (``gates[phase][gate]``: a
    boolean per device; gates ``memory_never``, ``memory_at_peak``, ``deadline``, ``flop_budget``)."""

    scenario: Scenario
    columns: dict[str, np.ndarray]
    demands: dict
    gates: dict[str, dict[str, np.ndarray]]


def _gates(scenario: Scenario, cols: dict, profiles, demand) -> dict[str, np.ndarray]:
    """The gates ``demand`` meets on every dispatch, per device (see the module docstring)."""
    peak = demand.peak_memory_bytes
    never = peak > cols["free_bytes_max"]
    out = {"memory_never": never, "memory_at_peak": (peak > cols["free_bytes_min"]) & ~never}
    c = scenario.coordinator
    if c.mode == "sync" and c.deadline_s is not None and scenario.devices.refuse_hopeless:
        compute_s = compute_time_s(float(demand.flops), cols["flops_per_s"])
        upload_s = np.empty(len(compute_s))
        links = getattr(profiles, "link_class_of_entry", None)
        for e, lc in enumerate(links or ()):
            members = profiles.entry_of == e
            upload_s[members] = framed_transfer_time_s(demand.bytes_up, cols["up_bit_per_s"][members], lc.duty_cycle,
                                                       lc.max_frame_payload_bytes, lc.frame_overhead_bytes)
        if links is None:
            upload_s = np.array([framed_transfer_time_s(demand.bytes_up, p.up_bit_per_s, p.duty_cycle,
                                                        p.max_frame_payload_bytes, p.frame_overhead_bytes)
                                 for p in profiles], dtype=float)
        out["deadline"] = 2 * cols["latency_s"] + compute_s + upload_s > c.deadline_s
    budget = scenario.devices.flop_budget_flops
    if budget is not None:
        out["flop_budget"] = np.full(len(never), demand.flops > budget)
    return out


def dry_run(scenario: Scenario) -> DryRun:
    """Sample ``scenario``'s fleet (the run's draws) and work out its nominal tasks and the gates they meet.
    ``ScenarioError`` for what only building finds (a trace file, a value the physics refuses)."""
    from fleet.app.build import build_fleet, make_plan, scenario_algorithm  # the run's own algorithm
    from fleet.app.scenario import ScenarioError

    try:
        built, _ = build_fleet(scenario)
        algorithm, _ = scenario_algorithm(scenario)
    except ValueError as exc:  # ScenarioError is one
        raise ScenarioError(str(exc)) from None
    cols = fleet_columns(built.profiles)
    if len(built.availability) <= ONLINE_COUNTED_UP_TO:
        cols["online_at_0"] = np.array([a.unavailable_cause(0.0) is None for a in built.availability], dtype=bool)
    plan = make_plan(algorithm)
    demands: dict = {}
    for r in range(min(scenario.coordinator.rounds, 64)):  # the opening rounds' phases, as the run reads them
        config, demand = plan(r, 0)
        demands.setdefault(config.phase, demand)
    gates = {phase: _gates(scenario, cols, built.profiles, d) for phase, d in demands.items()}
    return DryRun(scenario, cols, demands, gates)


def _number(value: float) -> str:
    """A figure in a table: 3 significant digits below 1,000, whole with thousands separators from there (never
    ``4.29e+03`` beside ``537``)."""
    return f"{value:,.0f}" if abs(value) >= 999.5 else f"{value:.3g}"


def _range(values: np.ndarray, scale: float) -> str:
    if not len(values):
        return "-"
    low, high = _number(float(values.min()) / scale), _number(float(values.max()) / scale)
    return low if low == high else f"{low}..{high}"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows]]


def describe(result: DryRun, variant: str | None = None) -> str:
    """The dry run as text: one line for the scenario, one per nominal task, a table per device class (columns
    aligned, one line a row, however wide), a line on the gates."""
    lines = []
    for item in describe_items(result, variant):
        lines += _table(list(item.columns), [list(r) for r in item.rows]) if isinstance(item, Table) else [item.text]
    return "\n".join(lines)


def describe_items(result: DryRun, variant: str | None = None) -> list[Line | Table]:
    """``describe`` as items for ``fleet.app.printing.write_items`` (a terminal shows the table fitted to it)."""
    s, cols = result.scenario, result.columns
    n = len(cols["device"])
    title = s.name + (f" (variant {variant})" if variant else "")
    lines = [f"{title}: {count(n, 'device', ',')}, seed {s.seed}, {s.mode} mode, {s.coordinator.mode} "
             f"coordination, algorithm {s.algorithm.name}, {count(s.coordinator.rounds, 'round')} (dry run: nothing "
             "ran)"]
    for phase, d in result.demands.items():
        lines.append(f"task {phase}: peak memory {d.peak_memory_bytes / 1e6:.3g} MB, {d.flops:.3g} FLOPs, "
                     f"down {d.bytes_down / 1e3:.3g} kB, up {d.bytes_up / 1e3:.3g} kB (nominal)")
    classes = sorted(set(cols["device_class"].tolist()))
    head = ["class", "devices", "RAM MB", "free MB (bg peak..trough)", "GFLOP/s", "up kbit/s", "online t=0"]
    phases = list(result.gates)
    gate_names = [(p, g) for p in phases for g in result.gates[p]]
    head += [f"{g}" + (f" ({p})" if len(phases) > 1 else "") for p, g in gate_names]
    rows = []
    for cls in classes:
        m = cols["device_class"] == cls
        free = f"{_number(cols['free_bytes_min'][m].min() / 1e6)}..{_number(cols['free_bytes_max'][m].max() / 1e6)}"
        online = f"{int(cols['online_at_0'][m].sum())}" if "online_at_0" in cols else "not counted"
        rows.append([cls, f"{int(m.sum()):,}", _range(cols["ram_bytes"][m], 1e6), free,
                     _range(cols["flops_per_s"][m], 1e9), _range(cols["up_bit_per_s"][m], 1e3), online,
                     *(f"{int(result.gates[p][g][m].sum())}" for p, g in gate_names)])
    items: list[Line | Table] = [Line(line) for line in lines]
    items.append(Table("", tuple(head), tuple(tuple(r) for r in rows)))
    items.append(Line("gates (devices refused on every dispatch of the nominal task): memory_never = peak memory "
                      "above the free memory at the background's trough; memory_at_peak = above it at the "
                      "background's peak only; deadline = the sync deadline missed at full speed; flop_budget = "
                      "above the FLOP budget"))
    return items
