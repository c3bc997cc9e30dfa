"""The wire protocol (fleet/bridge/protocol.py, docs/protocol.md) and the learning plane's payloads (fleet/bridge/payloads.py):
round trips, every rejection reason, fuzzing, and the annotated frame in the doc, regenerated here
(``python -m tests.bridge.test_protocol`` prints it)."""

from __future__ import annotations

import math
import re
import struct
import subprocess
import sys
from pathlib import Path

import msgpack
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fleet.bridge import payloads, protocol
from fleet.bridge.protocol import ProtocolError, decode, encode

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
TRICKY = np.array([0.0, -0.0, 1.0, -1.5, 1e-45, -1e-45, 1.1754942e-38, 3.4028235e38, -3.4028235e38, 0.1],
                  dtype=np.float32)  # signed zeros, the smallest subnormals, the largest subnormal, the extremes


def _bits_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _same(a, b) -> bool:
    """Equal values, tensors bit for bit, floats by their bits (so -0.0 != 0.0)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and _bits_equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, float):
        return isinstance(b, float) and struct.pack("<d", a) == struct.pack("<d", b)
    return type(a) is type(b) and a == b


def _valid_bodies() -> dict[str, dict]:
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


def _frame(*envelope) -> bytes:
    return msgpack.packb(list(envelope), use_bin_type=True)


def _raw(v):
    """``v`` with arrays as tensor maps (at any depth) and nothing else touched: no checks."""
    if isinstance(v, np.ndarray):
        return protocol.tensor(v)
    return {k: _raw(x) for k, x in v.items()} if isinstance(v, dict) else v


def _wire(kind: str, body: dict) -> bytes:
    """A frame packed by hand, bypassing ``encode``'s checks."""
    return _frame(1, kind, _raw(body))


def _reason(frame: bytes, **kw) -> str:
    with pytest.raises(ProtocolError) as info:
        decode(frame, **kw)
    return info.value.reason


# --- round trips ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", protocol.KINDS)
def test_every_kind_round_trips_bit_for_bit(kind):
    body = _valid_bodies()[kind]
    frame = encode(kind, body)
    msg = decode(frame)
    assert msg.kind == kind and msg.size_bytes == len(frame)
    want = {k: np.asarray(v) if isinstance(v, np.ndarray) else v for k, v in body.items()}
    assert _same(dict(msg.body), want)
    assert encode(kind, dict(msg.body)) == frame  # decode then encode gives the same bytes


def test_optional_fields_may_be_left_out_and_bodies_are_read_only():
    assert dict(decode(encode("bye", {})).body) == {}
    msg = decode(encode("hello", {k: v for k, v in _valid_bodies()["hello"].items() if k != "device_name"}))
    assert "device_name" not in msg.body
    task = decode(encode("task", _valid_bodies()["task"]))
    with pytest.raises(TypeError):
        task.body["seed"] = 1
    with pytest.raises(ValueError):
        task["weights"][0] = 1.0


def test_int64_bool_and_uint8_tensors_and_every_rank_up_to_4():
    ints = np.array([-2**63, -1, 0, 1, 2**63 - 1], np.int64)
    assert _bits_equal(protocol._read_tensor("t", msgpack.unpackb(msgpack.packb(protocol.tensor(ints)))), ints)
    for array in (np.zeros((2, 3, 4, 5), np.uint8) + 7, np.array([[True, False]]), np.array(2.5, np.float32),
                  np.zeros((0, 3), np.float32), np.arange(6, dtype=">i8")):
        back = protocol._read_tensor("t", msgpack.unpackb(msgpack.packb(protocol.tensor(array), use_bin_type=True)))
        assert back.shape == array.shape and np.array_equal(back, array) and back.dtype.byteorder in "<|="


def test_tensor_takes_torch_and_to_torch_gives_an_independent_writable_copy():
    t = torch.from_numpy(TRICKY.copy())
    wire = protocol.tensor(t)
    assert wire["dtype"] == "float32" and wire["shape"] == [len(TRICKY)] and wire["data"] == TRICKY.tobytes()
    back = payloads.to_torch(decode(encode("update", {**_valid_bodies()["update"], "delta": t}))["delta"])
    assert back.dtype == torch.float32 and back.numpy().tobytes() == TRICKY.tobytes()
    back[0] = 5.0  # writable, and a copy
    assert payloads.to_torch(np.array([True, False]).view(np.bool_)).dtype == torch.bool


