"""The event log: one row per event, hashed byte for byte."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from typing import Iterable

__all__ = ["EVENT_COLUMNS", "EventRecorder"]

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


@dataclass
class EventRecorder:
    """Collects one row per event, in the order the simulation produced them.

    Rows are stored as tuples matching ``EVENT_COLUMNS`` (``None`` for an empty cell). The log's
    identity is the SHA-256 of its CSV text (``write_csv`` writes exactly the hashed bytes), so
    ``sha256sum events.csv`` reproduces ``event_log_sha256``.
    """

    rows: list[tuple] = field(default_factory=list)

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
        for row in self.rows:
            yield ",".join("" if v is None else repr(v) if isinstance(v, float) else str(v)
                           for v in row) + "\n"

    def write_csv(self, stream: io.TextIOBase) -> str:
        """Write the log as CSV to ``stream``; return its SHA-256 hex digest."""
        digest = hashlib.sha256()
        for line in self.csv_lines():
            digest.update(line.encode())
            stream.write(line)
        return digest.hexdigest()

    def sha256(self) -> str:
        digest = hashlib.sha256()
        for line in self.csv_lines():
            digest.update(line.encode())
        return digest.hexdigest()
