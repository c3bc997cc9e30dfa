"""The simulation kernel: a SimPy environment, seeded RNG streams, and the event recorder.

Everything random in a run draws from a stream named by (purpose, device). Streams are spawned
from one ``numpy.random.SeedSequence`` with a spawn key derived from that name, so a device's
draws do not depend on how many other devices exist or in which order their processes run.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import simpy

#: Purposes with a stable numeric code each. Append only: reordering changes every seeded run.
PURPOSES: dict[str, int] = {
    "fleet": 0,  # sampling device profiles
    "selection": 1,  # the coordinator's client selection
    "link": 2,  # per-message loss on a device's link
    "failure": 3,  # random failure timelines
    "slowdown": 4,  # per-task compute slowdown
    "availability": 5,  # diurnal phases and similar per-device offsets
    "topology": 6,  # device-to-gateway assignment
}

FLEET_WIDE = -1  # the `device` of streams that belong to no single device


class RngStreams:
    """Independent ``numpy.random.Generator`` streams keyed by (purpose, device).

    ``stream("link", 17)`` always returns the same generator object for one instance, and two
    instances built from the same seed produce identical draws for the same key.
    """

    def __init__(self, seed: int) -> None:
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.seed = int(seed)
        self._streams: dict[tuple[int, int], np.random.Generator] = {}

    def stream(self, purpose: str, device: int = FLEET_WIDE) -> np.random.Generator:
        try:
            code = PURPOSES[purpose]
        except KeyError:
            raise ValueError(f"unknown RNG purpose {purpose!r}; known: {sorted(PURPOSES)}") from None
        key = (code, device)
        gen = self._streams.get(key)
        if gen is None:
            seq = np.random.SeedSequence(self.seed, spawn_key=(code, device + 1))
            gen = np.random.Generator(np.random.PCG64(seq))
            self._streams[key] = gen
        return gen


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


class Kernel:
    """The run's clock and its sources of randomness and record: one per simulation."""

    def __init__(self, seed: int) -> None:
        self.env = simpy.Environment()
        self.rng = RngStreams(seed)
        self.recorder = EventRecorder()

    @property
    def now_s(self) -> float:
        return float(self.env.now)
