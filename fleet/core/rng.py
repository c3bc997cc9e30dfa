"""Seeded randomness: independent streams keyed by (purpose, device).

Everything random in a run draws from a stream named by (purpose, device). Streams are spawned
from one ``numpy.random.SeedSequence`` with a spawn key derived from that name, so a device's
draws do not depend on how many other devices exist or in which order their processes run.
"""

from __future__ import annotations

import numpy as np

__all__ = ["PURPOSES", "FLEET_WIDE", "ChunkSeeds", "RngStreams", "DeviceDraws"]

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
        self._seeds: ChunkSeeds | None = None

    def stream(self, purpose: str, device: int = FLEET_WIDE) -> np.random.Generator:
        code = self._code(purpose)
        key = (code, device)
        gen = self._streams.get(key)
        if gen is None:
            seq = np.random.SeedSequence(self.seed, spawn_key=(code, device + 1))
            gen = np.random.Generator(np.random.PCG64(seq))
            self._streams[key] = gen
        return gen

    def first_child_state(self, purpose: str, device: int = FLEET_WIDE) -> dict:
        """The PCG64 state of ``stream(purpose, device).spawn(1)[0]`` (the first generator spawned off that
        stream), computed without building the stream or the child (``ChunkSeeds``): for a per-device object
        made lazily, among millions, that draws from a generator of its own."""
        if self._seeds is None:
            self._seeds = ChunkSeeds(self.seed)
        state, inc = self._seeds.pcg64_state((self._code(purpose), device + 1, 0))
        return {"bit_generator": "PCG64", "state": {"state": state, "inc": inc}, "has_uint32": 0, "uinteger": 0}

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
    draw only a few values) and chunks after; only each device's current chunk is kept. The matrix is
    drawn at the first draw, and only the devices that drew are counted, so a fleet of millions that
    never draws for a purpose holds nothing for it.
    ``kind``: ``"normal"`` (standard normal) or ``"uniform"`` (on [0, 1)).
    """

    FIRST = 8
    CHUNK = 32

    def __init__(self, seed: int, purpose_code: int, kind: str, n_devices: int) -> None:
        if kind not in ("normal", "uniform"):
            raise ValueError(f"kind must be 'normal' or 'uniform', got {kind!r}")
        self._seed, self._code, self._normal = seed, purpose_code, kind == "normal"
        self._n = n_devices
        self._first: np.ndarray | None = None  # drawn at the first draw: a fleet may never draw for a purpose
        self._left: dict[int, list[float]] = {}  # a device's draws not yet made, the next one last (popped)
        self._chunks: dict[int, int] = {}  # chunks drawn so far, by device (absent: not even its first row)
        self._seeds = ChunkSeeds(seed)
        self._bits = np.random.PCG64(0)
        self._gen = np.random.Generator(self._bits)

    def _draw(self, spawn_key: tuple[int, ...], shape) -> np.ndarray:
        gen = np.random.Generator(np.random.PCG64(np.random.SeedSequence(self._seed,
                                                                         spawn_key=spawn_key)))
        return gen.standard_normal(shape) if self._normal else gen.random(shape)

    def _draw_chunk(self, device: int, k: int) -> list[float]:
        """``_draw((purpose, device + 1, k), CHUNK)``, with the generator's state computed by ``ChunkSeeds``
        rather than by building a ``SeedSequence`` and a ``PCG64`` (a third of the time; same draws)."""
        state, inc = self._seeds.pcg64_state((self._code, device + 1, k), keep=2)
        self._bits.state = {"bit_generator": "PCG64", "state": {"state": state, "inc": inc},
                            "has_uint32": 0, "uinteger": 0}
        gen = self._gen
        return (gen.standard_normal(self.CHUNK) if self._normal else gen.random(self.CHUNK)).tolist()

    def next(self, device: int) -> float:
        """``device``'s next draw."""
        left = self._left.get(device)
        if left:
            return left.pop()
        return self._refill(device)

    def _refill(self, device: int) -> float:
        """``device`` drew all it had: its first row, or its next chunk; the first of them."""
        k = self._chunks.get(device)
        if k is None:
            first = self._first
            if first is None:
                first = self._first = self._draw((self._code, 0), (self._n, self.FIRST))
            values = first[device].tolist()
            self._chunks[device] = 0
        else:
            values = self._draw_chunk(device, k)
            self._chunks[device] = k + 1
        values.reverse()
        value = values.pop()
        self._left[device] = values
        return value


