"""Shared cases for the protocol tests: valid bodies of every kind, and frames packed by hand."""

from __future__ import annotations

import struct

import msgpack
import numpy as np
import pytest

from fleet.bridge import protocol
from fleet.bridge.protocol import ProtocolError, decode

V = protocol.VERSION
V93 = bytes([0x93, V])  # a three-item array, then this peer's version: how every frame starts
TRICKY = np.array([0.0, -0.0, 1.0, -1.5, 1e-45, -1e-45, 1.1754942e-38, 3.4028235e38, -3.4028235e38, 0.1],
                  dtype=np.float32)  # signed zeros, the smallest subnormals, the largest subnormal, the extremes


def bits_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def same(a, b) -> bool:
    """Equal values, tensors bit for bit, floats by their bits (so -0.0 != 0.0)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and bits_equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, float):
        return isinstance(b, float) and struct.pack("<d", a) == struct.pack("<d", b)
    return type(a) is type(b) and a == b


def example_bodies() -> dict[str, dict]:
    w = np.tile(TRICKY, 3)
    return {
        "hello": {"device_class": "rpi4_4gb", "free_memory_bytes": 3 * 2**30, "flops_per_s": 1.2e10,
                  "agent_version": "fleet-agent 0.1", "device_name": "pi-kitchen"},
        "welcome": {"device": 1000, "heartbeat_interval_s": 1.0,
                    "algorithm": {"name": "fedfpzo", "params": {"lr": 0.01, "hidden": [200, 200], "clip": None,
                                                                "uplink": "seeds", "nested": {"ok": True}}},
                    "dataset": {"name": "fashion_mnist", "partition": np.array([5, 0, 59999, 2**40], np.int64)},
                    "liveness": 3},
        "task": {"task_id": 12, "round_index": 3, "model_version": 2, "phase": "train", "local_steps": 5,
                 "batch_size": 32, "seed": 2**63 - 1, "weights": w, "mask": w != 0, "prune_step": 1,
                 "deadline_s": 30.0, "peak_memory_bytes": 2**20, "update_kind": "seeds"},
        "update": {"task_id": 12, "kind": "delta", "num_samples": 600, "compute_s": 4.25,
                   "peak_memory_bytes": 123456789, "train_loss": 2.302, "delta": w},
        "refusal": {"task_id": 12, "cause": "memory", "free_memory_bytes": 81920},
        "heartbeat": {"sent_s": -0.0},
        "bye": {"reason": "shutting down"},
    }



def packed(*envelope) -> bytes:
    return msgpack.packb(list(envelope), use_bin_type=True)


def raw(v):
    """``v`` with arrays as tensor maps (at any depth) and nothing else touched: no checks."""
    if isinstance(v, np.ndarray):
        return protocol.tensor(v)
    return {k: raw(x) for k, x in v.items()} if isinstance(v, dict) else v


def hand_packed(kind: str, body: dict) -> bytes:
    """A frame packed by hand, bypassing ``encode``'s checks."""
    return packed(V, kind, raw(body))


def reason_of(frame: bytes, **kw) -> str:
    with pytest.raises(ProtocolError) as info:
        decode(frame, **kw)
    return info.value.reason
