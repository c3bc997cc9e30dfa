"""A trace pair read, paired and narrowed to the clients a fleet takes.

``load_traces`` reads the capacity file and, if given, the behaviour file, and attaches to each capacity
client its behaviour:

* ``pairing="id"`` (the default): by client id. Every behaviour client must be a capacity client (an unknown
  id is an error) and every capacity client must have a behaviour record.
* ``pairing="fedscale"``: as FedScale's own ``clientManager.register_client`` does it, by position: the
  capacity client with integer id ``c`` gets the behaviour record at index ``c % len(behaviour)`` in the
  behaviour file's key order. FedScale's shipped files list different clients in the two files, so only
  this pairing reads them together.

``select_clients`` keeps ``n`` of them: the first ``n`` in file order, or ``n`` drawn without replacement
(kept in file order) from a generator.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from devices.traces.errors import TraceError, shown
from devices.traces.files import read_trace_file
from devices.traces.records import DeviceTrace, behaviour_records, capacity_records

__all__ = ["PAIRINGS", "SELECTIONS", "load_traces", "select_clients"]

PAIRINGS = ("id", "fedscale")
SELECTIONS = ("first", "sample")


def load_traces(capacity: str | Path, behaviour: str | Path | None = None,
                pairing: Literal["id", "fedscale"] = "id") -> list[DeviceTrace]:
    """Every capacity client of ``capacity``, in file order, with its behaviour from ``behaviour`` (None:
    always available). ``TraceError`` names the file, the client and the field at fault."""
    if pairing not in PAIRINGS:
        raise ValueError(f"pairing must be one of {', '.join(PAIRINGS)}, got {pairing!r}")
    capacity_name = shown(capacity)
    records = capacity_records(read_trace_file(capacity), capacity_name)
    if behaviour is None:
        return list(records.values())
    behaviour_name = shown(behaviour)
    behaviours = behaviour_records(read_trace_file(behaviour), behaviour_name)
    if pairing == "fedscale":
        ordered = list(behaviours.values())
        out = []
        for cid, record in records.items():
            try:
                index = int(cid) % len(ordered)
            except ValueError:
                raise TraceError(f"{capacity_name}: client {cid}: pairing fedscale needs integer client ids") from None
            out.append(replace(record, behaviour=ordered[index]))
        return out
    for cid in behaviours:
        if cid not in records:
            raise TraceError(f"{behaviour_name}: client {cid}: unknown client id (not in {capacity_name})")
    for cid in records:
        if cid not in behaviours:
            raise TraceError(f"{behaviour_name}: client {cid}: no behaviour record for this client of "
                             f"{capacity_name}")
    return [replace(record, behaviour=behaviours[cid]) for cid, record in records.items()]


def select_clients(traces: Sequence[DeviceTrace], n: int, how: Literal["first", "sample"] = "first",
                   rng: np.random.Generator | None = None, where: str = "trace") -> list[DeviceTrace]:
    """``n`` of ``traces``: the first ``n``, or (``how="sample"``) ``n`` drawn from ``rng`` without
    replacement, kept in file order. ``TraceError`` when the trace has fewer than ``n`` clients."""
    if how not in SELECTIONS:
        raise ValueError(f"how must be one of {', '.join(SELECTIONS)}, got {how!r}")
    if not 0 < n <= len(traces):
        raise TraceError(f"{where}: the fleet needs {n} devices but the trace has {len(traces)} clients")
    if how == "first":
        return list(traces[:n])
    if rng is None:
        raise ValueError("how='sample' needs rng")
    picked = np.sort(rng.choice(len(traces), size=n, replace=False))
    return [traces[i] for i in picked.tolist()]
