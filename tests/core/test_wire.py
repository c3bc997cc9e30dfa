"""The frame (fleet/core/wire.py): a simulated message is exactly as long as the frame the bridge sends for it.

For every kind that travels, the real frame is built the way the hub and the agent build it
(``fleet.bridge.payloads`` and ``fleet.bridge.protocol.encode``), and its payload is measured on its own: the
packed entries that are not the header. The core message carrying that payload length must encode to
the same size, header values, optional fields and msgpack length classes included.
"""

from __future__ import annotations

import math
from dataclasses import replace

import msgpack
import numpy as np
import pytest
import torch

from algorithms.local import ClientResult, ModelState
from fleet.bridge import payloads, protocol, schema
from fleet.core import wire
from fleet.core.messages import CAUSES, Leave, Refusal, Task, Update
from fleet.core.wire import encoded_size_bytes

# 0 and 3 parameters, then enough that a tensor's bin needs a 32-bit length and its shape a uint32
SIZES = [0, 3, 70_000]


def _payload_bytes(kind: str, body: dict) -> int:
    """The body's entries past the header, each key and value packed on its own."""
    wired = schema.to_wire(kind, body)
    return sum(len(msgpack.packb(k)) + len(msgpack.packb(v, use_bin_type=True))
               for k, v in wired.items() if k not in wire.HEADERS[kind])


def _task(**change) -> Task:
    task = Task(task_id=2**40 + 1, device=17, round_index=300, model_version=299, phase="train", local_steps=5,
                batch_size=32, peak_memory_bytes=3 * 2**30, flops=10**12, bytes_up=4, deadline_s=1234.5,
                payload_bytes=0)
    return replace(task, **change)


@pytest.mark.parametrize("n_params", SIZES)
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("deadline_s", [None, 1234.5, 7])
@pytest.mark.parametrize("phase, update_kind", [("train", "delta"), ("train", "seeds"), ("prune", "scores")])
@pytest.mark.parametrize("mode, architecture", [("", ()), ("adjust", ()), ("", (32, 7, 300)), ("mask", (1,))])
def test_a_task_is_as_long_as_the_frame_the_hub_sends(n_params, masked, deadline_s, phase, update_kind, mode,
                                                      architecture):
    weights = torch.linspace(-1, 1, n_params)
    state = ModelState(weights, weights > 0 if masked else None, prune_step=3, architecture=architecture)
    task = _task(deadline_s=deadline_s, phase=phase, mode=mode, architecture=architecture)
    budget_s = None if deadline_s is None else 12.25  # the bridge sends the budget left, not the instant
    body = payloads.task_body(task, 2**62 + 5, state, update_kind=update_kind, deadline_s=budget_s)
    real = protocol.encode("task", body)
    assert encoded_size_bytes(replace(task, payload_bytes=_payload_bytes("task", body))) == len(real)


@pytest.mark.parametrize("n_params", SIZES)
@pytest.mark.parametrize("kind", ["delta", "seeds", "scores", "delta_grad"])
@pytest.mark.parametrize("train_loss", [0.5, math.nan])
def test_an_update_is_as_long_as_the_frame_the_agent_sends(n_params, kind, train_loss):
    values = torch.linspace(-1, 1, n_params)
    tensors = ({"seeds": np.arange(n_params, dtype=np.int64), "coefficients": values.numpy()} if kind == "seeds"
               else {"delta": values, "gradient": values * 2} if kind == "delta_grad" else {kind: values})
    result = ClientResult(kind, 600, **tensors, train_loss=train_loss)
    body = payloads.update_body(2**40 + 1, result, 3.75, 123_456_789)
    real = protocol.encode("update", body)
    update = Update(2**40 + 1, 17, 300, 299, compute_s=3.75, download_link_s=0.5, download_queue_s=0.25,
                    payload_bytes=_payload_bytes("update", body))
    assert encoded_size_bytes(update) == len(real)


@pytest.mark.parametrize("cause", CAUSES)
@pytest.mark.parametrize("free_bytes", [0, 200, 2**33])
def test_a_refusal_is_as_long_as_the_frame_the_agent_sends(cause, free_bytes):
    refusal = Refusal(task_id=12, device=17, round_index=300, cause=cause, demand_bytes=2**30, free_bytes=free_bytes)
    real = protocol.encode("refusal", payloads.refusal_body(12, cause, free_bytes))
    assert encoded_size_bytes(refusal) == len(real)
    assert _payload_bytes("refusal", payloads.refusal_body(12, cause, free_bytes)) == 0  # all header


def test_sizes_by_hand():
    # [2, "refusal", {"task_id": 12, "cause": "memory", "free_memory_bytes": 200}]: 1 (fixarray) + 1 (2)
    # + 8 ("refusal") + 1 (fixmap) + 8 + 1 ("task_id", 12) + 6 + 7 ("cause", "memory")
    # + 18 + 2 ("free_memory_bytes", uint8 200) = 53
    assert encoded_size_bytes(Refusal(12, 17, 300, "memory", 2**30, 200)) == 53
    update = Update(12, 17, 300, 299, 1.5, 0.0, 0.0, payload_bytes=1000)
    # 1 + 1 + 7 ("update") + 1 + 8 + 1 ("task_id", 12) + 10 + 9 ("compute_s", float64) = 38, then the payload
    assert encoded_size_bytes(update) == 38 + 1000


def test_the_header_is_the_schema_s_first_fields_in_order():
    full = {"task": _task(mode="adjust", architecture=(3, 4)), "update": Update(1, 2, 3, 4, 1.0, 0.0, 0.0, 5),
            "refusal": Refusal(1, 2, 3, "link", 4, 5)}
    for kind, msg in full.items():
        got_kind, header = wire.header(msg)
        assert got_kind == kind and tuple(header) == wire.HEADERS[kind]
        assert tuple(schema._SCHEMAS[kind])[:len(header)] == wire.HEADERS[kind]
    assert all(len(fields) <= wire.MAX_BODY_FIELDS for fields in schema._SCHEMAS.values())


def test_an_empty_mode_and_architecture_cost_nothing():
    plain, shaped = _task(), _task(mode="adjust", architecture=(32, 64))
    assert "mode" not in wire.header(plain)[1] and "architecture" not in wire.header(plain)[1]
    # "mode" (5) + "adjust" (7) + "architecture" (13) + [32, 64] (a fixarray of two positive fixints: 3) = 28
    assert encoded_size_bytes(shaped) - encoded_size_bytes(plain) == 28
    assert wire.header(shaped)[1]["architecture"] == [32, 64]


def test_the_bridge_packs_with_the_frame_of_the_core():
    body = payloads.refusal_body(5, "battery", 7)
    assert protocol.encode("refusal", body) == wire.frame("refusal", body)
    assert protocol.VERSION == wire.VERSION == 2
    assert msgpack.unpackb(wire.frame("bye", {}), raw=False) == [2, "bye", {}]


def test_a_leave_never_travels():
    with pytest.raises(TypeError, match="does not travel"):
        encoded_size_bytes(Leave(1, 2, 3, "offline"))


def test_the_size_is_the_length_of_the_header_s_frame_plus_the_payload():
    for msg in (_task(), _task(deadline_s=None), Update(1, 2, 3, 4, 1.0, 0.0, 0.0, 5), Refusal(1, 2, 3, "link", 4, 5)):
        assert encoded_size_bytes(msg) == len(wire.frame(*wire.header(msg))) + getattr(msg, "payload_bytes", 0)
