"""Reading a trace file into plain data: a FedScale pickle (``.pkl``, ``.pickle``), JSON or CSV, by suffix.

* **Pickle**: through ``devices.traces.unpickle`` (never ``pickle.load``): plain data only.
* **JSON**: the same mapping, client id (a string key) -> record; NaN and infinities are refused, and so is
  a key named twice in one object (a client listed twice, or a field twice in one record).
* **CSV**: a header, then one row per client: ``client_id`` and any of the record keys as columns
  (``computation``, ``communication``, ``finish_time``, ``active``, ``inactive`` and the extension keys of
  ``devices.traces.records``); ``active`` and ``inactive`` hold their times separated by spaces; an empty cell
  is an absent key. Numbers are parsed as floats (``device_class`` and ``link_class`` stay strings).

JSON and CSV are UTF-8; a leading byte-order mark (Excel's default for CSV) is accepted. An empty file (or,
for JSON and CSV, one of whitespace only) is refused as such.

One file may serve as both capacity and behaviour (an exported fleet does): each reader takes its keys.
``read_trace_file`` returns the parsed mapping; a file that is missing, not a regular file, larger than
``MAX_TRACE_BYTES`` or not parseable is a ``TraceError`` of one line naming it.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import stat
from pathlib import Path

from devices.traces.errors import TraceError, shown
from devices.traces.records import client_key
from devices.traces.unpickle import load_plain

__all__ = ["MAX_TRACE_BYTES", "TRACE_SUFFIXES", "read_trace_file", "parse_trace_text"]

MAX_TRACE_BYTES = 1 << 30  # FedScale's own traces are tens of MB; 1 GiB leaves room for larger fleets
TRACE_SUFFIXES = (".pkl", ".pickle", ".json", ".csv")
_TEXT_KEYS = ("client_id", "device_class", "link_class")
_LIST_KEYS = ("active", "inactive")


def _read_bytes(path: Path) -> bytes:
    where = shown(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise TraceError(f"{where}: no such trace file") from None
    except (OSError, ValueError) as exc:
        raise TraceError(f"{where}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    if not stat.S_ISREG(info.st_mode):
        raise TraceError(f"{where}: not a regular file")
    if info.st_size > MAX_TRACE_BYTES:
        raise TraceError(f"{where}: {info.st_size:,} bytes; a trace file has at most {MAX_TRACE_BYTES:,}")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            return f.read(MAX_TRACE_BYTES + 1)
    except OSError as exc:
        raise TraceError(f"{where}: cannot read ({exc.strerror})") from None


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def _from_json(text: str, where: str) -> object:
    """The JSON value of ``text``. A key named twice in one object (which ``json`` would let the later win)
    is refused: at the top a client listed twice, as the CSV and pickle readers refuse one; in a record a
    field listed twice; deeper, a key listed twice."""
    repeated: dict[int, str] = {}  # id of a parsed object -> its first repeated key

    def pairs_to_dict(pairs: list[tuple[str, object]]) -> dict:
        out: dict = {}
        for key, value in pairs:
            if key in out and id(out) not in repeated:
                repeated[id(out)] = key
            out[key] = value
        return out

    try:
        data = json.loads(text, parse_constant=_refuse_constant, object_pairs_hook=pairs_to_dict)
    except RecursionError:
        raise TraceError(f"{where}: JSON nested too deeply") from None
    except ValueError as exc:
        raise TraceError(f"{where}: not valid JSON ({str(exc).splitlines()[0][:200]})") from None
    if repeated:
        _refuse_repeated(data, repeated, where)
    return data


def _refuse_repeated(data: object, repeated: dict[int, str], where: str) -> None:
    """The one-line error for the first repeated key of ``_from_json``: the top object's, else a record's."""
    if id(data) in repeated:
        raise TraceError(f"{where}: client {client_key(repeated[id(data)], where)}: listed twice")
    if type(data) is dict:
        for key, record in data.items():
            if id(record) in repeated:
                raise TraceError(f"{where}: client {client_key(key, where)}: field "
                                 f"{repeated[id(record)]!r:.60} listed twice")
    raise TraceError(f"{where}: a JSON object lists the key {next(iter(repeated.values()))!r:.60} twice")


def _cell(key: str, text: str, where: str, row: int):
    if key in _TEXT_KEYS:
        return text
    try:
        if key in _LIST_KEYS:
            return [float(t) for t in text.split()]
        return float(text)
    except ValueError:
        raise TraceError(f"{where}: row {row}: {key} is not a number: {text[:60]!r}") from None


def _from_csv(text: str, where: str) -> dict:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise TraceError(f"{where}: empty CSV (no header)") from None
    except csv.Error as exc:
        raise TraceError(f"{where}: not valid CSV ({exc})") from None
    header = [h.strip() for h in header]
    if "client_id" not in header:
        raise TraceError(f"{where}: the CSV header (its first line) has no client_id column; "
                         f"it reads {','.join(header)[:80]!r}")
    if len(set(header)) != len(header):
        raise TraceError(f"{where}: the CSV header repeats a column")
    out: dict[str, dict] = {}
    try:
        for row_number, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise TraceError(f"{where}: row {row_number} has {len(row)} cells, the header {len(header)}")
            record = {k: _cell(k, v.strip(), where, row_number) for k, v in zip(header, row) if v.strip() != ""}
            cid = record.pop("client_id", "")
            if not cid:
                raise TraceError(f"{where}: row {row_number}: empty client_id")
            if cid in out:
                raise TraceError(f"{where}: client {cid}: listed twice (row {row_number})")
            out[cid] = record
    except csv.Error as exc:
        raise TraceError(f"{where}: not valid CSV ({exc})") from None
    return out


def parse_trace_text(raw: bytes, suffix: str, where: str) -> object:
    """The mapping held in ``raw``, the bytes of a file with ``suffix`` (one of ``TRACE_SUFFIXES``). JSON and
    CSV are UTF-8, a leading byte-order mark accepted (Excel writes one by default)."""
    if suffix in (".pkl", ".pickle"):
        if not raw:
            raise TraceError(f"{where}: empty file")
        return load_plain(raw, where)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bom = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
        raise TraceError(f"{where}: not UTF-8 text (byte {exc.start + bom})") from None
    if not text.strip():
        raise TraceError(f"{where}: empty file")
    return _from_json(text, where) if suffix == ".json" else _from_csv(text, where)


def read_trace_file(path: str | Path) -> object:
    """The parsed content of the trace file ``path`` (its suffix says the format)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TRACE_SUFFIXES:
        raise TraceError(f"{shown(path)}: unknown trace format {suffix or '(no suffix)'!r}; "
                         f"known: {', '.join(TRACE_SUFFIXES)}")
    return parse_trace_text(_read_bytes(path), suffix, shown(path))
