"""Fuzzing the codec (fleet/bridge/protocol.py): ``decode`` only ever raises ``ProtocolError``, and every
valid frame decodes to what was sent."""

from __future__ import annotations

import msgpack
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fleet.bridge import protocol, schema
from fleet.bridge.protocol import ProtocolError, decode, encode
from tests.bridge.protocol_cases import V93, V, hand_packed, packed, same

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
                **optional("mode", st.text("abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=16)),
                **optional("architecture", st.lists(st.integers(1, 2**63 - 1), min_size=1, max_size=64)),
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
        elif update_kind == "delta_grad":
            n = draw(st.integers(0, 24))
            body |= {"delta": draw(_vectors(np.float32, st.just(n))),
                     "gradient": draw(_vectors(np.float32, st.just(n)))}
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
    assert msg.kind == kind and same(dict(msg.body), body)


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_are_rejected_cleanly(frame):
    _decodes_or_rejects(frame)
    _decodes_or_rejects(V93 + frame)  # past the envelope's first bytes


_FIELD_NAMES = sorted({name for schema in schema._SCHEMAS.values() for name in schema}
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
    _decodes_or_rejects(packed(V, kind, fields))


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
    _decodes_or_rejects(hand_packed(kind, {**body, field: data.draw(_objects)}))