_MASK32 = 0xFFFFFFFF
_MIX_L, _MIX_R = 0xCA01F9DD, 0x4973F715
_PCG_MULT = 0x2360ED051FC65DA44385DF649FCCF645  # PCG's default 128-bit multiplier, as numpy's PCG64
_M128 = (1 << 128) - 1


def _words(value: int) -> list[int]:
    """A non-negative int as numpy's SeedSequence takes it: 32-bit words, least significant first."""
    out = []
    while True:
        out.append(value & _MASK32)
        value >>= 32
        if not value:
            return out


class ChunkSeeds:
    """The PCG64 state ``numpy.random.PCG64(SeedSequence(seed, spawn_key=key))`` starts from, computed here.

    numpy's SeedSequence (O'Neill's seed_seq with a pool of four 32-bit words: hash the entropy into the pool,
    mix, then hash the pool out) and PCG64's seeding (two steps of its 128-bit generator), in Python integers.
    The pool after the seed, and after each key's words but its last, is kept, so the next chunk of one
    device costs the mixing of one word. ``tests/core/test_rng.py`` holds it equal to numpy on many keys."""

    _INIT_A, _MULT_A, _INIT_B, _MULT_B = 0x43B0D7E5, 0x931E8875, 0x8B51F9DD, 0x58F38DED

    def __init__(self, seed: int) -> None:
        run = _words(seed)
        run += [0] * (4 - len(run))  # numpy pads a seed to the pool's size before a spawn key
        h = self._INIT_A

        def hashmix(value: int) -> int:
            nonlocal h
            value ^= h
            h = (h * self._MULT_A) & _MASK32
            value = (value * h) & _MASK32
            return value ^ (value >> 16)

        mixer = [hashmix(run[i]) for i in range(4)]
        for src in range(4):
            for dst in range(4):
                if src != dst:
                    mixer[dst] = _mix(mixer[dst], hashmix(mixer[src]))
        self._pool = (tuple(mixer), h)
        for word in run[4:]:
            self._pool = self._mix_word(*self._pool, word)
        self._prefix: dict[tuple, tuple] = {}
        self._out = []  # generate_state's hash constants: (xor, multiply) for each of the 8 words out
        hb = self._INIT_B
        for _ in range(8):
            xor, hb = hb, (hb * self._MULT_B) & _MASK32
            self._out.append((xor, hb))

    def _mix_word(self, mixer: tuple, h: int, word: int) -> tuple[tuple, int]:
        """One more entropy word past the pool: hashed four times, mixed into each pool word."""
        out = []
        for m in mixer:
            v = word ^ h
            h = (h * self._MULT_A) & _MASK32
            v = (v * h) & _MASK32
            out.append(_mix(m, v ^ (v >> 16)))
        return tuple(out), h

    def pcg64_state(self, key: tuple[int, ...], keep: int = 1) -> tuple[int, int]:
        """``(state, inc)`` of ``PCG64(SeedSequence(seed, spawn_key=key))`` (``key`` non-empty). The pool after
        ``key[:keep]`` is kept for the next key that starts the same way (1: the purpose; 2: the purpose and
        the device, for a device that draws chunk after chunk)."""
        keep = min(keep, len(key))
        head = key[:keep]
        pool = self._prefix.get(head)
        if pool is None:
            pool = self._pool
            for word in (w for part in head for w in _words(part)):
                pool = self._mix_word(*pool, word)
            self._prefix[head] = pool
        for word in (w for part in key[keep:] for w in _words(part)):
            pool = self._mix_word(*pool, word)
        mixer = pool[0]
        words = []
        for i, (xor, mult) in enumerate(self._out):
            v = ((mixer[i & 3] ^ xor) * mult) & _MASK32
            words.append(v ^ (v >> 16))
        initstate = (words[1] << 96) | (words[0] << 64) | (words[3] << 32) | words[2]
        initseq = (words[5] << 96) | (words[4] << 64) | (words[7] << 32) | words[6]
        inc = ((initseq << 1) | 1) & _M128
        return ((inc + initstate) * _PCG_MULT + inc) & _M128, inc


def _mix(x: int, y: int) -> int:
    r = (_MIX_L * x - _MIX_R * y) & _MASK32
    return r ^ (r >> 16)
