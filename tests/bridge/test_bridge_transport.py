"""The bridge transport at its edges (issue 8): on a live hub, what a device may send and when (wrong or stale
updates, repeated hellos, silent sockets); on a fake hub and a fake clock, its pacing and routing."""

from __future__ import annotations

import numpy as np
import pytest

import algorithms.local  # noqa: F401  (torch, imported once here rather than inside a timed wait)
from fleet.bridge import payloads, protocol
from fleet.bridge.hub import Hub
from fleet.bridge.transport import BridgeTransport
from fleet.core.messages import Leave, Refusal, Task
from tests.bridge.live import HELLO, dealer, frames, until
from tests.helpers import make_network, make_profiles

P = 4  # parameters of the toy model


# --- the transport: what a device may send, and when ---------------------------------------------------------
class Harness:
    """A ``BridgeTransport`` (one simulated device, real ones from index 1) with a toy learning plane."""

    def __init__(self, kernel, uplink="delta", partition=10, **hub_kw) -> None:
        hub_kw.setdefault("heartbeat_interval_s", 0.1)
        hub_kw.setdefault("liveness", 50)
        self.hub = Hub("tcp://127.0.0.1:*", **hub_kw)
        self.kernel = kernel
        self.results, self.server, self.lost = {}, [], []
        self.uplink, self.partition = uplink, partition
        self.bodies = []
        self.transport = BridgeTransport(kernel, make_network(kernel, make_profiles(1)), self.hub, 1,
                                         self._task_body, self.results.__setitem__, self._expected,
                                         self._welcome)
        self.transport.attach_server(lambda msg, d: self.server.append(msg),
                                     lambda msg, device: self.lost.append(msg))
        self.slots = [1, 2]
        self.transport.admit = self._index

    def _welcome(self, device) -> dict:
        return {"device": device.index, "heartbeat_interval_s": 0.1, "liveness": 50,
                "algorithm": {"name": "fedavg", "params": {}},
                "dataset": {"name": "digits", "partition": list(range(self.partition))}}

    def _task_body(self, task, deadline_s):
        body = {"task_id": task.task_id, "round_index": task.round_index, "model_version": 0,
                "phase": task.phase, "local_steps": 1, "batch_size": 1, "seed": 7,
                "weights": np.zeros(P, np.float32), "prune_step": 0,
                "update_kind": "scores" if task.phase == "prune" else self.uplink}
        if deadline_s is not None:
            body["deadline_s"] = deadline_s
        self.bodies.append(body)
        return body

    def _expected(self, task) -> dict:
        return {"n_params": P, "update_kind": "scores" if task.phase == "prune" else self.uplink,
                "max_samples": self.partition, "max_norm": 10.0}

    def pumpuntil(self, condition, timeout_s=5.0):
        until(condition, timeout_s, step=lambda: self.transport.pump(0.02))

    def _index(self, _name):
        return self.slots.pop(0) if self.slots else None

    def attach(self, sock, name="pi"):
        sock.send(protocol.encode("hello", {**HELLO, "device_name": name}))
        self.pumpuntil(lambda: any(d.name == name and d.alive for d in self.transport.real.values()))
        return frames(sock, "welcome")

    def dispatch(self, task_id, device=1, phase="train", deadline_s=None):
        task = Task(task_id, device, 0, 0, phase, 1, 1, 100, 1000, 64, deadline_s, 64)
        self.transport.send(task)
        return task


def _update(task_id, kind="delta", num_samples=5, value=0.1):
    body = {"task_id": task_id, "kind": kind, "num_samples": num_samples, "compute_s": 0.01,
            "peak_memory_bytes": 1}
    if kind == "delta":
        body["delta"] = np.full(P, value, np.float32)
    elif kind == "scores":
        body["scores"] = np.full(P, value, np.float32)
    else:
        body["seeds"] = np.arange(2, dtype=np.int64)
        body["coefficients"] = np.full(2, value, np.float32)
    return protocol.encode("update", body)


@pytest.fixture
def harness(kernel):
    made = []

    def make(**kw):
        made.append(Harness(kernel, **kw))
        return made[-1]

    yield make
    for h in made:
        h.transport.close()


