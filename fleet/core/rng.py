"""Seeded randomness: independent streams keyed by (purpose, device).

Everything random in a run draws from a stream named by (purpose, device). Streams are spawned
from one ``numpy.random.SeedSequence`` with a spawn key derived from that name, so a device's
draws do not depend on how many other devices exist or in which order their processes run.
"""

from __future__ import annotations

import numpy as np

__all__ = ["PURPOSES", "FLEET_WIDE", "RngStreams", "DeviceDraws"]

#: Purposes with a stable numeric code each. Append only: reordering changes every seeded run.
PURPOSES: dict[str, int] = {
    "fleet": 0,  # sampling device profiles
    "selection": 1,  # the coordinator's client selection
    "link": 2,  # per-message loss on a device's link
    "failure": 3,  # random failure timelines
    "slowdown": 4,  # per-task compute slowdown
    "availability": 5,  # diurnal phases and similar per-device offsets
    "topology": 6,  # device-to-gateway assignment
    "partition": 7,  # which training samples each device holds
    "local": 8,  # a local update's batches and directions (seeded per device, round and task)
    "model_init": 9,  # the global model's initial weights (and server-side pruning)
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

    def device_draws(self, purpose: str, kind: str, n_devices: int) -> "DeviceDraws":
        """Per-device streams of standard ``kind`` draws for ``purpose`` (cached)."""
        key = (self._code(purpose), kind)
        draws = self._draws.get(key)
        if draws is None:
            draws = DeviceDraws(self.seed, key[0], kind, n_devices)
            self._draws[key] = draws
        return draws

    @staticmethod
    def _code(purpose: str) -> int:
        try:
            return PURPOSES[purpose]
        except KeyError:
            raise ValueError(f"unknown RNG purpose {purpose!r}; known: {sorted(PURPOSES)}") from None


class DeviceDraws:
    """One stream of standard draws per device for one purpose.

    Device d's first ``FIRST`` draws are row d of one matrix drawn, vectorised, from
    ``SeedSequence(seed, spawn_key=(purpose, 0))``; its later draws come in chunks, chunk k from
    ``SeedSequence(seed, spawn_key=(purpose, d + 1, k))``. Either way a device's sequence is a
    function of (seed, purpose, device) alone, whatever other devices do or in which order they
    run. Building a numpy generator costs ~10 us, hence the shared first rows (most devices
    draw only a few values) and chunks after; only each device's current chunk is kept.
    ``kind``: ``"normal"`` (standard normal) or ``"uniform"`` (on [0, 1)).
    """

    FIRST = 8
    CHUNK = 32

    def __init__(self, seed: int, purpose_code: int, kind: str, n_devices: int) -> None:
        if kind not in ("normal", "uniform"):
            raise ValueError(f"kind must be 'normal' or 'uniform', got {kind!r}")
        self._seed, self._code, self._normal = seed, purpose_code, kind == "normal"
        self._first = self._draw((self._code, 0), (n_devices, self.FIRST))
        self._chunk: dict[int, list[float]] = {}
        self._used = [0] * n_devices

    def _draw(self, spawn_key: tuple[int, ...], shape) -> np.ndarray:
        gen = np.random.Generator(np.random.PCG64(np.random.SeedSequence(self._seed,
                                                                         spawn_key=spawn_key)))
        return gen.standard_normal(shape) if self._normal else gen.random(shape)

    def next(self, device: int) -> float:
        j = self._used[device]
        self._used[device] = j + 1
        if j < self.FIRST:
            return float(self._first[device, j])
        k, i = divmod(j - self.FIRST, self.CHUNK)
        if i == 0:
            self._chunk[device] = self._draw((self._code, device + 1, k), self.CHUNK).tolist()
        return self._chunk[device][i]
