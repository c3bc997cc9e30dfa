"""The ZeroMQ bridge: physical devices in a simulated fleet, behind the same ``Transport``.

``fleet.bridge.hub.Hub`` owns the ROUTER socket (serviced by its own thread). Agents (``python -m fleet.agent``)
connect with a DEALER, say ``hello`` and get a ``welcome`` with their device index, the algorithm, their
data partition, ``heartbeat_interval_s`` and ``liveness``. ``BridgeTransport`` routes every message:
simulated devices through the ``SimulatedNetwork``, real ones through the hub, so the coordinator cannot
tell them apart.

Time (docs/bridge.md): a task sent to a real device at virtual time ``t0`` (wall time ``w0``) comes
back stamped ``t0 + (w1 - w0)``, ``w1`` being when the hub's I/O thread received the reply (the agent's
own compute time is reported inside it). Until it arrives, that stamp can be no earlier than
``t0 + (now_wall - w0)``, so the event loop never processes an event past the smallest such bound over
the pending real tasks (``safe_until_s``), and runs at full speed when none is pending.

The rules at the edge (issue 8), each counted in ``rejected`` under its reason:

* Attaching. A ``hello`` gives the device its index (a known name keeps its old one) and a ``welcome``,
  but the device counts as attached (``RealDevice.confirmed``) only after a further frame on the same
  connection, its first heartbeat: a hello left queued on a socket its agent has already abandoned is
  answered, never trusted, and liveness drops it ``liveness`` intervals later.
* A repeated ``hello`` (a reconnect) keeps the index *and* the pending task: the hub answers ``welcome``
  and re-sends the task (same ``task_id``, ``deadline_s`` the budget left).
* Every ``task`` names its ``update_kind`` and, when the coordinator set a deadline, ``deadline_s``.
* An update must be the kind its task named (else ``wrong_update_kind``), claim between 1 sample and the
  size of the partition the device was given (``sample_count``), and stay within the norm bound
  (``update_norm``, see ``UPDATE_NORM_RATIO``); any other protocol fault has the protocol's reason. A
  rejected update never reaches the learning plane, and its task stays pending (the device may still
  answer it, or the deadline or liveness ends it).
* A reply for a task that is not pending for that device (already answered, dropped at its deadline,
  purged with its device, or another device's) is ``stale_task``: counted, never aggregated.
* A frame from a peer that never said hello is ``unknown_peer``; a hello when no slot is left (or a new
  name once the run started) is ``fleet_full``.

Liveness: the hub's I/O thread heartbeats every ``heartbeat_interval_s``; only frames that decode count as
signs of life; after ``liveness`` silent intervals the hub purges the device and reports its pending task
lost (cause ``link``), stamped at the moment of expiry. A purged device whose connection speaks again
(it stalled rather than died) is alive again without a new hello; what it held stays lost.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import simpy

from fleet.bridge import payloads, protocol
from fleet.bridge.hub import Hub, Incoming
from fleet.core.kernel import Kernel
from fleet.core.messages import Message, Task, Update, Refusal
from fleet.core.transport import Delivery, Transport

__all__ = ["RealDevice", "Hub", "BridgeTransport", "UPDATE_NORM_RATIO"]

PROTOCOL_CAUSES = ("memory", "deadline", "offline", "battery", "link", "failure", "flops")

# The largest L2 norm of a real device's delta, in units of max(1, the initial global model's norm). The
# largest honest delta we measured is 0.9 of it (fedavg, mlp_small, lr 0.5, 5 local epochs; 0.02 at the
# defaults), so honest updates pass with a margin of 10; and since each aggregation adds at most one such
# norm (sample shares sum to at most 1), after R aggregations the global model's norm is at most
# (1 + 10 R) times the initial one: finite, whatever any device sends.
UPDATE_NORM_RATIO = 10.0


@dataclass
class RealDevice:
    """A physical device attached through the hub."""

    index: int  # its device number in the fleet
    identity: bytes  # the ROUTER routing id of its current connection
    name: str
    device_class: str
    free_memory_bytes: int
    flops_per_s: float
    alive: bool = True
    confirmed: bool = False  # a frame after its hello arrived on this connection
    purged_wall_s: list[float] = field(default_factory=list)  # hub clock when it was purged, each time
    rejoined: int = 0  # times it came back under its name on a new connection


@dataclass
class _Pending:
    task: Task
    dispatch_s: float  # virtual
    dispatch_wall_s: float  # hub clock


class BridgeTransport(Transport):
    """Simulated devices (``0 .. first_real-1``) through ``simulated``, real ones through ``hub``.

    ``task_body(task, deadline_s)`` gives the body of a ``task`` frame (weights, seed, update kind ...; the
    learning plane knows them), ``deadline_s`` being the budget left in seconds or None;
    ``expected(task)`` the keyword checks of ``payloads.validate_update`` for its answer;
    ``on_result(task_id, result)`` hands a real device's accepted update to the learning plane.
    """

    def __init__(self, kernel: Kernel, simulated: Transport, hub: Hub, first_real: int,
                 real: dict[int, RealDevice], task_body: Callable[[Task, float | None], dict],
                 on_result: Callable[[int, object], None], expected: Callable[[Task], dict]) -> None:
        super().__init__()
        self._env = kernel.env
        self._record = kernel.recorder.record
        self._sim = simulated
        self._hub = hub
        self._clock = hub.clock
        self.first_real = first_real
        self.real = real  # fleet index -> device
        self._by_identity: dict[bytes, RealDevice] = {d.identity: d for d in real.values()}
        self._by_name: dict[str, RealDevice] = {d.name: d for d in real.values()}
        self._task_body = task_body
        self._on_result = on_result
        self._expected = expected
        self.pending: dict[int, _Pending] = {}
        self.welcome: Callable[[RealDevice], dict] | None = None  # the welcome of a rejoining device
        self.real_updates_accepted = 0
        self.real_flops = 0  # the cost model's FLOPs of the real devices' accepted updates
        self.late_replies = 0

    def attach_server(self, handler, on_lost) -> None:
        super().attach_server(handler, on_lost)
        self._sim.attach_server(handler, on_lost)

    def attach_devices(self, handler) -> None:
        super().attach_devices(handler)
        self._sim.attach_devices(handler)

    def send(self, msg: Message, device: int, to_server: bool) -> simpy.Event:
        if device < self.first_real:
            return self._sim.send(msg, device, to_server)
        done = self._env.event()
        done.succeed()
        real = self.real.get(device)
        if not isinstance(msg, Task) or real is None or not real.alive:
            if isinstance(msg, Task):  # a purged device: the task is lost at once
                self._env.timeout(0).callbacks.append(lambda _e: self._loss_handler(msg, device))
            return done
        pending = self.pending[msg.task_id] = _Pending(msg, self._env.now, self._clock())
        self._send_task(real, pending)
        return done

    def _send_task(self, real: RealDevice, pending: _Pending) -> None:
        """Send (or re-send) ``pending``'s task with the deadline budget it has left."""
        task, budget_s = pending.task, None
        if task.deadline_s is not None:
            now_s = pending.dispatch_s + (self._clock() - pending.dispatch_wall_s)
            budget_s = max(0.0, task.deadline_s - now_s)
        self._hub.send(real.identity, "task", self._task_body(task, budget_s))

    # --- the time bound -------------------------------------------------------------------------------
    def safe_until_s(self) -> float:
        """The latest virtual time the loop may reach now without overtaking a pending real reply."""
        if not self.pending:
            return float("inf")
        now = self._clock()
        return min(p.dispatch_s + (now - p.dispatch_wall_s) for p in self.pending.values())

    # --- incoming events ------------------------------------------------------------------------------
    def pump(self, timeout_s: float, index_for: Callable[[str], int | None] | None = None,
             welcome: Callable[[RealDevice], dict] | None = None) -> None:
        """Handle the hub's events (frames, expiries, flood bans), waiting up to ``timeout_s`` of wall
        time for the first. ``index_for`` and ``welcome`` are given while devices may still join."""
        for event in self._hub.poll(timeout_s):
            device = self._by_identity.get(event.identity)
            if event.event == "frame":
                self._handle(event, device, index_for, welcome)
            elif device is not None and device.alive:  # expired, or flooded: the connection is gone
                self.purge(device, event.received_s)

    def _handle(self, event: Incoming, device: RealDevice | None, index_for, welcome) -> None:
        msg, hub = event.message, self._hub
        if msg.kind == "hello":
            self._hello(event, welcome, index_for)
            return
        if device is None:
            hub.reject("unknown_peer")
            return
        device.confirmed = True  # a frame after its hello, on the same connection
        if not device.alive and msg.kind != "bye" and self._by_identity.get(event.identity) is device:
            device.alive = True  # purged while it stalled, alive again on its connection: what it held
            self._hub.track(event.identity)  # stays lost, and it may take new tasks
        if msg.kind in ("heartbeat", "bye"):
            if msg.kind == "bye":
                self.purge(device, event.received_s)
            return
        if msg.kind not in ("update", "refusal"):
            hub.reject("unexpected_kind")
            return
        task_id = int(msg.body["task_id"])
        pending = self.pending.get(task_id)
        if pending is None or pending.task.device != device.index:
            self.late_replies += 1
            hub.reject("stale_task", f"task {task_id} is not pending for device {device.index}")
            return
        task = pending.task
        if msg.kind == "update":
            try:
                result = payloads.result_from_update(msg, **self._expected(task))
            except protocol.ProtocolError as error:  # the task stays pending
                hub.reject(error.reason, str(error))
                return
        del self.pending[task_id]
        round_trip_s = event.received_s - pending.dispatch_wall_s
        arrival_s = max(self._env.now, pending.dispatch_s + round_trip_s)
        if msg.kind == "update":
            compute_s = float(msg.body["compute_s"])
            self._on_result(task_id, result)
            self.real_updates_accepted += 1
            self.real_flops += task.flops
            link_s = max(0.0, round_trip_s - compute_s) / 2
            reply: Message = Update(task_id, task.device, task.round_index, task.model_version, compute_s,
                                    link_s, 0.0, task.bytes_up)
            delivery = Delivery(arrival_s, link_s, 0.0, 0)
        else:
            cause = str(msg.body["cause"])
            reply = Refusal(task_id, task.device, task.round_index, cause, task.peak_memory_bytes,
                            int(msg.body.get("free_memory_bytes", 0)))
            delivery = Delivery(arrival_s, 0.0, 0.0, 0)
            self._record(arrival_s, "refusal", task.round_index, task.device, task_id, cause,
                         demand_bytes=task.peak_memory_bytes, free_bytes=reply.free_bytes)
        self._env.timeout(arrival_s - self._env.now).callbacks.append(
            lambda _e: self._server_handler(reply, delivery))

    def _hello(self, event: Incoming, welcome, index_for) -> None:
        """Attach (or re-attach) the sender of a ``hello``; see the module docstring."""
        hub, identity, hello = self._hub, event.identity, event.message.body
        # With CURVE the name is the authenticated certificate's, so a device cannot claim another's slot.
        name = event.user_id or hello.get("device_name") or identity.hex()
        device = self._by_name.get(name)
        if device is None:
            index = None if welcome is None or index_for is None else index_for(name)
            if index is None:  # no slot left, or the run started: no new devices
                hub.reject("fleet_full")
                return
            device = RealDevice(index, identity, name, str(hello["device_class"]),
                                int(hello["free_memory_bytes"]), float(hello["flops_per_s"]))
            self._by_name[name] = device
            self.real[index] = device
        elif device.identity != identity:  # a reconnect: the new connection replaces the old one
            self._by_identity.pop(device.identity, None)
            hub.forget(device.identity)
            device.identity = identity
            device.rejoined += 1
            device.free_memory_bytes = int(hello["free_memory_bytes"])
        device.alive, device.confirmed = True, False
        self._by_identity[identity] = device
        hub.track(identity)
        hub.send(identity, "welcome", (welcome or self.welcome)(device))
        for pending in list(self.pending.values()):  # what it was working on is still its task
            if pending.task.device == device.index:
                self._send_task(device, pending)

    def purge(self, device: RealDevice, at_wall_s: float | None = None) -> None:
        """The device is gone (liveness expired, flooded, ``bye``, or never confirmed): its pending tasks
        are lost (cause ``link``), stamped at ``at_wall_s`` (hub clock; default now) by the time rule."""
        at_wall_s = self._clock() if at_wall_s is None else at_wall_s
        device.alive = False
        device.purged_wall_s.append(at_wall_s)
        self._hub.forget(device.identity)
        for task_id, pending in list(self.pending.items()):
            if pending.task.device == device.index:
                del self.pending[task_id]
                at_s = max(self._env.now, pending.dispatch_s + (at_wall_s - pending.dispatch_wall_s))
                self._env.timeout(at_s - self._env.now).callbacks.append(
                    lambda _e, t=pending.task: self._loss_handler(t, t.device))

    def close(self) -> None:
        self._hub.close(goodbye=[d.identity for d in self.real.values() if d.alive])

    @property
    def rejected(self) -> Counter:
        """Every rejection by reason: bad frames, wrong or stale updates, and (with CURVE) failed
        handshakes, as ``auth_<cause>``."""
        out = self._hub.rejected
        security = self._hub.security
        if security is not None:
            for cause, count in security.rejected_by_cause.items():
                out[f"auth_{cause}"] += count
        return out

    def run_until(self, until: simpy.Event, service_every_s: float = 0.05) -> None:
        """Advance the event loop until ``until`` fires, never past ``safe_until_s``; the hub's events are
        handled while waiting and at least every ``service_every_s`` of wall time (the socket itself is
        serviced by the hub's thread all along)."""
        env = self._env
        last_service = time.monotonic()
        while not until.triggered:
            next_s = env.peek()
            bound = self.safe_until_s()
            if next_s == float("inf") and not self.pending:
                return  # nothing scheduled and nothing to wait for: the run cannot go on
            if next_s <= bound and next_s != float("inf"):
                env.step()
                if time.monotonic() - last_service >= service_every_s:
                    self.pump(0.0)
                    last_service = time.monotonic()
                continue
            wait = service_every_s if next_s == float("inf") else min(service_every_s, next_s - bound)
            self.pump(max(0.0, wait))
            last_service = time.monotonic()