def test_encode_normalises_numbers_and_writes_fields_in_schema_order():
    a = encode("heartbeat", {"sent_s": 3})  # an int in a float field is written as a float
    assert decode(a)["sent_s"] == 3.0 and type(decode(a)["sent_s"]) is float
    body = _valid_bodies()["refusal"]
    assert encode("refusal", dict(reversed(list(body.items())))) == encode("refusal", body)
    assert encode("refusal", {**body, "task_id": np.int64(12)}) == encode("refusal", body)


def test_task_body_and_state_round_trip():
    from algorithms.local import ModelState
    from fleet.core.messages import Task

    w = torch.from_numpy(np.tile(TRICKY, 2))
    state = ModelState(w, w != 0, prune_step=2)
    task = Task(task_id=4, device=9, round_index=1, model_version=3, phase="train", local_steps=2, batch_size=8,
                peak_memory_bytes=5000, flops=10**6, bytes_up=80, deadline_s=140.0, payload_bytes=80)
    msg = decode(encode("task", payloads.task_body(task, 2**62 + 1, state, update_kind="delta", deadline_s=12.5)))
    payloads.validate_task(msg, n_params=len(w))
    back = payloads.state_from_task(msg)
    assert back.weights.numpy().tobytes() == w.numpy().tobytes() and torch.equal(back.mask, state.mask)
    assert back.prune_step == 2 and msg["seed"] == 2**62 + 1 and msg["deadline_s"] == 12.5
    assert (msg["task_id"], msg["round_index"], msg["model_version"], msg["phase"], msg["local_steps"],
            msg["batch_size"], msg["peak_memory_bytes"], msg["update_kind"]) == (4, 1, 3, "train", 2, 8, 5000, "delta")
    dense = payloads.task_body(task, 1, ModelState(w), update_kind="delta")
    assert "mask" not in dense and "deadline_s" not in dense  # the virtual deadline never travels
    with pytest.raises(ProtocolError) as info:
        payloads.validate_task(msg, n_params=len(w) + 1)
    assert info.value.reason == "tensor_shape"


def test_lists_in_tensor_fields_are_sent_as_tensors_of_the_fields_dtype():
    body = _valid_bodies()["welcome"]
    msg = decode(encode("welcome", {**body, "dataset": {"name": "digits", "partition": [3, 1, 2]}}))
    assert _bits_equal(msg["dataset"]["partition"], np.array([3, 1, 2], "<i8"))
    with pytest.raises(ProtocolError) as info:
        encode("welcome", {**body, "dataset": {"name": "digits", "partition": [2**64]}})
    assert info.value.reason == "schema"


def test_zo_seed_uplink_replays_to_the_clients_delta_bit_for_bit():
    from algorithms.local import ClientData, ModelState, replay_seed_pairs, zo_update
    from algorithms.params import FunctionalModel

    fm = FunctionalModel("mlp_small", (1, 2, 2), 10)
    state = ModelState(fm.init_weights(1))
    g = torch.Generator().manual_seed(0)
    data = ClientData(torch.randn(8, 1, 2, 2, generator=g), torch.randint(0, 10, (8,), generator=g))
    result = zo_update(fm, state, data, 2, 4, 0.01, 3, 1e-3, None, seed=9)
    body = payloads.update_body(5, result, 0.5, 4096)
    assert "delta" not in body  # only the pairs travel
    back = payloads.result_from_update(decode(encode("update", body)), n_directions=6, update_kind="seeds")
    assert back.seeds.tobytes() == result.seeds.tobytes()
    assert back.coefficients.tobytes() == result.coefficients.tobytes()
    assert torch.equal(replay_seed_pairs(state, back.seeds, back.coefficients), result.delta)
    assert back.train_loss == result.train_loss and back.num_samples == 8


