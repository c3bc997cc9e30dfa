"""The event log: one row per event, hashed byte for byte; read as columns; written as CSV or Parquet."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

__all__ = ["EVENT_COLUMNS", "EventRecorder", "EventTable", "ParquetUnavailable"]

#: Columns of the event log, in order. Units are in the names; empty cells are written as "".
EVENT_COLUMNS: tuple[str, ...] = (
    "time_s",
    "event",
    "round",
    "device",
    "task",
    "cause",
    "model_version",
    "demand_bytes",
    "free_bytes",
    "compute_s",
    "link_s",
    "queue_s",
    "task_s",
    "staleness",
)
_TEXT = frozenset(("event", "cause"))
_FLOAT = frozenset(("time_s", "compute_s", "link_s", "queue_s", "task_s"))


class ParquetUnavailable(RuntimeError):
    """Parquet was asked for and pyarrow is not installed."""


def _cell(value) -> str:
    return "" if value is None else repr(value) if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class EventTable:
    """Columns of the log as numpy arrays, row ``i`` of each being event ``i``: the floats as float64 (NaN for
    an empty cell), the integers as int64 (-1 for an empty cell: every integer column is >= 0 when set), the
    texts as int16 codes into ``names[column]`` (-1 for an empty cell)."""

    columns: dict[str, np.ndarray]
    names: dict[str, list[str]]

    def __getitem__(self, column: str) -> np.ndarray:
        return self.columns[column]

    def code(self, column: str, name: str) -> int:
        """The code of ``name`` in text column ``column`` (-2, matching nothing, when it never occurs)."""
        names = self.names[column]
        return names.index(name) if name in names else -2


@dataclass
class EventRecorder:
    """Collects one row per event, in the order the simulation produced them.

    Rows are stored as tuples matching ``EVENT_COLUMNS`` (``None`` for an empty cell). The log's
    identity is the SHA-256 of its CSV text (``write_csv`` writes exactly the hashed bytes), so
    ``sha256sum events.csv`` reproduces ``event_log_sha256``; ``write_parquet`` writes the same rows as
    Parquet, for logs too large for a CSV to be read comfortably (a float cell that happened to hold an
    integer, such as a time of exactly 0, is a float there).
    """

    rows: list[tuple] = field(default_factory=list)

    def appender(self) -> Callable[[tuple], None]:
        """``record``'s fast path, for callers on the hot path: a function taking a whole row, a tuple of
        ``len(EVENT_COLUMNS)`` cells in their order (None for an empty cell), appended as is."""
        return self.rows.append

    def record(
        self,
        time_s: float,
        event: str,
        round_index: int | None = None,
        device: int | None = None,
        task: int | None = None,
        cause: str | None = None,
        model_version: int | None = None,
        demand_bytes: int | None = None,
        free_bytes: int | None = None,
        compute_s: float | None = None,
        link_s: float | None = None,
        queue_s: float | None = None,
        task_s: float | None = None,
        staleness: int | None = None,
    ) -> None:
        self.rows.append(
            (time_s, event, round_index, device, task, cause, model_version, demand_bytes,
             free_bytes, compute_s, link_s, queue_s, task_s, staleness)
        )

    def csv_lines(self) -> Iterable[str]:
        yield ",".join(EVENT_COLUMNS) + "\n"
        join, cell = ",".join, _cell
        for row in self.rows:
            yield join(map(cell, row)) + "\n"

    def write_csv(self, stream: io.TextIOBase) -> str:
        """Write the log as CSV to ``stream``; return its SHA-256 hex digest."""
        digest = hashlib.sha256()
        for text in self._csv_blocks():
            digest.update(text.encode())
            stream.write(text)
        return digest.hexdigest()

    def sha256(self) -> str:
        digest = hashlib.sha256()
        for text in self._csv_blocks():
            digest.update(text.encode())
        return digest.hexdigest()

    def _csv_blocks(self, lines: int = 65536) -> Iterable[str]:
        """The CSV text in blocks of ``lines`` lines (the same bytes as ``csv_lines``, fewer calls)."""
        block: list[str] = []
        for line in self.csv_lines():
            block.append(line)
            if len(block) == lines:
                yield "".join(block)
                block = []
        if block:
            yield "".join(block)

    def table(self, columns: Iterable[str] = EVENT_COLUMNS) -> EventTable:
        """The log's ``columns`` as arrays (``EventTable``): what the study reads, without a dict per event."""
        wanted = list(columns)
        index = {name: i for i, name in enumerate(EVENT_COLUMNS)}
        arrays: dict[str, np.ndarray] = {}
        names: dict[str, list[str]] = {}
        rows = self.rows
        for name in wanted:
            i = index[name]
            values = [row[i] for row in rows]
            if name in _TEXT:
                codes: dict[str | None, int] = {None: -1}
                arrays[name] = np.fromiter((codes.setdefault(v, len(codes) - 1) for v in values), np.int16,
                                           count=len(values))
                names[name] = [k for k in codes if k is not None]
            elif name in _FLOAT:
                arrays[name] = np.array(values, dtype=float) if values else np.empty(0)
            else:
                arrays[name] = np.fromiter((-1 if v is None else v for v in values), np.int64, count=len(values))
        return EventTable(arrays, names)

    def write_parquet(self, path: Path) -> None:
        """Write the log as a Parquet file (one column per ``EVENT_COLUMNS``, nulls for empty cells); raises
        ``ParquetUnavailable`` without pyarrow (``pip install 'fleet-sim[parquet]'``)."""
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ParquetUnavailable("events as Parquet need pyarrow: pip install 'fleet-sim[parquet]' "
                                     "(or pip install pyarrow), or write CSV with --events csv") from None
        types = {name: (pa.string() if name in _TEXT else pa.float64() if name in _FLOAT else pa.int64())
                 for name in EVENT_COLUMNS}
        schema = pa.schema([(name, types[name]) for name in EVENT_COLUMNS])
        with pq.ParquetWriter(str(path), schema, compression="zstd") as writer:
            chunk = 1 << 20
            for start in range(0, max(len(self.rows), 1), chunk):
                part = self.rows[start:start + chunk]
                arrays = [pa.array([row[i] for row in part], type=types[name])
                          for i, name in enumerate(EVENT_COLUMNS)]
                writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=schema))