def test_an_update_of_another_kind_than_the_task_named_is_rejected_and_counted(harness, ctx):
    """Defect 20: a ``seeds`` update for a FedAvg task and a ``scores`` update for a training task never
    reach the learning plane; the task stays pending, and the right kind is then accepted."""
    h = harness()
    sock = dealer(ctx, h.hub.endpoint)
    h.attach(sock)
    h.dispatch(1)
    task = frames(sock, "task")
    assert task["update_kind"] == "delta" and "deadline_s" not in task.body
    sock.send(_update(1, "seeds"))
    sock.send(_update(1, "scores"))
    h.pumpuntil(lambda: h.transport.rejected["wrong_update_kind"] == 2)
    assert h.results == {} and 1 in h.transport.pending
    sock.send(_update(1))
    h.pumpuntil(lambda: 1 in h.results)
    assert h.results[1].kind == "delta" and 1 not in h.transport.pending
    assert sum(h.transport.rejected.values()) == 2


@pytest.mark.parametrize("num_samples, value, reason", [
    (2**63 - 1, 0.1, "sample_count"), (11, 0.1, "sample_count"), (0, 0.1, "sample_count"),
    (5, 3e38, "update_norm"), (5, 5.01, "update_norm")])  # norm of 4 x 5.01 = 10.02 > 10
def test_an_update_that_claims_too_much_is_rejected(harness, ctx, num_samples, value, reason):
    """Defect 21: at most the partition's samples (10 here), and a delta within the norm bound."""
    h = harness()
    sock = dealer(ctx, h.hub.endpoint)
    h.attach(sock)
    h.dispatch(1)
    frames(sock, "task")
    sock.send(_update(1, num_samples=num_samples, value=value))
    h.pumpuntil(lambda: h.transport.rejected[reason] == 1)
    sock.send(_update(1, num_samples=10, value=4.99))  # the most a device may claim: accepted
    h.pumpuntil(lambda: 1 in h.results)
    assert h.results[1].num_samples == 10 and sum(h.transport.rejected.values()) == 1


def test_no_single_device_can_make_the_aggregate_non_finite():
    """Defect 21: the largest delta the bound lets through, averaged with any sample shares over many
    rounds, keeps the model finite; the largest scores summed over 2^32 devices stay finite."""
    import torch

    from algorithms.aggregate import apply_delta, mean_delta
    from algorithms.local import ClientResult, ModelState
    from fleet.bridge.transport import UPDATE_NORM_RATIO

    w = ModelState(torch.full((P,), 0.25), None, 0)  # norm 0.5: the bound is 10 x max(1, 0.5) = 10
    bound = UPDATE_NORM_RATIO * 1.0
    worst = torch.full((P,), np.float32(bound / 2))  # norm exactly 10
    msg = protocol.decode(_update(1, value=float(bound / 2)))
    payloads.validate_update(msg, max_norm=bound)  # accepted
    honest = ClientResult("delta", 1, delta=torch.full((P,), 1e-3))
    for _ in range(1000):
        w = ModelState(apply_delta(w.weights, mean_delta([worst, honest.delta], [10, honest.num_samples], [1.0, 1.0])))
    assert bool(torch.isfinite(w.weights).all())
    scores = np.full(1, protocol.MAX_SCORE_NORM, np.float32)
    assert np.isfinite(scores * np.float32(2**32)).all()


def test_a_reply_to_a_task_that_is_not_pending_is_stale(harness, ctx):
    """Decision d: answered twice, or another device's task: ``stale_task``, never aggregated twice."""
    h = harness()
    a, b = dealer(ctx, h.hub.endpoint), dealer(ctx, h.hub.endpoint)
    h.attach(a, "pi-a")
    h.attach(b, "pi-b")
    h.dispatch(1, device=1)
    frames(a, "task")
    b.send(_update(1))  # not b's task
    a.send(_update(1))
    a.send(_update(1))  # a duplicate
    a.send(_update(99))  # never sent
    h.pumpuntil(lambda: h.transport.rejected["stale_task"] == 3)
    assert list(h.results) == [1] and h.transport.real_updates_accepted == 1


def test_a_repeated_hello_keeps_the_index_and_resends_the_pending_task(harness, ctx):
    """Defect 23 / decision c: a reconnect gets a welcome with ``liveness``, then the same task again
    (same task_id, the deadline budget left), and may answer it."""
    h = harness()
    old = dealer(ctx, h.hub.endpoint)
    h.attach(old)
    h.kernel.env.run(until=2.0)
    h.dispatch(5, deadline_s=32.0)
    first = frames(old, "task")
    assert first["deadline_s"] == pytest.approx(30.0, abs=0.5)
    old.close(0)
    new = dealer(ctx, h.hub.endpoint)
    new.send(protocol.encode("hello", {**HELLO, "device_name": "pi"}))
    h.pumpuntil(lambda: h.transport.real[1].rejoined == 1)
    welcome = frames(new, "welcome")
    again = frames(new, "task")
    assert welcome["device"] == 1 and welcome["liveness"] == 50
    assert again["task_id"] == 5 and 0 < again["deadline_s"] <= first["deadline_s"]
    new.send(_update(5))
    h.pumpuntil(lambda: 5 in h.results)
    assert h.lost == [] and sum(h.transport.rejected.values()) == 0


