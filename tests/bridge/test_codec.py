"""The codec (fleet/bridge/protocol.py, fleet/bridge/schema.py) and the learning plane's payloads
(fleet/bridge/payloads.py): round trips, bit for bit, and what an update may claim."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import msgpack
import numpy as np
import pytest
import torch

from fleet.bridge import payloads, protocol, schema
from fleet.bridge.protocol import ProtocolError, decode, encode
from tests.bridge.protocol_cases import TRICKY, bits_equal, example_bodies, same

ROOT = Path(__file__).resolve().parents[2]


# --- round trips ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", protocol.KINDS)
def test_every_kind_round_trips_bit_for_bit(kind):
    body = example_bodies()[kind]
    frame = encode(kind, body)
    msg = decode(frame)
    assert msg.kind == kind and msg.size_bytes == len(frame)
    want = {k: np.asarray(v) if isinstance(v, np.ndarray) else v for k, v in body.items()}
    assert same(dict(msg.body), want)
    assert encode(kind, dict(msg.body)) == frame  # decode then encode gives the same bytes


def test_optional_fields_may_be_left_out_and_bodies_are_read_only():
    assert dict(decode(encode("bye", {})).body) == {}
    msg = decode(encode("hello", {k: v for k, v in example_bodies()["hello"].items() if k != "device_name"}))
    assert "device_name" not in msg.body
    task = decode(encode("task", example_bodies()["task"]))
    with pytest.raises(TypeError):
        task.body["seed"] = 1
    with pytest.raises(ValueError):
        task["weights"][0] = 1.0


def test_int64_bool_and_uint8_tensors_and_every_rank_up_to_4():
    ints = np.array([-2**63, -1, 0, 1, 2**63 - 1], np.int64)
    assert bits_equal(schema._read_tensor("t", msgpack.unpackb(msgpack.packb(protocol.tensor(ints)))), ints)
    for array in (np.zeros((2, 3, 4, 5), np.uint8) + 7, np.array([[True, False]]), np.array(2.5, np.float32),
                  np.zeros((0, 3), np.float32), np.arange(6, dtype=">i8")):
        back = schema._read_tensor("t", msgpack.unpackb(msgpack.packb(protocol.tensor(array), use_bin_type=True)))
        assert back.shape == array.shape and np.array_equal(back, array) and back.dtype.byteorder in "<|="


def test_tensor_takes_torch_and_to_torch_gives_an_independent_writable_copy():
    t = torch.from_numpy(TRICKY.copy())
    wire = protocol.tensor(t)
    assert wire["dtype"] == "float32" and wire["shape"] == [len(TRICKY)] and wire["data"] == TRICKY.tobytes()
    back = payloads.to_torch(decode(encode("update", {**example_bodies()["update"], "delta": t}))["delta"])
    assert back.dtype == torch.float32 and back.numpy().tobytes() == TRICKY.tobytes()
    back[0] = 5.0  # writable, and a copy
    assert payloads.to_torch(np.array([True, False]).view(np.bool_)).dtype == torch.bool


def test_encode_normalises_numbers_and_writes_fields_in_schema_order():
    a = encode("heartbeat", {"sent_s": 3})  # an int in a float field is written as a float
    assert decode(a)["sent_s"] == 3.0 and type(decode(a)["sent_s"]) is float
    body = example_bodies()["refusal"]
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
    body = example_bodies()["welcome"]
    msg = decode(encode("welcome", {**body, "dataset": {"name": "digits", "partition": [3, 1, 2]}}))
    assert bits_equal(msg["dataset"]["partition"], np.array([3, 1, 2], "<i8"))
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
                         cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_all_names_exist():
    assert all(hasattr(module, name) for module in (protocol, schema, payloads) for name in module.__all__)


def test_a_task_must_name_its_update_kind():
    body = dict(example_bodies()["task"])
    del body["update_kind"]
    with pytest.raises(ProtocolError) as info:
        encode("task", body)
    assert info.value.reason == "schema" and "update_kind" in str(info.value)


@pytest.mark.parametrize("expected, reason", [
    ({"max_samples": 599}, "sample_count"), ({"max_norm": 1.0}, "update_norm"),
    ({"update_kind": "scores"}, "wrong_update_kind")])
def test_validate_update_bounds_what_an_update_may_claim(expected, reason):
    msg = decode(encode("update", example_bodies()["update"]))  # 600 samples, a delta of norm |w|
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


def test_a_task_carries_its_mode_and_architecture_and_the_agent_rebuilds_the_state():
    from algorithms.local import ModelState
    from fleet.core.messages import Task

    w = torch.from_numpy(np.tile(TRICKY, 2))
    task = Task(4, 9, 1, 3, "train", 2, 8, 5000, 10**6, 80, None, 80, mode="adjust", architecture=(12, 5))
    state = ModelState(w, None, 7, architecture=(12, 5))
    msg = decode(encode("task", payloads.task_body(task, 1, state, update_kind="delta_grad")))
    assert msg["mode"] == "adjust" and msg["architecture"] == [12, 5] and msg["update_kind"] == "delta_grad"
    back = payloads.state_from_task(msg)
    assert back.architecture == (12, 5) and back.prune_step == 7
    assert task.config.mode == "adjust" and task.config.architecture == (12, 5)


@pytest.mark.parametrize("field, value", [("mode", ""), ("mode", "Adjust"), ("mode", "a" * 17), ("mode", 3),
                                          ("architecture", []), ("architecture", [3, 0]), ("architecture", [1.5]),
                                          ("architecture", [1] * 65), ("architecture", "32")])
def test_a_bad_mode_or_architecture_is_a_schema_error(field, value):
    body = {"task_id": 1, "round_index": 0, "model_version": 0, "phase": "train", "local_steps": 1,
            "batch_size": 1, field: value, "seed": 0, "prune_step": 0, "update_kind": "delta",
            "weights": protocol.tensor(np.zeros(3, np.float32))}
    frame = msgpack.packb([protocol.VERSION, "task", body], use_bin_type=True)
    with pytest.raises(ProtocolError) as info:
        decode(frame)
    assert info.value.reason == "schema" and field in str(info.value)


def test_a_delta_grad_update_carries_both_tensors_of_one_length():
    from algorithms.local import ClientResult

    result = ClientResult("delta_grad", 5, delta=torch.ones(4), gradient=torch.arange(4.0))
    msg = decode(encode("update", payloads.update_body(1, result, 0.5, 10)))
    back = payloads.result_from_update(msg, n_params=4, update_kind="delta_grad")
    assert torch.equal(back.delta, torch.ones(4)) and torch.equal(back.gradient, torch.arange(4.0))
    with pytest.raises(ProtocolError) as info:
        payloads.result_from_update(msg, n_params=5)
    assert info.value.reason == "tensor_shape"
    body = payloads.update_body(1, result, 0.5, 10)
    body["gradient"] = protocol.tensor(np.zeros(3, np.float32))
    with pytest.raises(ProtocolError) as info:
        encode("update", body)
    assert info.value.reason == "tensor_shape"


def test_the_mode_limit_is_the_algorithms():
    import algorithms.base

    assert schema.MAX_MODE_CHARS == algorithms.base.MODE_MAX_CHARS
