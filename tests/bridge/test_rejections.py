"""Every rejection reason of the codec (fleet/bridge/protocol.py), each from frames made by hand."""

from __future__ import annotations

import math

import msgpack
import numpy as np
import pytest

from fleet.bridge import protocol
from fleet.bridge.protocol import ProtocolError, decode, encode
from tests.bridge.protocol_cases import V93, V, example_bodies, hand_packed, packed, reason_of


def _update(**change) -> dict:
    body = {**example_bodies()["update"], **change}
    return {k: v for k, v in body.items() if v is not None}


def _tensor_map(**change) -> dict:
    return {**protocol.tensor(np.ones(3, np.float32)), **change}


BAD_FRAMES = {
    "malformed": [
        b"", b"\xc1", V93, V93 + b"\xa6update", b"\x01\x02",  # reserved byte, truncated, trailing
        packed(V, "bye", {}) + b"\x00", packed(V, "bye"), packed(V, "bye", {}, 4), packed(V, 5, {}),
        packed(V, "bye", []), packed("1", "bye", {}), packed(True, "bye", {}), msgpack.packb({"v": 1}),
        V93 + b"\xa3bye\xd4\x01\x02",  # an ext type
        V93 + b"\xa3bye\x81\xa6reason\xa2\xff\xfe",  # invalid UTF-8
        packed(V, "bye", {"reason": "x" * (protocol.MAX_STR_BYTES + 1)}),
        b"\x91" * (protocol.MAX_DEPTH + 1) + b"\xc0",  # too deep
        b"\xdd\x7f\xff\xff\xff",  # an array header claiming 2^31 items
        b"\xdc\xff\xff" + b"\xc0" * 65535,  # more objects than MAX_OBJECTS
    ],
    "version": [packed(V + 1, "bye", {}), packed(0, "bye", {}), packed(V + 1), packed(-1, [], None)],
    "kind": [packed(V, "goodbye", {}), packed(V, "", {}), packed(V, "Update", {})],
    "schema": [
        hand_packed("update", _update(num_samples=None)),  # missing field
        hand_packed("update", _update(extra=1)),  # unknown field
        hand_packed("update", _update(num_samples="600")),  # wrong type
        hand_packed("update", _update(num_samples=-1)),  # out of range
        hand_packed("update", _update(num_samples=True)),  # bool is not an integer
        hand_packed("update", _update(compute_s="1")),
        hand_packed("update", _update(compute_s=-1.0)),
        hand_packed("update", _update(kind="gradient")),
        hand_packed("update", _update(delta=None)),  # kind delta without its delta
        hand_packed("update", _update(scores=np.ones(3, np.float32))),  # a tensor its kind does not send
        hand_packed("update", _update(kind="seeds", delta=None, seeds=np.ones(2, np.int64))),  # no coefficients
        hand_packed("update", _update(delta=[1.0, 2.0])),  # not a tensor map
        hand_packed("update", _update(delta=_tensor_map(extra=1))),
        hand_packed("update", _update(delta={k: v for k, v in _tensor_map().items() if k != "shape"})),
        hand_packed("update", _update(delta=_tensor_map(data=list(range(12))))),
        hand_packed("update", _update(delta=_tensor_map(shape=3))),
        hand_packed("update", _update(delta=_tensor_map(dtype=1))),
        hand_packed("update", _update(task_id=2**63)),  # above 2^63 - 1
        hand_packed("refusal", {"task_id": 1, "cause": "bored", "free_memory_bytes": 0}),
        hand_packed("hello", {"device_class": "x", "free_memory_bytes": 1, "flops_per_s": 1.0, "agent_version": 7}),
        hand_packed("welcome", {**example_bodies()["welcome"], "heartbeat_interval_s": 0.0}),
        hand_packed("welcome", {**example_bodies()["welcome"], "algorithm": {"name": "zo", "params": {"x": b"bin"}}}),
        hand_packed("welcome", {**example_bodies()["welcome"], "dataset": {"name": "d", "partition":
                                                                    np.array([-1], np.int64)}}),
        hand_packed("task", {**example_bodies()["task"], "phase": "eval"}),
        hand_packed("task", {**example_bodies()["task"], "local_steps": 0}),
        V93 + b"\xa3bye\x82\xa6reason\xa1a\xa6reason\xa1b",  # a repeated key
        V93 + b"\xa3bye\x81\x01\xa1a",  # a non-string key
        packed(V, "bye", {"reason": None}),
    ],
    "tensor_dtype": [
        hand_packed("update", _update(delta=np.ones(3, np.float64).view(np.uint8)[:12].copy())),  # uint8 delta
        hand_packed("update", _update(delta=_tensor_map(dtype="float64"))),
        hand_packed("update", _update(delta=_tensor_map(dtype="float16"))),
        hand_packed("update", _update(delta=np.ones(3, np.int64))),
        hand_packed("task", {**example_bodies()["task"], "mask": np.ones(30, np.uint8)}),
        hand_packed("task", {**example_bodies()["task"], "mask": {"dtype": "bool", "shape": [30],
                                                           "data": b"\x01" * 29 + b"\x02"}}),  # bool byte 2
    ],
    "tensor_shape": [
        hand_packed("update", _update(delta=_tensor_map(shape=[4]))),  # 12 bytes for 4 float32
        hand_packed("update", _update(delta=_tensor_map(data=b"\x00" * 11))),
        hand_packed("update", _update(delta=_tensor_map(shape=[1, 1, 1, 1, 3]))),  # rank 5
        hand_packed("update", _update(delta=np.ones((3, 1), np.float32))),  # a field that must be 1-D
        hand_packed("update", _update(delta=_tensor_map(shape=[0, 2**40, 2**40], data=b""))),  # absurd empty shape
        hand_packed("task", {**example_bodies()["task"], "mask": np.ones(29, bool)}),  # mask length != weights
        hand_packed("update", _update(kind="seeds", delta=None, seeds=np.ones(2, np.int64),
                                coefficients=np.ones(3, np.float32))),
    ],
    "non_finite": [
        hand_packed("update", _update(delta=np.array([1.0, np.nan, 2.0], np.float32))),
        hand_packed("update", _update(delta=np.array([np.inf], np.float32))),
        hand_packed("update", _update(delta=np.array([-np.inf, 0.0], np.float32))),
        hand_packed("update", _update(kind="scores", delta=None, scores=np.array([np.nan], np.float32))),
        hand_packed("update", _update(train_loss=math.nan)),
        hand_packed("heartbeat", {"sent_s": math.inf}),
    ],
}


