"""The ZeroMQ bridge: physical devices in a simulated fleet, behind the same ``Transport``.

``fleet.bridge.hub.Hub`` owns the ROUTER socket (serviced by its own thread). Agents (``python -m fleet.agent``)
connect with a DEALER, say ``hello`` and get a ``welcome`` with their device index, the algorithm, their
data partition, ``heartbeat_interval_s`` and ``liveness``. ``BridgeTransport`` routes every message:
simulated devices through the ``SimulatedNetwork``, real ones through the hub, so the coordinator cannot
tell them apart.

Time (docs/bridge.md): a task sent to a real device at virtual time ``t0`` (wall time ``w0``) comes
back stamped ``t0 + (w1 - w0)``, ``w1`` being when the hub's I/O thread received the reply (the agent's
own compute time is reported inside it). Until it arrives, that stamp can be no earlier than
``t0 + (now_wall - w0)``: the smallest such bound over the pending real tasks is ``horizon_s()``, and the
run's ``fleet.core.paced.PacedEnvironment`` never processes an event past it, taking in the hub's events
with ``pump`` while it waits (``fleet.bridge.session`` wires the two). With nothing pending the horizon is
unbounded and the simulation runs at full speed.

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
  name once the run started) is ``fleet_full``; a hello whose ``device_class`` is not in the device catalog
  (``devices.DEVICE_CLASSES``) is ``device_class``, and is answered with a ``bye`` whose ``reason`` names
  the known classes (the agent prints it and exits 2).
* A task for a real device the hub counts as gone (purged: liveness expired, flooded, ``bye``) is sent to
  nobody and answered at once as the device having left: a ``dropout`` event and a ``Leave`` with cause
  ``offline``, as a simulated device that is offline when its task comes. Only a task the device held
  when it went silent is lost with cause ``link``.

Liveness: the hub's I/O thread heartbeats every ``heartbeat_interval_s``; only frames that decode count as
signs of life; after ``liveness`` silent intervals the hub purges the device and reports its pending task
lost (cause ``link``), stamped at the moment of expiry. A purged device whose connection speaks again
(it stalled rather than died) is alive again without a new hello; what it held stays lost.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol

import simpy

from devices.catalog import DEVICE_CLASSES
from fleet.bridge import payloads, protocol
from fleet.bridge.hub import Hub, Incoming
from fleet.core.kernel import Kernel
from fleet.core.messages import Leave, Message, Refusal, Task, Update
from fleet.core.transport import Delivery, Transport

__all__ = ["RealDevice", "Hub", "HubPort", "BridgeTransport", "UPDATE_NORM_RATIO"]

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


class HubPort(Protocol):
    """What ``BridgeTransport`` uses of ``fleet.bridge.hub.Hub`` (a test may pass a fake): its clock (wall
    seconds), frames out (``send``), liveness (``track``, ``forget``), events in (``poll``), the rejection
    counts, and ``close``."""

    clock: Callable[[], float]
    endpoint: str
    security: object | None

    def send(self, identity: bytes, kind: str, body: dict) -> None: ...
    def track(self, identity: bytes) -> None: ...
    def forget(self, identity: bytes) -> None: ...
    def poll(self, timeout_s: float) -> list[Incoming]: ...
    def reject(self, reason: str, detail: str = "") -> None: ...
    @property
    def rejected(self) -> Counter: ...
    def close(self, goodbye: Iterable[bytes] = ()) -> None: ...


class BridgeTransport(Transport):
    """The coordinator's ``Transport`` for a mixed fleet: devices ``0 .. first_real-1`` through ``inner``
    (the simulated network, or any ``Transport``), devices from ``first_real`` on through ``hub``.

    ``task_body(task, deadline_s)`` gives the body of a ``task`` frame (weights, seed, update kind ...; the
    learning plane knows them), ``deadline_s`` being the budget left in seconds or None;
    ``on_result(task_id, result)`` hands a real device's accepted update to the learning plane;
    ``expected(task)`` gives the keyword checks of ``payloads.validate_update`` for its answer;
    ``welcome(device)`` the body of the ``welcome`` a device gets on each hello. ``admit(name)`` gives a new
    device its fleet index (None: no slot); it is None once the run started, when no new device may join.

    Beyond ``Transport``: ``horizon_s()`` and ``pump(timeout_s)`` are the ``PacedEnvironment``'s horizon and
    poll; ``clock`` and ``endpoint`` are the hub's; ``real`` (fleet index -> ``RealDevice``),
    ``real_updates_accepted``, ``real_flops`` and ``rejected`` are the run's figures for the real devices.
    """

    def __init__(self, kernel: Kernel, inner: Transport, hub: HubPort, first_real: int,
                 task_body: Callable[[Task, float | None], dict], on_result: Callable[[int, object], None],
                 expected: Callable[[Task], dict], welcome: Callable[[RealDevice], dict]) -> None:
        self._env = kernel.env
        self._record = kernel.recorder.record
        self._inner = inner
        self._hub = hub
        self.clock = self._clock = hub.clock
        self.endpoint = hub.endpoint
        self.first_real = first_real
        self.real: dict[int, RealDevice] = {}
        self._by_identity: dict[bytes, RealDevice] = {}
        self._by_name: dict[str, RealDevice] = {}
        self._task_body = task_body
        self._on_result = on_result
        self._expected = expected
        self._welcome = welcome
        self.admit: Callable[[str], int | None] | None = None
        self.pending: dict[int, _Pending] = {}
        self.real_updates_accepted = 0
        self.real_flops = 0  # the cost model's FLOPs of the real devices' accepted updates
        self.late_replies = 0
        self._closed = False

    def attach_server(self, on_message, on_lost) -> None:
        super().attach_server(on_message, on_lost)
        self._inner.attach_server(on_message, on_lost)

    def send(self, msg: Task) -> simpy.Event:
        device = msg.device
        if device < self.first_real:
            return self._inner.send(msg)
        done = self._env.event()
        done.succeed()
        real = self.real.get(device)
        if real is None or not real.alive:  # known gone: it left, and the task goes to nobody
            self._left(msg)
            return done
        pending = self.pending[msg.task_id] = _Pending(msg, self._env.now, self._clock())
        self._send_task(real, pending)
        return done

    def unreachable(self) -> list[int]:
        """The real devices the hub counts as gone (purged and not back): the coordinator does not select them."""
        return [index for index, real in self.real.items() if not real.alive]

    def _left(self, task: Task) -> None:
        """Answer ``task``, for a device the hub counts as gone, as that device's ``Leave`` (cause
        ``offline``) now; record the dropout, as a simulated device records its own."""
        now = self._env.now
        self._record(now, "dropout", task.round_index, task.device, task.task_id, "offline")
        leave = Leave(task.device, task.task_id, task.round_index, "offline")
        delivery = Delivery(now, 0.0, 0.0, 0)
        self._env.timeout(0).callbacks.append(lambda _e: self._server_handler(leave, delivery))

    def _send_task(self, real: RealDevice, pending: _Pending) -> None:
        """Send (or re-send) ``pending``'s task with the deadline budget it has left."""
        task, budget_s = pending.task, None
        if task.deadline_s is not None:
            now_s = pending.dispatch_s + (self._clock() - pending.dispatch_wall_s)
            budget_s = max(0.0, task.deadline_s - now_s)
        self._hub.send(real.identity, "task", self._task_body(task, budget_s))

    # --- pacing -----------------------------------------------------------------------------------
    def horizon_s(self) -> float:
        """The latest virtual time the loop may reach now without overtaking a pending real reply: the
        smallest ``dispatch_s + (now_wall - dispatch_wall_s)`` over the pending real tasks, inf if none."""
        if not self.pending:
            return float("inf")
        now = self._clock()
        return min(p.dispatch_s + (now - p.dispatch_wall_s) for p in self.pending.values())

    def pump(self, timeout_s: float) -> None:
        """Handle the hub's events (frames, expiries, flood bans), waiting up to ``timeout_s`` of wall
        time for the first. Replies are scheduled at their stamped virtual time, never before now."""
        for event in self._hub.poll(timeout_s):
            device = self._by_identity.get(event.identity)
            if event.event == "frame":
                self._handle(event, device)
            elif device is not None and device.alive:  # expired, or flooded: the connection is gone
                self.purge(device, event.received_s)

    def _handle(self, event: Incoming, device: RealDevice | None) -> None:
        msg, hub = event.message, self._hub
        if msg.kind == "hello":
            self._hello(event)
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
            delivery = Delivery(arrival_s - link_s, link_s, 0.0, msg.size_bytes)
        else:
            cause = str(msg.body["cause"])
            reply = Refusal(task_id, task.device, task.round_index, cause, task.peak_memory_bytes,
                            int(msg.body.get("free_memory_bytes", 0)))
            delivery = Delivery(arrival_s, 0.0, 0.0, msg.size_bytes)
            self._record(arrival_s, "refusal", task.round_index, task.device, task_id, cause,
                         demand_bytes=task.peak_memory_bytes, free_bytes=reply.free_bytes)
        self._env.timeout(arrival_s - self._env.now).callbacks.append(
            lambda _e: self._server_handler(reply, delivery))

    def _hello(self, event: Incoming) -> None:
        """Attach (or re-attach) the sender of a ``hello``; see the module docstring."""
        hub, identity, hello = self._hub, event.identity, event.message.body
        # With CURVE the name is the authenticated certificate's, so a device cannot claim another's slot.
        name = event.user_id or hello.get("device_name") or identity.hex()
        device_class = str(hello["device_class"])
        if device_class not in DEVICE_CLASSES:
            hub.reject("device_class", f"{name} says it is a {device_class!r}")
            hub.send(identity, "bye", {"reason": f"unknown device class {device_class!r} (known: "
                                                 f"{', '.join(DEVICE_CLASSES)})"})
            return
        device = self._by_name.get(name)
        if device is None:
            index = None if self.admit is None else self.admit(name)
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
        hub.send(identity, "welcome", self._welcome(device))
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
        """Say ``bye`` to the devices still alive and close the hub (once)."""
        if not self._closed:
            self._closed = True
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
