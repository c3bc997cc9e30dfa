"""The ``Transport`` contract (``fleet.core.transport``), held by every implementation: the simulated
network, ``FunctionTransport``, and the bridge (a fake hub on a fake wall clock, paced by a
``PacedEnvironment``).

One scripted fleet for all three: device 0 answers its task with an ``Update``, device 1 refuses it,
device 2's task is lost (a lossy link; for the bridge, the hub's liveness expiring). The tasks go out at
virtual time 1 s."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import simpy

from fleet.bridge import protocol
from fleet.bridge.hub import Incoming
from fleet.bridge.session import wait_for_devices
from fleet.bridge.transport import BridgeTransport
from fleet.core.kernel import Kernel
from fleet.core.messages import Refusal, Task, Update
from fleet.core.paced import PacedEnvironment
from fleet.core.transport import Delivery, FunctionTransport, Reply, Transport
from tests.helpers import make_network, make_profiles

SENT_AT_S = 1.0
COMPUTE_S = 0.5
P = 4  # parameters of the bridge's toy model


def _task(device: int) -> Task:
    return Task(10 + device, device, 0, 0, "train", 1, 1, 100, 1000, 64, None, 64)


def _update(task: Task) -> Update:
    return Update(task.task_id, task.device, 0, 0, COMPUTE_S, 0.0, 0.0, task.bytes_up)


def _refusal(task: Task) -> Refusal:
    return Refusal(task.task_id, task.device, 0, "memory", task.peak_memory_bytes, 7)


# --- the three implementations, each with the scripted fleet behind it ------------------------------------
def _simulated(kernel: Kernel) -> Transport:
    profiles = make_profiles(3, latency_s=0.01, loss_prob=0.0)
    profiles[2] = dataclasses.replace(profiles[2], loss_prob=0.999)
    net = make_network(kernel, profiles, max_attempts=1)
    env = kernel.env

    def device(task, _delivery):
        yield env.timeout(COMPUTE_S)
        yield from net.upload(_update(task) if task.device == 0 else _refusal(task))

    net.attach_devices(device)
    return net


def _function(kernel: Kernel) -> Transport:
    def handler(task: Task) -> Reply:
        return [Reply(COMPUTE_S, _update(task), 0.125), Reply(0.25, _refusal(task)), Reply(2.0, None)][task.device]

    return FunctionTransport(kernel.env, handler)


class FakeHub:
    """``HubPort`` on a fake wall clock: three devices say hello and beat once; a task frame is answered
    by an update (``pi-0``), a refusal (``pi-1``), or by the hub's liveness expiring (``pi-2``). ``poll``
    lets its timeout pass on the clock and returns what came due."""

    endpoint, security = "fake://hub", None

    def __init__(self) -> None:
        self.now_s = 100.0
        self.due: list[tuple[float, Incoming]] = []
        self.closed = 0
        for i in range(3):
            name = f"pi-{i}"
            hello = {"device_class": "rpi4_4gb", "free_memory_bytes": 2**30, "flops_per_s": 1e9,
                     "agent_version": "1", "device_name": name}
            self._arrive(0.0, name.encode(), "hello", hello)
            self._arrive(0.0, name.encode(), "heartbeat", {"sent_s": 0.0})

    def clock(self) -> float:
        return self.now_s

    def _arrive(self, after_s: float, identity: bytes, kind: str, body: dict | None) -> None:
        at_s = self.now_s + after_s
        if body is None:
            self.due.append((at_s, Incoming("expired", identity, None, at_s)))
        else:
            msg = protocol.decode(protocol.encode(kind, body))
            self.due.append((at_s, Incoming("frame", identity, msg, at_s)))

    def send(self, identity: bytes, kind: str, body: dict) -> None:
        if kind != "task":
            return
        task_id, device = body["task_id"], int(identity.decode()[-1])
        if device == 0:
            update = {"task_id": task_id, "kind": "delta", "num_samples": 5, "compute_s": COMPUTE_S,
                      "peak_memory_bytes": 1, "delta": np.full(P, 0.1, np.float32)}
            self._arrive(COMPUTE_S, identity, "update", update)
        elif device == 1:
            self._arrive(0.25, identity, "refusal", {"task_id": task_id, "cause": "memory",
                                                     "free_memory_bytes": 7})
        else:
            self._arrive(2.0, identity, "expired", None)

    def track(self, identity: bytes) -> None:
        pass

    def forget(self, identity: bytes) -> None:
        pass

    def poll(self, timeout_s: float) -> list[Incoming]:
        self.now_s += timeout_s
        out = [event for at_s, event in self.due if at_s <= self.now_s]
        self.due = [(at_s, event) for at_s, event in self.due if at_s > self.now_s]
        return out

    def reject(self, reason: str, detail: str = "") -> None:
        raise AssertionError(f"the scripted fleet sent a frame the bridge rejected: {reason} {detail}")

    @property
    def rejected(self):
        from collections import Counter

        return Counter()

    def close(self, goodbye=()) -> None:
        self.closed += 1


def _bridge(kernel: Kernel) -> Transport:
    hub = FakeHub()
    welcome = {"heartbeat_interval_s": 1.0, "liveness": 3}
    expected = {"n_params": P, "update_kind": "delta", "max_samples": 10, "max_norm": 10.0}
    inner = FunctionTransport(kernel.env, lambda task: None)  # no simulated devices: first_real is 0
    transport = BridgeTransport(kernel, inner, hub, 0, lambda task, deadline_s: {"task_id": task.task_id},
                                lambda task_id, result: None, lambda task: expected,
                                lambda device: {"device": device.index, **welcome})
    assert [d.name for d in wait_for_devices(transport, 3, wait_s=1.0)] == ["pi-0", "pi-1", "pi-2"]
    kernel.env.pace(transport.horizon_s, transport.pump)
    return transport


IMPLEMENTATIONS = {"simulated": _simulated, "function": _function, "bridge": _bridge}


def _run(name: str, many: bool = False) -> tuple[Kernel, Transport, dict]:
    """(kernel, transport, what the server heard) after the three tasks were sent at 1 s (one ``send`` each,
    or one ``send_many``) and the run ended."""
    kernel = Kernel(seed=2, env=PacedEnvironment(clock=lambda: 0.0) if name == "bridge" else None)
    transport = IMPLEMENTATIONS[name](kernel)
    env, heard = kernel.env, {"message": [], "lost": [], "sends": []}
    transport.attach_server(lambda msg, delivery: heard["message"].append((env.now, msg, delivery)),
                            lambda msg, device: heard["lost"].append((env.now, msg, device)))

    def server():
        yield env.timeout(SENT_AT_S)
        if many:
            transport.send_many([_task(device) for device in range(3)])
        else:
            heard["sends"] = [transport.send(_task(device)) for device in range(3)]

    env.process(server())
    env.run(until=100.0)
    return kernel, transport, heard


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def rig(request):
    kernel, transport, heard = _run(request.param)
    yield kernel, transport, heard
    transport.close()


@pytest.mark.parametrize("name", sorted(IMPLEMENTATIONS))
def test_send_many_is_a_send_of_each_task_in_order(name):
    runs = [_run(name, many) for many in (False, True)]
    for _, transport, _ in runs:
        transport.close()
    (_, _, one_by_one), (_, _, at_once) = runs
    assert at_once["message"] == one_by_one["message"] and at_once["lost"] == one_by_one["lost"]
    assert len(one_by_one["message"]) == 2


def test_send_returns_an_event_that_has_fired_by_the_end(rig):
    _, _, heard = rig
    assert len(heard["sends"]) == 3
    assert all(isinstance(done, simpy.Event) and done.processed for done in heard["sends"])


def test_each_task_gets_one_answer_through_the_right_handler(rig):
    _, _, heard = rig
    replies = sorted(((type(msg).__name__, msg.task_id, msg.device) for _, msg, _ in heard["message"]))
    assert replies == [("Refusal", 11, 1), ("Update", 10, 0)]
    ((_, lost, device),) = heard["lost"]
    assert lost == _task(2) and device == 2


def test_answers_arrive_inside_the_loop_after_the_send(rig):
    kernel, _, heard = rig
    for now_s, msg, delivery in heard["message"]:
        assert isinstance(delivery, Delivery)
        assert SENT_AT_S < now_s <= kernel.env.now
        assert SENT_AT_S <= delivery.sent_s <= now_s and 0.0 <= delivery.link_s <= now_s - delivery.sent_s
    (update_at_s, _, _), = [m for m in heard["message"] if isinstance(m[1], Update)]
    assert update_at_s >= SENT_AT_S + COMPUTE_S
    (lost_at_s, _, _), = heard["lost"]
    assert SENT_AT_S <= lost_at_s <= kernel.env.now


def test_close_can_be_called_twice(rig):
    _, transport, _ = rig
    transport.close()
    transport.close()
