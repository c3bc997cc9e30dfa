"""Vectorized ``local.derive_seed``: numpy's SeedSequence hash for many integer tuples at once.

``derive_seed`` builds one ``numpy.random.SeedSequence`` per call (15-40 us); ZO needs one seed per
(client, step, query). ``derive_seeds`` computes the same 63-bit values for whole arrays (0.1 us each) and
checks a sample against ``derive_seed`` on every call, falling back to it if they ever disagree.
"""

from __future__ import annotations

import numpy as np

from algorithms.local import derive_seed

__all__ = ["derive_seeds"]


def _words(a: np.ndarray) -> list[np.ndarray]:
    """The uint32 words SeedSequence makes of non-negative ints that all have the same word count:
    low word first, a second word only when the value needs one (0 is one word)."""
    a = a.astype(np.uint64)
    hi = a >> np.uint64(32)
    if (hi == 0).all():
        return [a.astype(np.uint32)]
    return [(a & np.uint64(0xFFFFFFFF)).astype(np.uint32), hi.astype(np.uint32)]


def _hash(value: np.ndarray, const: list) -> np.ndarray:
    value = value ^ np.uint32(const[0])
    const[0] = (const[0] * 0x931E8875) & 0xFFFFFFFF
    value = value * np.uint32(const[0])
    return value ^ (value >> np.uint32(16))


def _mix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    r = np.uint32(0xCA01F9DD) * x - np.uint32(0x4973F715) * y
    return r ^ (r >> np.uint32(16))


def _seed_sequence(parts: list[np.ndarray]) -> np.ndarray:
    """``SeedSequence(row).generate_state(2, uint64)[0] >> 1`` for rows whose parts have equal word counts."""
    entropy = [w for column in parts for w in _words(column)]
    size = len(parts[0])
    with np.errstate(over="ignore"):
        const = [0x43B0D7E5]
        pool = [_hash(entropy[i] if i < len(entropy) else np.zeros(size, np.uint32), const) for i in range(4)]
        for src in range(4):
            for dst in range(4):
                if src != dst:
                    pool[dst] = _mix(pool[dst], _hash(pool[src], const))
        for src in range(4, len(entropy)):
            for dst in range(4):
                pool[dst] = _mix(pool[dst], _hash(entropy[src], const))
        const_b, state = 0x8B51F9DD, []
        for i in range(2):
            v = pool[i] ^ np.uint32(const_b)
            const_b = (const_b * 0x58F38DED) & 0xFFFFFFFF
            v = v * np.uint32(const_b)
            state.append(v ^ (v >> np.uint32(16)))
    word = state[0].astype(np.uint64) | (state[1].astype(np.uint64) << np.uint64(32))
    return (word >> np.uint64(1)).astype(np.int64)


def derive_seeds(*parts) -> np.ndarray:
    """``derive_seed`` over broadcast arrays of non-negative ints: ``out[i] == derive_seed(p0[i], p1[i], ...)``
    (numpy's SeedSequence hash, vectorized; each group of rows is checked against ``derive_seed`` on its
    first row, and falls back to it if they disagree)."""
    cols = [np.asarray(c, dtype=np.int64).ravel() for c in np.broadcast_arrays(*[np.asarray(p) for p in parts])]
    out = np.empty(len(cols[0]) if cols else 0, dtype=np.int64)
    if out.size == 0:
        return out
    if any((c < 0).any() for c in cols):
        raise ValueError("derive_seeds takes non-negative integers")
    signature = sum((c > 0xFFFFFFFF).astype(np.int64) << i for i, c in enumerate(cols))
    for key in np.unique(signature):
        rows = np.flatnonzero(signature == key)
        part = [c[rows] for c in cols]
        fast = _seed_sequence(part)
        if int(fast[0]) != derive_seed(*[int(c[0]) for c in part]):
            fast = np.array([derive_seed(*[int(c[i]) for c in part]) for i in range(len(rows))], dtype=np.int64)
        out[rows] = fast
    return out