@pytest.mark.parametrize("reason,index", [(r, i) for r, frames in BAD_FRAMES.items() for i in range(len(frames))])
def test_each_bad_frame_is_rejected_with_its_reason(reason, index):
    assert reason_of(BAD_FRAMES[reason][index]) == reason


def test_every_reason_is_exercised():
    assert set(BAD_FRAMES) | {"oversized"} == set(protocol.REASONS)


def test_oversized_frames_are_rejected_before_unpacking():
    frame = encode("update", example_bodies()["update"])
    assert decode(frame, max_bytes=len(frame)).kind == "update"
    assert reason_of(frame, max_bytes=len(frame) - 1) == "oversized"
    assert reason_of(b"\xff" * 100, max_bytes=99) == "oversized"  # garbage, but too big is found first
    big = np.zeros(2**20, np.float32)
    with pytest.raises(ProtocolError) as info:
        encode("update", _update(delta=big), max_bytes=2**22)
    assert info.value.reason == "oversized"
    assert decode(encode("update", _update(delta=big), max_bytes=2**23), max_bytes=2**23)["delta"].size == 2**20


def test_encode_checks_what_it_sends():
    with pytest.raises(ProtocolError) as info:
        encode("update", _update(delta=np.array([np.nan], np.float32)))
    assert info.value.reason == "non_finite"
    with pytest.raises(ProtocolError) as info:
        encode("update", _update(delta=np.ones(3, np.float64)))  # no silent cast
    assert info.value.reason == "tensor_dtype"
    with pytest.raises(ProtocolError) as info:
        encode("nope", {})
    assert info.value.reason == "kind"
    with pytest.raises(ProtocolError) as info:
        encode("bye", {"reason": object()})
    assert info.value.reason == "schema"
    with pytest.raises(TypeError):
        decode("not bytes")

