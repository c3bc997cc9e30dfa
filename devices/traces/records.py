"""Trace records: what one client of a FedScale-format trace says, checked.

A capacity file maps client id -> ``{'computation': ms per sample, 'communication': kbit/s}``; a behaviour
file maps client id -> ``{'active': [s...], 'inactive': [s...], 'finish_time': s, 'duration': ...,
'model': ...}`` (FedScale's ``benchmark/dataset/data/device_info/README.md``; ``duration`` and ``model``
are read by nothing here). Client ids are compared as strings (``432802`` and ``"432802"`` are one client).

A capacity record may also carry fleet's own extension keys, which an exported fleet writes so that it
replays exactly (docs/traces.md): ``upload_kbit_per_s`` and ``download_kbit_per_s`` (each replaces
``communication`` in its direction), ``latency_s``, ``device_class``, ``link_class``,
``background_phase_rad``, ``battery_j_at_start``, ``loss_prob`` (replaces the link class's).
Unknown keys are ignored, as FedScale ignores them. Every number is checked against the scenario schema's
bound for the same quantity (``devices.traces.bounds``): a rate of 1 bit/s to 100 Gbit/s, a latency of at
most 3600 s, a loss_prob of at most 0.99, a computation time or ``finish_time`` of at most 1e9 s.

Every error is a ``TraceError`` of one line naming the file, the client id and the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

from devices.traces.bounds import BOUNDS
from devices.traces.errors import TraceError

__all__ = ["DeviceTrace", "Behaviour", "capacity_records", "behaviour_records", "client_key",
           "CAPACITY_KEYS", "BEHAVIOUR_KEYS", "EXTENSION_KEYS"]

CAPACITY_KEYS = ("computation", "communication")
BEHAVIOUR_KEYS = ("active", "inactive", "finish_time")
EXTENSION_KEYS = ("upload_kbit_per_s", "download_kbit_per_s", "latency_s", "device_class", "link_class",
                  "background_phase_rad", "battery_j_at_start", "loss_prob")
MAX_CLIENT_ID_CHARS = 100


@dataclass(frozen=True, slots=True)
class Behaviour:
    """One client's availability: up on ``[active_s[i], inactive_s[i])`` of every period of ``finish_time_s``
    seconds (FedScale reads the trace modulo ``finish_time``). Sorted, non-overlapping, inside the period."""

    active_s: tuple[float, ...]
    inactive_s: tuple[float, ...]
    finish_time_s: float


@dataclass(frozen=True, slots=True)
class DeviceTrace:
    """One client: its capacity (and extensions), and its behaviour (None: always available)."""

    client_id: str
    computation_ms: float
    communication_kbit_per_s: float
    upload_kbit_per_s: float | None = None
    download_kbit_per_s: float | None = None
    latency_s: float | None = None
    device_class: str | None = None
    link_class: str | None = None
    background_phase_rad: float | None = None
    battery_j_at_start: float | None = None
    loss_prob: float | None = None
    behaviour: Behaviour | None = None

    @property
    def up_kbit_per_s(self) -> float:
        return self.communication_kbit_per_s if self.upload_kbit_per_s is None else self.upload_kbit_per_s

    @property
    def down_kbit_per_s(self) -> float:
        return self.communication_kbit_per_s if self.download_kbit_per_s is None else self.download_kbit_per_s


def client_key(key: object, where: str) -> str:
    """A client id as the string both files are matched by (an int, or a non-empty string)."""
    if type(key) is int:
        return str(key)
    if type(key) is str and 0 < len(key) <= MAX_CLIENT_ID_CHARS and key.strip() == key and key.isprintable():
        return key
    raise TraceError(f"{where}: client id {_show(key)} must be an integer or a non-empty printable string "
                     f"of at most {MAX_CLIENT_ID_CHARS} characters")


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _number(record: Mapping, key: str, where: str, *, optional: bool = False) -> float | None:
    """``record[key]`` as a finite float inside ``BOUNDS[key]`` (the scenario schema's bound for the same
    quantity); None when optional and absent or null."""
    if key not in record or (optional and record[key] is None):
        if optional:
            return None
        raise TraceError(f"{where}: missing field {key!r}")
    value = record[key]
    if type(value) not in (int, float):
        raise TraceError(f"{where}: {key} must be a number, got {_show(value)}")
    number, bound = _float(value), BOUNDS[key]
    positive = bound.low_open or bound.low > 0
    if number is None or not math.isfinite(number) or (number <= 0 if positive else number < 0):
        raise TraceError(f"{where}: {key} must be finite and {'> 0' if positive else '>= 0'}, "
                         f"got {_show(value) if number is None else repr(number)}")
    if not bound.holds(number):
        raise TraceError(f"{where}: {key} must be in {bound.text} ({bound.why}), got {number!r}")
    return number


def _float(value: int | float) -> float | None:
    """``value`` as a float; None for an integer too large for one (``10**400``), which is not finite."""
    try:
        return float(value)
    except OverflowError:
        return None


def _name(record: Mapping, key: str, where: str) -> str | None:
    value = record.get(key)
    if value is None:
        return None
    if type(value) is not str or not value:
        raise TraceError(f"{where}: {key} must be a non-empty string, got {_show(value)}")
    return value


def _mapping_of_records(data: object, path: str, what: str) -> dict[str, Mapping]:
    if type(data) is not dict:
        raise TraceError(f"{path}: a {what} trace maps client ids to records, got a {type(data).__name__}")
    if not data:
        raise TraceError(f"{path}: the {what} trace has no clients")
    out: dict[str, Mapping] = {}
    for key, record in data.items():
        cid = client_key(key, path)
        if cid in out:
            raise TraceError(f"{path}: client {cid}: listed twice (as {_show(key)})")
        if type(record) is not dict:
            raise TraceError(f"{path}: client {cid}: the record must be a mapping, got {type(record).__name__}")
        out[cid] = record
    return out


def capacity_records(data: object, path: str) -> dict[str, DeviceTrace]:
    """The checked capacity records of a parsed capacity file ``path``, by client id, in file order."""
    out = {}
    for cid, record in _mapping_of_records(data, path, "capacity").items():
        where = f"{path}: client {cid}"
        fields = dict(
            computation_ms=_number(record, "computation", where),
            communication_kbit_per_s=_number(record, "communication", where),
            upload_kbit_per_s=_number(record, "upload_kbit_per_s", where, optional=True),
            download_kbit_per_s=_number(record, "download_kbit_per_s", where, optional=True),
            latency_s=_number(record, "latency_s", where, optional=True),
            device_class=_name(record, "device_class", where),
            link_class=_name(record, "link_class", where),
            background_phase_rad=_number(record, "background_phase_rad", where, optional=True),
            battery_j_at_start=_number(record, "battery_j_at_start", where, optional=True),
            loss_prob=_number(record, "loss_prob", where, optional=True))
        out[cid] = DeviceTrace(cid, **fields)
    return out


def _times(record: Mapping, key: str, where: str) -> list[float]:
    if key not in record:
        raise TraceError(f"{where}: missing field {key!r}")
    values = record[key]
    if type(values) not in (list, tuple):
        raise TraceError(f"{where}: {key} must be a list of times in seconds, got {_show(values)}")
    out = []
    for i, v in enumerate(values):
        number = _float(v) if type(v) in (int, float) else None
        if number is None or not math.isfinite(number) or number < 0:
            raise TraceError(f"{where}: {key}[{i}] must be a finite time >= 0 s, got {_show(v)}")
        out.append(number)
    return out


def behaviour_of(record: Mapping, where: str) -> Behaviour:
    """One behaviour record checked: as many ``active`` as ``inactive`` times, at least one interval, each
    ``active < inactive``, sorted and non-overlapping (touching is allowed), all within ``[0, finish_time]``."""
    finish = _number(record, "finish_time", where)
    active, inactive = _times(record, "active", where), _times(record, "inactive", where)
    if len(active) != len(inactive):
        raise TraceError(f"{where}: {len(active)} active but {len(inactive)} inactive times; each active time "
                         "needs the inactive time that ends it")
    if not active:
        raise TraceError(f"{where}: no active interval (a client that is never available cannot take part)")
    for i, (start, end) in enumerate(zip(active, inactive)):
        if not start < end:
            raise TraceError(f"{where}: interval {i} is empty or reversed: active {start!r} >= inactive {end!r}")
        if end > finish:
            raise TraceError(f"{where}: interval {i} ends at {end!r} s, after finish_time {finish!r} s")
        if i and start < inactive[i - 1]:
            raise TraceError(f"{where}: intervals {i - 1} and {i} overlap or are out of order: "
                             f"[{active[i - 1]!r}, {inactive[i - 1]!r}) and [{start!r}, {end!r})")
    return Behaviour(tuple(active), tuple(inactive), finish)


def behaviour_records(data: object, path: str) -> dict[str, Behaviour]:
    """The checked behaviour records of a parsed behaviour file ``path``, by client id, in file order."""
    return {cid: behaviour_of(record, f"{path}: client {cid}")
            for cid, record in _mapping_of_records(data, path, "behaviour").items()}
