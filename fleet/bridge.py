"""The ZeroMQ bridge: physical devices in a simulated fleet, behind the same ``Transport``.

``Hub`` owns one ROUTER socket. Agents (``python -m fleet.agent``) connect with a DEALER, say ``hello``
and get a ``welcome`` with their device index, the algorithm and their data partition. ``BridgeTransport``
routes every message: simulated devices through the ``SimulatedNetwork``, real ones through the hub, so
the coordinator cannot tell them apart.

Time (docs/bridge.md): a task sent to a real device at virtual time ``t0`` (wall time ``w0``) comes
back stamped ``t0 + (w1 - w0)``, the round trip measured on the wall clock (the agent's own compute time
is reported inside it). Until it arrives, that stamp can be no earlier than ``t0 + (now_wall - w0)``, so
the event loop never processes an event past the smallest such bound over the pending real tasks
(``safe_until_s``), and runs at full speed when none is pending.

Liveness (the Paranoid Pirate shape): both sides send a heartbeat every ``heartbeat_interval_s``; any
frame from a peer resets its liveness; after ``liveness`` intervals of silence the hub purges the device
and reports its pending task lost (cause ``link``). A reply for a task that is no longer pending (expired,
duplicate, unknown) is counted and discarded, never aggregated.

Bad frames never reach the coordinator: each is rejected with a reason and counted in ``rejected``.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import simpy
import zmq

from fleet import protocol
from fleet.kernel import Kernel
from fleet.messages import Message, Task, Update, Refusal
from fleet.network import Delivery, SimulatedNetwork, Transport

__all__ = ["RealDevice", "Hub", "BridgeTransport"]

_log = logging.getLogger("fleet.bridge")

PROTOCOL_CAUSES = ("memory", "deadline", "offline", "battery", "link", "failure", "flops")


@dataclass
class RealDevice:
    """A physical device attached through the hub."""

    index: int  # its device number in the fleet
    identity: bytes  # the ROUTER routing id of its current connection
    name: str
    device_class: str
    free_memory_bytes: int
    flops_per_s: float
    last_seen_wall_s: float
    alive: bool = True
    purged_wall_s: list[float] = field(default_factory=list)  # when liveness expired, each time
    rejoined: int = 0  # times it came back under its name


@dataclass
class _Pending:
    task: Task
    dispatch_s: float  # virtual
    dispatch_wall_s: float


@dataclass
class Hub:
    """The ROUTER end of the bridge. ``security`` applies CURVE (``fleet.security.ServerSecurity``) or is
    None for plain TCP (only on loopback, checked by the caller)."""

    bind: str
    heartbeat_interval_s: float = 1.0
    liveness: int = 3
    max_message_bytes: int = protocol.MAX_MESSAGE_BYTES
    security: object | None = None
    rejected: Counter = field(default_factory=Counter)
    devices: dict[bytes, RealDevice] = field(default_factory=dict)  # by routing id
    by_name: dict[str, RealDevice] = field(default_factory=dict)
    user_ids: dict[bytes, str] = field(default_factory=dict)  # routing id -> CURVE User-Id

    def __post_init__(self) -> None:
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.ROUTER_MANDATORY, 0)
        if self.security is not None:
            self.security.apply(self.context, self.socket)
        self.socket.bind(self.bind)
        self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self._last_beat_wall_s = 0.0

    # --- frames --------------------------------------------------------------------------------------
    def reject(self, reason: str, detail: str = "") -> None:
        """Count a rejected frame under ``reason`` and log why."""
        self.rejected[reason] += 1
        _log.warning("bridge: rejected a frame (%s)%s", reason, f": {detail}" if detail else "")

    def send(self, device: RealDevice, kind: str, body: dict) -> None:
        try:
            frame = protocol.encode(kind, body, self.max_message_bytes, self_check=False)
            self.socket.send_multipart([device.identity, frame], zmq.NOBLOCK)
        except zmq.ZMQError:  # peer gone or its queue full: liveness will purge it
            pass

    def receive(self, timeout_s: float) -> list[tuple[bytes, protocol.Message]]:
        """Frames that arrive within ``timeout_s`` (all that are queued), decoded; bad ones are counted
        in ``rejected`` and dropped."""
        out = []
        if not self.socket.poll(max(0, int(timeout_s * 1000))):
            return out
        while True:
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return out
            if len(frames) != 2:
                self.reject("malformed")
                continue
            identity, payload = frames[0].bytes, frames[1]
            if self.security is not None:  # CURVE: the authenticated name is the certificate's
                self.user_ids[identity] = payload.get("User-Id")
            try:
                out.append((identity, protocol.decode(payload.bytes, self.max_message_bytes)))
            except protocol.ProtocolError as error:
                self.reject(error.reason, error.detail)
                continue
            device = self.devices.get(identity)
            if device is not None:
                device.last_seen_wall_s = time.monotonic()

    def heartbeat(self) -> list[RealDevice]:
        """Send heartbeats when due; return devices whose liveness just expired (purged)."""
        now = time.monotonic()
        if now - self._last_beat_wall_s >= self.heartbeat_interval_s:
            self._last_beat_wall_s = now
            for device in self.devices.values():
                if device.alive:
                    self.send(device, "heartbeat", {"sent_s": now})
        expired = [d for d in self.devices.values()
                   if d.alive and now - d.last_seen_wall_s > self.liveness * self.heartbeat_interval_s]
        for device in expired:
            device.alive = False
            device.purged_wall_s.append(now)
        return expired

    def attach(self, identity: bytes, hello: dict, index_for: Callable[[str], int | None]) -> RealDevice | None:
        """Register a ``hello``: a known name rejoins under its old index; a new one takes the next free
        index from ``index_for`` (None: the fleet is full, the hello is refused)."""
        # With CURVE the name is the authenticated certificate's, so a device cannot claim another's slot.
        name = self.user_ids.get(identity) or hello.get("device_name") or identity.hex()
        known = self.by_name.get(name)
        if known is not None:
            self.devices.pop(known.identity, None)
            known.identity, known.alive, known.last_seen_wall_s = identity, True, time.monotonic()
            known.rejoined += 1
            known.free_memory_bytes = int(hello["free_memory_bytes"])
            self.devices[identity] = known
            return known
        index = index_for(name)
        if index is None:
            self.reject("fleet_full")
            return None
        device = RealDevice(index, identity, name, str(hello["device_class"]), int(hello["free_memory_bytes"]),
                            float(hello["flops_per_s"]), time.monotonic())
        self.devices[identity] = device
        self.by_name[name] = device
        return device

    def close(self) -> None:
        for device in self.devices.values():
            if device.alive:
                self.send(device, "bye", {"reason": "run finished"})
        self.socket.close(0)
        if self.security is not None and hasattr(self.security, "stop"):
            self.security.stop()
        self.context.term()


class BridgeTransport(Transport):
    """Simulated devices (``0 .. first_real-1``) through ``simulated``, real ones through ``hub``.

    ``task_body(task)`` gives the body of a ``task`` frame (weights, seed, ...; the learning plane knows
    them); ``on_result(task_id, result)`` hands a real device's update to the learning plane.
    """

    def __init__(self, kernel: Kernel, simulated: SimulatedNetwork, hub: Hub, first_real: int,
                 real: dict[int, RealDevice], task_body: Callable[[Task], dict],
                 on_result: Callable[[int, object], None], expected: Callable[[Task], dict]) -> None:
        super().__init__()
        self._env = kernel.env
        self._record = kernel.recorder.record
        self._sim = simulated
        self._hub = hub
        self.first_real = first_real
        self.real = real  # fleet index -> device
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
        self.pending[msg.task_id] = _Pending(msg, self._env.now, time.monotonic())
        self._hub.send(real, "task", self._task_body(msg))
        return done

    # --- the time bound -------------------------------------------------------------------------------
    def safe_until_s(self) -> float:
        """The latest virtual time the loop may reach now without overtaking a pending real reply."""
        if not self.pending:
            return float("inf")
        now = time.monotonic()
        return min(p.dispatch_s + (now - p.dispatch_wall_s) for p in self.pending.values())

    # --- incoming frames ------------------------------------------------------------------------------
    def pump(self, timeout_s: float, index_for: Callable[[str], int | None] | None = None,
             welcome: Callable[[RealDevice], dict] | None = None) -> None:
        """Receive and handle frames for up to ``timeout_s`` of wall time; run liveness."""
        for identity, msg in self._hub.receive(timeout_s):
            self._handle(identity, msg, index_for, welcome)
        for device in self._hub.heartbeat():
            self._purge(device)

    def _handle(self, identity: bytes, msg, index_for, welcome) -> None:
        hub = self._hub
        device = hub.devices.get(identity)
        if msg.kind == "hello":
            if index_for is None:
                index_for = lambda _name: None  # noqa: E731  (no new devices once the run started)
            known = hub.by_name.get(hub.user_ids.get(identity) or msg.body.get("device_name") or "")
            if welcome is None and known is None:  # the run started: no new devices
                hub.reject("fleet_full")
                return
            real = hub.attach(identity, msg.body, index_for)
            if real is None:
                return
            self.real[real.index] = real
            if known is not None:  # a restarted device rejoins: what it held is lost
                self._purge(real)
                real.alive = True
            hub.send(real, "welcome", (welcome or self.welcome)(real))
            return
        if device is None:
            hub.reject("unknown_peer")
            return
        if msg.kind in ("heartbeat", "bye"):
            if msg.kind == "bye":
                self._purge(device)
            return
        if msg.kind not in ("update", "refusal"):
            hub.reject("unexpected_kind")
            return
        task_id = int(msg.body["task_id"])
        pending = self.pending.get(task_id)
        if pending is None or pending.task.device != device.index:
            self.late_replies += 1
            hub.reject("unknown_or_expired_task")
            return
        if msg.kind == "update":
            try:
                result = protocol.result_from_update(msg, **self._expected(pending.task))
            except protocol.ProtocolError as error:
                hub.reject(error.reason, str(error))
                return
        del self.pending[task_id]
        now_wall = time.monotonic()
        arrival_s = max(self._env.now, pending.dispatch_s + (now_wall - pending.dispatch_wall_s))
        task = pending.task
        if msg.kind == "update":
            compute_s = float(msg.body["compute_s"])
            round_trip_s = now_wall - pending.dispatch_wall_s
            self._on_result(task_id, result)
            self.real_updates_accepted += 1
            self.real_flops += task.flops
            reply: Message = Update(task_id, task.device, task.round_index, task.model_version, compute_s,
                                    max(0.0, round_trip_s - compute_s) / 2, 0.0, task.bytes_up)
            delivery = Delivery(arrival_s, max(0.0, round_trip_s - compute_s) / 2, 0.0, 0)
        else:
            cause = str(msg.body["cause"])
            reply = Refusal(task_id, task.device, task.round_index, cause, task.peak_memory_bytes,
                            int(msg.body.get("free_memory_bytes", 0)))
            delivery = Delivery(arrival_s, 0.0, 0.0, 0)
            self._record(arrival_s, "refusal", task.round_index, task.device, task_id, cause,
                         demand_bytes=task.peak_memory_bytes, free_bytes=reply.free_bytes)
        self._env.timeout(arrival_s - self._env.now).callbacks.append(
            lambda _e: self._server_handler(reply, delivery))

    def _purge(self, device: RealDevice) -> None:
        device.alive = False
        for task_id, pending in list(self.pending.items()):
            if pending.task.device == device.index:
                del self.pending[task_id]
                at_s = max(self._env.now, pending.dispatch_s + (time.monotonic() - pending.dispatch_wall_s))
                self._env.timeout(at_s - self._env.now).callbacks.append(
                    lambda _e, t=pending.task: self._loss_handler(t, t.device))

    def close(self) -> None:
        self._hub.close()

    @property
    def rejected(self) -> Counter:
        """Every rejection by reason: bad frames, unknown or expired tasks, and (with CURVE) failed
        handshakes, as ``auth_<cause>``."""
        out = Counter(self._hub.rejected)
        security = self._hub.security
        if security is not None:
            for cause, count in security.rejected_by_cause.items():
                out[f"auth_{cause}"] += count
        return out

    def run_until(self, until: simpy.Event, service_every_s: float = 0.05) -> None:
        """Advance the event loop until ``until`` fires, never past ``safe_until_s``; frames are
        serviced while waiting and at least every ``service_every_s`` of wall time."""
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