@pytest.mark.parametrize("kind", ["delta", "scores"])
def test_update_body_and_result_round_trip(kind):
    from algorithms.local import ClientResult

    values = torch.from_numpy(np.tile(TRICKY, 4))
    result = ClientResult(kind, 17, **{kind: values}, train_loss=0.75 if kind == "delta" else math.nan)
    msg = decode(encode("update", payloads.update_body(3, result, 1.0, 1)))
    back = payloads.result_from_update(msg, n_params=len(values), update_kind=kind)
    assert getattr(back, kind).numpy().tobytes() == values.numpy().tobytes()
    assert back.kind == kind and back.num_samples == 17
    assert ("train_loss" in msg.body) == (kind == "delta")  # NaN (not measured) is left out ...
    assert (back.train_loss == 0.75) if kind == "delta" else math.isnan(back.train_loss)  # ... and comes back
    with pytest.raises(ProtocolError) as info:
        payloads.result_from_update(msg, n_params=len(values) - 1)
    assert info.value.reason == "tensor_shape"
    with pytest.raises(ProtocolError) as info:
        payloads.validate_update(msg, update_kind="seeds")
    assert info.value.reason == "wrong_update_kind"


def test_importing_the_protocol_imports_neither_torch_nor_zmq_nor_simpy():
    code = ("import sys, fleet.bridge.protocol, fleet.bridge.payloads; "
            "print(sorted({'torch', 'zmq', 'simpy'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=DOC.parents[1])
    assert out.stdout.strip() == "[]"


def test_all_names_exist():
    assert all(hasattr(module, name) for module in (protocol, payloads) for name in module.__all__)


# --- every rejection reason, from hand-made frames --------------------------------------------------------
def _update(**change) -> dict:
    body = {**_valid_bodies()["update"], **change}
    return {k: v for k, v in body.items() if v is not None}


def _tensor_map(**change) -> dict:
    return {**protocol.tensor(np.ones(3, np.float32)), **change}


BAD_FRAMES = {
    "malformed": [
        b"", b"\xc1", b"\x93\x01", b"\x93\x01\xa6update", b"\x01\x02",  # reserved byte, truncated, trailing
        _frame(1, "bye", {}) + b"\x00", _frame(1, "bye"), _frame(1, "bye", {}, 4), _frame(1, 5, {}),
        _frame(1, "bye", []), _frame("1", "bye", {}), _frame(True, "bye", {}), msgpack.packb({"v": 1}),
        b"\x93\x01\xa3bye\xd4\x01\x02",  # an ext type
        b"\x93\x01\xa3bye\x81\xa6reason\xa2\xff\xfe",  # invalid UTF-8
        _frame(1, "bye", {"reason": "x" * (protocol.MAX_STR_BYTES + 1)}),
        b"\x91" * (protocol.MAX_DEPTH + 1) + b"\xc0",  # too deep
        b"\xdd\x7f\xff\xff\xff",  # an array header claiming 2^31 items
        b"\xdc\xff\xff" + b"\xc0" * 65535,  # more objects than MAX_OBJECTS
    ],
    "version": [_frame(2, "bye", {}), _frame(0, "bye", {}), _frame(2), _frame(-1, [], None)],
    "kind": [_frame(1, "goodbye", {}), _frame(1, "", {}), _frame(1, "Update", {})],
    "schema": [
        _wire("update", _update(num_samples=None)),  # missing field
        _wire("update", _update(extra=1)),  # unknown field
        _wire("update", _update(num_samples="600")),  # wrong type
        _wire("update", _update(num_samples=-1)),  # out of range
        _wire("update", _update(num_samples=True)),  # bool is not an integer
        _wire("update", _update(compute_s="1")),
        _wire("update", _update(compute_s=-1.0)),
        _wire("update", _update(kind="gradient")),
        _wire("update", _update(delta=None)),  # kind delta without its delta
        _wire("update", _update(scores=np.ones(3, np.float32))),  # a tensor its kind does not send
        _wire("update", _update(kind="seeds", delta=None, seeds=np.ones(2, np.int64))),  # no coefficients
        _wire("update", _update(delta=[1.0, 2.0])),  # not a tensor map
        _wire("update", _update(delta=_tensor_map(extra=1))),
        _wire("update", _update(delta={k: v for k, v in _tensor_map().items() if k != "shape"})),
        _wire("update", _update(delta=_tensor_map(data=list(range(12))))),
        _wire("update", _update(delta=_tensor_map(shape=3))),
        _wire("update", _update(delta=_tensor_map(dtype=1))),
        _wire("update", _update(task_id=2**63)),  # above 2^63 - 1
        _wire("refusal", {"task_id": 1, "cause": "bored", "free_memory_bytes": 0}),
        _wire("hello", {"device_class": "x", "free_memory_bytes": 1, "flops_per_s": 1.0, "agent_version": 7}),
        _wire("welcome", {**_valid_bodies()["welcome"], "heartbeat_interval_s": 0.0}),
        _wire("welcome", {**_valid_bodies()["welcome"], "algorithm": {"name": "zo", "params": {"x": b"bin"}}}),
        _wire("welcome", {**_valid_bodies()["welcome"], "dataset": {"name": "d", "partition":
                                                                    np.array([-1], np.int64)}}),
        _wire("task", {**_valid_bodies()["task"], "phase": "eval"}),
        _wire("task", {**_valid_bodies()["task"], "local_steps": 0}),
        b"\x93\x01\xa3bye\x82\xa6reason\xa1a\xa6reason\xa1b",  # a repeated key
        b"\x93\x01\xa3bye\x81\x01\xa1a",  # a non-string key
        _frame(1, "bye", {"reason": None}),
    ],
    "tensor_dtype": [
        _wire("update", _update(delta=np.ones(3, np.float64).view(np.uint8)[:12].copy())),  # uint8 delta
        _wire("update", _update(delta=_tensor_map(dtype="float64"))),
        _wire("update", _update(delta=_tensor_map(dtype="float16"))),
        _wire("update", _update(delta=np.ones(3, np.int64))),
        _wire("task", {**_valid_bodies()["task"], "mask": np.ones(30, np.uint8)}),
        _wire("task", {**_valid_bodies()["task"], "mask": {"dtype": "bool", "shape": [30],
                                                           "data": b"\x01" * 29 + b"\x02"}}),  # bool byte 2
    ],
    "tensor_shape": [
        _wire("update", _update(delta=_tensor_map(shape=[4]))),  # 12 bytes for 4 float32
        _wire("update", _update(delta=_tensor_map(data=b"\x00" * 11))),
        _wire("update", _update(delta=_tensor_map(shape=[1, 1, 1, 1, 3]))),  # rank 5
        _wire("update", _update(delta=np.ones((3, 1), np.float32))),  # a field that must be 1-D
        _wire("update", _update(delta=_tensor_map(shape=[0, 2**40, 2**40], data=b""))),  # absurd empty shape
        _wire("task", {**_valid_bodies()["task"], "mask": np.ones(29, bool)}),  # mask length != weights
        _wire("update", _update(kind="seeds", delta=None, seeds=np.ones(2, np.int64),
                                coefficients=np.ones(3, np.float32))),
    ],
    "non_finite": [
        _wire("update", _update(delta=np.array([1.0, np.nan, 2.0], np.float32))),
        _wire("update", _update(delta=np.array([np.inf], np.float32))),
        _wire("update", _update(delta=np.array([-np.inf, 0.0], np.float32))),
        _wire("update", _update(kind="scores", delta=None, scores=np.array([np.nan], np.float32))),
        _wire("update", _update(train_loss=math.nan)),
        _wire("heartbeat", {"sent_s": math.inf}),
    ],
}


@pytest.mark.parametrize("reason,index", [(r, i) for r, frames in BAD_FRAMES.items() for i in range(len(frames))])
def test_each_bad_frame_is_rejected_with_its_reason(reason, index):
    assert _reason(BAD_FRAMES[reason][index]) == reason


def test_every_reason_is_exercised():
    assert set(BAD_FRAMES) | {"oversized"} == set(protocol.REASONS)


def test_oversized_frames_are_rejected_before_unpacking():
    frame = encode("update", _valid_bodies()["update"])
    assert decode(frame, max_bytes=len(frame)).kind == "update"
    assert _reason(frame, max_bytes=len(frame) - 1) == "oversized"
    assert _reason(b"\xff" * 100, max_bytes=99) == "oversized"  # garbage, but too big is found first
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


# --- fuzzing: decode only ever raises ProtocolError, and every valid frame decodes ----------------------------
FUZZ = settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
_uints = st.integers(0, 2**63 - 1)
_finite = st.floats(allow_nan=False, allow_infinity=False)
_text = st.text(max_size=24)
_plain = st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats() | _text,
                      lambda c: st.lists(c, max_size=4) | st.dictionaries(_text, c, max_size=4), max_leaves=12)


