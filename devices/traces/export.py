"""A fleet written as a trace: one record per device in the FedScale schema plus fleet's extension keys.

``fleet_records`` turns a ``SampledFleet``, its timelines and initial charges into client id -> record, in
device order: ``computation`` (ms per sample of a ``flops_per_sample`` model: ``1000 * flops_per_sample /
flops_per_s``), ``communication`` (the uplink, kbit/s), ``upload_kbit_per_s``, ``download_kbit_per_s``,
``latency_s``, ``device_class``, ``link_class``, ``background_phase_rad``, ``battery_j_at_start`` (when the
device has a battery), ``loss_prob`` (when the device's mix entry overrides its link class's: a
``fleet.mix`` entry's ``link: {loss_prob: ...}``; its other link overrides are the rates and latency
written per device, and spreads already drawn), ``ram_bytes`` (for the reader's information; the class
decides it on replay), and
the behaviour keys ``active``, ``inactive``, ``finish_time`` (always on: one interval covering a period of
``ALWAYS_ON_PERIOD_S``). Read back as capacity and behaviour file alike (``pairing: id``), it gives the same
profiles, device for device: each written figure is, among the floats within a few ulps of the quotient,
one the reader's formula turns back into the device's figure bit for bit (docs/traces.md says when none is).

Timelines that can be written: ``AlwaysOn``, ``Diurnal`` (one period, split where it wraps) and
``PeriodicIntervals``; random failures have no period, and are refused (``ValueError``).
``write_records`` writes ``.json`` (strict: no NaN) or ``.csv`` (the layout ``devices.traces.files`` reads).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Sequence

from devices.availability import AlwaysOn, Availability, Diurnal
from devices.sampled import SampledFleet
from devices.traces.mapping import BIT_PER_KBIT, MS_PER_S, flops_per_s_of
from devices.traces.periodic import PeriodicIntervals
from devices.traces.records import behaviour_records, capacity_records

__all__ = ["ALWAYS_ON_PERIOD_S", "CSV_COLUMNS", "fleet_records", "intervals_of", "write_records"]

ALWAYS_ON_PERIOD_S = 86_400.0
CSV_COLUMNS = ("client_id", "computation", "communication", "upload_kbit_per_s", "download_kbit_per_s",
               "latency_s", "device_class", "link_class", "background_phase_rad", "battery_j_at_start",
               "loss_prob", "ram_bytes", "finish_time", "active", "inactive")


def intervals_of(timeline: Availability) -> tuple[list[float], list[float], float]:
    """(active times, inactive times, period) of one period of ``timeline``; ``ValueError`` if it has none."""
    if isinstance(timeline, AlwaysOn):
        return [0.0], [ALWAYS_ON_PERIOD_S], ALWAYS_ON_PERIOD_S
    if isinstance(timeline, PeriodicIntervals):
        return list(timeline.starts_s), list(timeline.ends_s), timeline.period_s
    if isinstance(timeline, Diurnal):
        period = timeline.period_s
        if timeline.on_fraction == 1.0:
            return [0.0], [period], period
        start = timeline.phase_s % period
        end = start + timeline.on_fraction * period
        if end <= period:
            return [start], [end], period
        return [0.0, start], [end - period, period], period
    raise ValueError(f"cannot write {type(timeline).__name__} as a trace: only always-on, diurnal and trace "
                     "timelines repeat with a period (random failures do not)")


def fleet_records(fleet: SampledFleet, availability: Sequence[Availability],
                  battery_j_at_start: Sequence[float | None], flops_per_sample: float,
                  client_ids: Sequence[str] | None = None) -> dict[str, dict]:
    """Client id (``client_ids[d]``, else ``str(d)``) -> device ``d``'s record, for every device in order.
    ``TraceError`` (a ``ValueError``) when a device has a figure outside a trace's bounds (a link figure a
    lognormal spread drew past the scenario schema's bound), which its replay would refuse."""
    out: dict[str, dict] = {}
    for d in range(len(fleet)):
        p = fleet[d]
        active, inactive, period = intervals_of(availability[d])
        up_kbit, down_kbit = (_inverse(rate, lambda k: BIT_PER_KBIT * k, rate / BIT_PER_KBIT)
                              for rate in (p.up_bit_per_s, p.down_bit_per_s))
        computation_ms = _inverse(p.flops_per_s, lambda ms: flops_per_s_of(ms, flops_per_sample),
                                  MS_PER_S * flops_per_sample / p.flops_per_s)
        record = {"computation": computation_ms, "communication": up_kbit,
                  "upload_kbit_per_s": up_kbit, "download_kbit_per_s": down_kbit, "latency_s": p.latency_s,
                  "device_class": p.device_class, "link_class": p.link_class,
                  "background_phase_rad": p.background.phase_rad, "ram_bytes": p.ram_bytes,
                  "finish_time": period, "active": active, "inactive": inactive}
        if battery_j_at_start[d] is not None:
            record["battery_j_at_start"] = battery_j_at_start[d]
        if "loss_prob" in fleet.entries[fleet.entry_of.item(d)].link:
            record["loss_prob"] = p.loss_prob
        out[str(d) if client_ids is None else client_ids[d]] = record
    capacity_records(out, "the exported fleet")  # a figure a trace may not carry would not replay
    behaviour_records(out, "the exported fleet")
    return out


def _inverse(target: float, forward, guess: float) -> float:
    """A float ``x`` near ``guess`` with ``forward(x) == target`` bit for bit, if one lies within a few ulps
    (so that a replay recomputes exactly the exported figure); else ``guess``."""
    below = above = guess
    for _ in range(8):
        for x in (below, above):
            if forward(x) == target:
                return x
        below, above = math.nextafter(below, -math.inf), math.nextafter(above, math.inf)
    return guess


def _cell(value) -> str:
    if isinstance(value, list):
        return " ".join(repr(float(v)) for v in value)
    return repr(value) if isinstance(value, float) else str(value)


def write_records(records: dict[str, dict], path: str | Path) -> None:
    """Write ``records`` to ``path``: JSON or CSV by its suffix (``ValueError`` for another)."""
    path = Path(path)
    suffix = path.suffix.lower()
    for cid, record in records.items():
        for key, value in record.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"client {cid}: {key} is {value!r}; a trace holds finite numbers")
    if suffix == ".json":
        path.write_text(json.dumps(records, allow_nan=False, indent=1) + "\n", encoding="utf-8")
    elif suffix == ".csv":
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(CSV_COLUMNS)
            for cid, record in records.items():
                writer.writerow([cid, *(_cell(record[k]) if k in record else "" for k in CSV_COLUMNS[1:])])
    else:
        raise ValueError(f"{path}: the export format is .json or .csv, got {suffix or '(no suffix)'!r}")
