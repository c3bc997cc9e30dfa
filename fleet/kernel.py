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
        self._draws: dict[tuple[int, str], DeviceDraws] = {}

    def stream(self, purpose: str, device: int = FLEET_WIDE) -> np.random.Generator:
        code = self._code(purpose)
        key = (code, device)
        gen = self._streams.get(key)
        if gen is None:
            seq = np.random.SeedSequence(self.seed, spawn_key=(code, device + 1))
            gen = np.random.Generator(np.random.PCG64(seq))
            self._streams[key] = gen
        return gen

    def device_draws(self, purpose: str, n_devices: int, kind: str) -> "DeviceDraws":
        """Per-device sequences of standard ``kind`` draws for ``purpose`` (cached)."""
        key = (self._code(purpose), kind)
        draws = self._draws.get(key)
        if draws is None:
            draws = DeviceDraws(self.stream(purpose), n_devices, kind)
            self._draws[key] = draws
        return draws

    @staticmethod
    def _code(purpose: str) -> int:
        try:
            return PURPOSES[purpose]
        except KeyError:
            raise ValueError(f"unknown RNG purpose {purpose!r}; known: {sorted(PURPOSES)}") from None


class DeviceDraws:
    """One sequence of draws per device for one purpose, made in vectorised blocks.

    ``next(device)`` returns that device's next value. The j-th value of device d is the entry
    (d, j mod B) of block j // B, and block k is always the k-th block drawn from the purpose's
    generator, so a device's sequence does not depend on the order in which devices draw: the
    same guarantee as a generator per (purpose, device), at a list lookup instead of the ~10 us
    it takes numpy to build each such generator. ``kind``: ``"normal"`` (standard normal) or
    ``"uniform"`` (on [0, 1)).
    """

    BLOCK = 4

    def __init__(self, gen: np.random.Generator, n_devices: int, kind: str) -> None:
        if kind not in ("normal", "uniform"):
            raise ValueError(f"kind must be 'normal' or 'uniform', got {kind!r}")
        self._gen, self._n, self._kind = gen, n_devices, kind
        self._blocks: list[list[list[float]]] = []
        self._used = [0] * n_devices

    def next(self, device: int) -> float:
        j = self._used[device]
        self._used[device] = j + 1
        block = j // self.BLOCK
        if block < len(self._blocks):
            return self._blocks[block][device][j % self.BLOCK]
        while block >= len(self._blocks):
            shape = (self._n, self.BLOCK)
            values = (self._gen.standard_normal(shape) if self._kind == "normal"
                      else self._gen.random(shape))
            self._blocks.append(values.tolist())
        return self._blocks[block][device][j % self.BLOCK]


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