def _vectors(dtype, size=st.integers(0, 24)):
    elements = {np.float32: st.floats(width=32, allow_nan=False, allow_infinity=False),
                np.int64: st.integers(-2**63, 2**63 - 1), np.bool_: st.booleans()}[dtype]
    return hnp.arrays(dtype, size, elements=elements)


_indices = hnp.arrays(np.int64, st.integers(0, 24), elements=st.integers(0, 2**63 - 1))


@st.composite
def valid_bodies(draw, kind=None):
    kind = kind or draw(st.sampled_from(protocol.KINDS))
    optional = lambda name, strategy: {name: draw(strategy)} if draw(st.booleans()) else {}  # noqa: E731
    if kind == "hello":
        body = {"device_class": draw(_text), "free_memory_bytes": draw(_uints),
                "flops_per_s": draw(st.floats(0.0, allow_infinity=False)), "agent_version": draw(_text),
                **optional("device_name", _text)}
    elif kind == "welcome":
        body = {"device": draw(_uints), "heartbeat_interval_s": draw(st.floats(0.0, 1e9, exclude_min=True)),
                "algorithm": {"name": draw(_text), "params": draw(st.dictionaries(_text, _plain, max_size=5))},
                "dataset": {"name": draw(_text), "partition": draw(_indices)},
                **optional("liveness", st.integers(1, 2**63 - 1))}
    elif kind == "task":
        weights = draw(_vectors(np.float32))
        body = {"task_id": draw(_uints), "round_index": draw(_uints), "model_version": draw(_uints),
                "phase": draw(st.sampled_from(protocol.PHASES)), "local_steps": draw(st.integers(1, 2**63 - 1)),
                "batch_size": draw(st.integers(1, 2**63 - 1)), "seed": draw(_uints), "weights": weights,
                **optional("mask", _vectors(np.bool_, st.just(len(weights)))), "prune_step": draw(_uints),
                **optional("deadline_s", st.floats(0.0, allow_infinity=False)),
                **optional("peak_memory_bytes", _uints),
                "update_kind": draw(st.sampled_from(protocol.UPDATE_KINDS))}
    elif kind == "update":
        update_kind = draw(st.sampled_from(protocol.UPDATE_KINDS))
        body = {"task_id": draw(_uints), "kind": update_kind, "num_samples": draw(_uints),
                "compute_s": draw(st.floats(0.0, allow_infinity=False)), "peak_memory_bytes": draw(_uints),
                **optional("train_loss", _finite)}
        if update_kind == "seeds":
            n = draw(st.integers(0, 24))
            body |= {"seeds": draw(_vectors(np.int64, st.just(n))),
                     "coefficients": draw(_vectors(np.float32, st.just(n)))}
        else:
            body[update_kind] = draw(_vectors(np.float32))
    elif kind == "refusal":
        body = {"task_id": draw(_uints), "cause": draw(st.sampled_from(protocol.CAUSES)),
                "free_memory_bytes": draw(_uints)}
    elif kind == "heartbeat":
        body = {"sent_s": draw(_finite)}
    else:
        body = optional("reason", _text)
    return kind, body