def test_a_hello_from_a_socket_that_then_falls_silent_never_confirms_the_device(harness, ctx):
    """Defect 13: a hello left queued on an abandoned socket gets an index but not trust; the device is
    confirmed by the first frame after a hello on the same connection, and the abandoned one expires."""
    h = harness(liveness=3)
    stale = dealer(ctx, h.hub.endpoint)
    stale.send(protocol.encode("hello", {**HELLO, "device_name": "pi"}))
    h.pumpuntil(lambda: 1 in h.transport.real)
    stale.close(0)  # its agent moved on (to a new socket) before the welcome came
    device = h.transport.real[1]
    assert not device.confirmed
    h.pumpuntil(lambda: not device.alive)  # silent past liveness: purged (it held nothing)
    fresh = dealer(ctx, h.hub.endpoint)
    h.attach(fresh)
    assert device.alive and not device.confirmed and device.index == 1
    fresh.send(protocol.encode("heartbeat", {"sent_s": 0.0}))
    h.pumpuntil(lambda: device.confirmed)
    assert h.lost == []


# --- the transport's pacing and routing, on a fake hub and a fake clock ------------------------------------
def _fake_bridge(kernel, first_real=1):
    """A ``BridgeTransport`` over ``tests.core.test_transport_contract.FakeHub`` (devices pi-0, pi-1, pi-2
    answer as scripted there), devices below ``first_real`` through a ``FunctionTransport``."""
    from fleet.bridge.session import wait_for_devices
    from fleet.core.transport import FunctionTransport, Reply
    from tests.core.test_transport_contract import FakeHub

    hub = FakeHub()
    inner = FunctionTransport(kernel.env, lambda task: Reply(0.5, None))
    transport = BridgeTransport(kernel, inner, hub, first_real, lambda task, deadline_s: {"task_id": task.task_id},
                                lambda task_id, result: None, lambda task: {}, lambda device: {})
    wait_for_devices(transport, 3, wait_s=1.0)
    lost, heard = [], []
    transport.attach_server(lambda msg, d: heard.append((kernel.env.now, msg)),
                            lambda msg, device: lost.append((kernel.env.now, msg.task_id, device)))
    return transport, hub, inner, heard, lost


def _task(task_id, device):
    return Task(task_id, device, 0, 0, "train", 1, 1, 100, 1000, 64, None, 64)


def test_the_horizon_is_the_earliest_stamp_a_pending_reply_can_still_get(kernel):
    transport, hub, _, heard, _ = _fake_bridge(kernel, first_real=0)
    assert transport.horizon_s() == float("inf")  # nothing pending: full speed
    kernel.env.run(until=2.0)
    hub.now_s = 128.0
    transport.send(_task(1, 1))  # virtual 2 s, wall 128 s (pi-1 refuses 0.25 s later)
    hub.now_s = 128.5
    kernel.env.run(until=2.25)
    transport.send(_task(2, 2))  # virtual 2.25 s, wall 128.5 s (pi-2 never answers)
    hub.now_s = 128.625  # task 1 may still be stamped 2.625 s, task 2 2.375 s
    assert transport.horizon_s() == 2.375
    transport.pump(0.0)  # the refusal (received at wall 128.25 s) is taken in, stamped 2.25 s
    assert transport.horizon_s() == 2.375 and list(transport.pending) == [2]
    kernel.env.run(until=2.375)
    assert heard == [(2.25, Refusal(1, 1, 0, "memory", 100, 7))]


def test_simulated_devices_go_through_the_inner_transport_and_a_purged_device_has_left(kernel):
    transport, hub, inner, heard, lost = _fake_bridge(kernel, first_real=1)
    assert sorted(transport.real) == [1, 2, 3]
    transport.send(_task(1, 0))  # simulated: the inner transport, whose device loses it after 0.5 s
    assert [t.task_id for t in inner.sent] == [1] and transport.pending == {}
    transport.purge(transport.real[2])
    transport.send(_task(2, 2))  # purged: it has left (cause offline) at once, never sent to the hub
    kernel.env.run(until=1.0)
    assert heard == [(0.0, Leave(2, 2, 0, "offline"))]
    assert lost == [(0.5, 1, 0)] and transport.pending == {}