def _decodes_or_rejects(frame: bytes) -> None:
    try:
        decode(frame)
    except ProtocolError as error:
        assert error.reason in protocol.REASONS


@FUZZ
@given(valid_bodies())
def test_valid_frames_always_decode_to_what_was_sent(kind_body):
    kind, body = kind_body
    msg = decode(encode(kind, body))
    assert msg.kind == kind and _same(dict(msg.body), body)


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_are_rejected_cleanly(frame):
    _decodes_or_rejects(frame)
    _decodes_or_rejects(b"\x93\x01" + frame)  # past the envelope's first bytes


_FIELD_NAMES = sorted({name for schema in protocol._SCHEMAS.values() for name in schema}
                      | {"dtype", "shape", "data", "name", "params", "partition"})
_tensorish = st.fixed_dictionaries({"dtype": st.sampled_from([*protocol.DTYPES, "float64"]),
                                    "shape": st.lists(st.integers(0, 6), max_size=5), "data": st.binary(max_size=48)})
_objects = st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats() | _text
                        | st.binary(max_size=32),
                        lambda c: st.lists(c, max_size=4) | _tensorish | st.dictionaries(
                            st.sampled_from(_FIELD_NAMES) | _text | st.integers(-2**63, 2**64 - 1), c, max_size=4),
                        max_leaves=16)


@FUZZ
@given(_objects, st.sampled_from(protocol.KINDS),
       st.dictionaries(st.sampled_from(_FIELD_NAMES), _objects, max_size=10))
def test_random_msgpack_objects_are_rejected_cleanly(anything, kind, fields):
    _decodes_or_rejects(msgpack.packb(anything, use_bin_type=True))
    _decodes_or_rejects(_frame(1, kind, fields))


@FUZZ
@given(valid_bodies(), st.data())
def test_mutated_valid_frames_are_rejected_cleanly(kind_body, data):
    kind, body = kind_body
    frame = encode(kind, body)
    cut = data.draw(st.integers(0, len(frame) - 1))
    _decodes_or_rejects(frame[:cut])
    at = data.draw(st.integers(0, len(frame) - 1))
    flipped = bytearray(frame)
    flipped[at] ^= data.draw(st.integers(1, 255))
    _decodes_or_rejects(bytes(flipped))
    _decodes_or_rejects(frame[:at] + data.draw(st.binary(min_size=1, max_size=9)) + frame[at:])
    field = data.draw(st.sampled_from(sorted(body) or ["reason"]))
    _decodes_or_rejects(_wire(kind, {**body, field: data.draw(_objects)}))


# --- the annotated frame in docs/protocol.md ------------------------------------------------------------------
EXAMPLE = ("update", {"task_id": 7, "kind": "delta", "num_samples": 32, "compute_s": 1.5,
                      "peak_memory_bytes": 200000, "train_loss": 0.25,
                      "delta": np.array([0.5, -0.0, -2.0], np.float32)})
_INT_FORMATS = {0xCC: ("uint8", ">B"), 0xCD: ("uint16", ">H"), 0xCE: ("uint32", ">I"), 0xCF: ("uint64", ">Q"),
                0xD0: ("int8", ">b"), 0xD1: ("int16", ">h"), 0xD2: ("int32", ">i"), 0xD3: ("int64", ">q"),
                0xCA: ("float32", ">f"), 0xCB: ("float64", ">d")}
_LENGTHS = {0xD9: ("str8", 1), 0xDA: ("str16", 2), 0xDB: ("str32", 4), 0xC4: ("bin8", 1), 0xC5: ("bin16", 2),
            0xC6: ("bin32", 4), 0xDC: ("array16", 2), 0xDD: ("array32", 4), 0xDE: ("map16", 2), 0xDF: ("map32", 4)}


def annotate(frame: bytes) -> str:
    """One line per msgpack item of ``frame``: offset, bytes, msgpack format and value, meaning."""
    rows, pos, dtype = [], 0, None

    def item(meaning: str):
        nonlocal pos, dtype
        start, b = pos, frame[pos]
        pos += 1
        count, value = None, None
        if b <= 0x7F:
            what, value = f"fixint {b}", b
        elif b <= 0x8F or 0x90 <= b <= 0x9F:
            count = b & 0x0F
            what = f"{'fixmap' if b <= 0x8F else 'fixarray'}({count})"
        elif 0xA0 <= b <= 0xBF or b in _LENGTHS:
            name, width = ("fixstr", 0) if b <= 0xBF else _LENGTHS[b]
            n = b & 0x1F if b <= 0xBF else int.from_bytes(frame[pos:pos + width], "big")
            pos += width
            if name.startswith(("array", "map")):
                count, what = n, f"{name}({n})"
            else:
                payload = frame[pos:pos + n]
                pos += n
                value = payload.decode() if "str" in name else payload
                what = f'{name}({n}) "{value}"' if "str" in name else f"{name}({n})"
                if "bin" in name and dtype is not None:
                    shown = ", ".join(repr(x) for x in np.frombuffer(payload, protocol.DTYPES[dtype]).tolist())
                    meaning += f" = {shown} ({dtype}, little-endian)"
        elif b in _INT_FORMATS:
            name, fmt = _INT_FORMATS[b]
            size = struct.calcsize(fmt)
            value = struct.unpack(fmt, frame[pos:pos + size])[0]
            pos += size
            what = f"{name} {value}"
        else:
            what = {0xC0: "nil", 0xC2: "false", 0xC3: "true"}.get(b, f"negative fixint {b - 256}")
        rows.append((start, frame[start:pos], what, meaning))
        if count is not None and what.startswith(("fixmap", "map")):
            for _ in range(count):
                key = item("key")
                item(key if meaning in ("body", "") else f"{meaning}.{key}")
        elif count is not None:
            for i in range(count):
                item(("version", "kind", "body")[i] if meaning == "envelope" else f"{meaning}[{i}]")
        if meaning.endswith("dtype"):
            dtype = value
        return value

    item("envelope")
    lines = [f"frame: {len(frame)} bytes", "", f"{'offset':>6}  {'bytes':<35}  {'msgpack':<30}  meaning"]
    for start, raw, what, meaning in rows:
        for j in range(0, len(raw), 12):
            cols = (what, meaning) if j == 0 else ("", "")
            lines.append(f"{start + j:>6}  {raw[j:j + 12].hex(' '):<35}  {cols[0]:<30}  {cols[1]}".rstrip())
    lines += ["", "the same frame as one hex string:", ""]
    lines += [frame.hex()[i:i + 96] for i in range(0, 2 * len(frame), 96)]
    return "\n".join(lines)


def example_block() -> str:
    return annotate(encode(*EXAMPLE))


def test_the_annotated_frame_in_the_doc_is_what_encode_writes():
    text = DOC.read_text()
    found = re.search(r"<!-- example:begin -->\n```text\n(.*?)\n```\n<!-- example:end -->", text, re.S)
    assert found, "docs/protocol.md lost its example markers"
    assert found.group(1) == example_block(), \
        "docs/protocol.md is out of date: replace its example with `python -m tests.bridge.test_protocol`"
    frame = bytes.fromhex("".join(found.group(1).split("one hex string:")[1].split()))
    assert _same(dict(decode(frame).body), EXAMPLE[1])
    assert encode("heartbeat", {"sent_s": 12.5}).hex(" ") in text  # the ZMTP section's heartbeat


if __name__ == "__main__":
    print(example_block())


def test_a_task_must_name_its_update_kind():
    body = dict(_valid_bodies()["task"])
    del body["update_kind"]
    with pytest.raises(ProtocolError) as info:
        encode("task", body)
    assert info.value.reason == "schema" and "update_kind" in str(info.value)


@pytest.mark.parametrize("expected, reason", [
    ({"max_samples": 599}, "sample_count"), ({"max_norm": 1.0}, "update_norm"),
    ({"update_kind": "scores"}, "wrong_update_kind")])
def test_validate_update_bounds_what_an_update_may_claim(expected, reason):
    msg = decode(encode("update", _valid_bodies()["update"]))  # 600 samples, a delta of norm |w|
    payloads.validate_update(msg, max_samples=600, max_norm=float(np.linalg.norm(msg["delta"].astype(float))))
    with pytest.raises(ProtocolError) as info:
        payloads.validate_update(msg, **expected)
    assert info.value.reason == reason


def test_seed_pairs_are_held_to_the_norm_bound_by_their_coefficients():
    body = {"task_id": 1, "kind": "seeds", "num_samples": 1, "compute_s": 0.0, "peak_memory_bytes": 0,
            "seeds": np.arange(2, dtype=np.int64), "coefficients": np.array([0.5, -0.5], np.float32)}
    msg = decode(encode("update", body))
    payloads.validate_update(msg, n_params=4, max_norm=2.0)  # (0.5 + 0.5) * sqrt(4) = 2
    with pytest.raises(ProtocolError) as info:
        payloads.validate_update(msg, n_params=4, max_norm=1.99)
    assert info.value.reason == "update_norm"


def test_scores_are_held_to_max_score_norm():
    body = {"task_id": 1, "kind": "scores", "num_samples": 1, "compute_s": 0.0, "peak_memory_bytes": 0,
            "scores": np.array([3e38], np.float32)}
    with pytest.raises(ProtocolError) as info:
        payloads.validate_update(decode(encode("update", body)), max_norm=1e40)
    assert info.value.reason == "update_norm"
