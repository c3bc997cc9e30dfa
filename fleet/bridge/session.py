"""Opening a bridge session: bind the hub, wait for the real devices, welcome them, profile them.

``attach`` is the whole sequence, for ``fleet.app.build``; each step is a function of its own. Errors
a scenario can cause (a bad key folder, an address in use, nobody attached in time) raise
``SessionError`` with a line that names the ``bridge`` field; the face turns it into a scenario error.

The learning plane is read through the small interface ``LearningSource`` (the bridge does not import
``fleet.learning``); the scenario's bridge section through ``BridgeSettings``.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Callable, Protocol, Sequence

import numpy as np

from algorithms.base import UpdateShape
from devices import DEVICE_CLASSES, DeviceProfile, MixEntry, sample_fleet
from fleet.bridge import payloads
from fleet.bridge.hub import Hub
from fleet.bridge.transport import UPDATE_NORM_RATIO, BridgeTransport, RealDevice
from fleet.bridge.view import real_class
from fleet.core.kernel import Kernel
from fleet.core.paced import PacedEnvironment
from fleet.core.transport import Transport

__all__ = ["BridgeSettings", "LearningSource", "SessionError", "attach", "open_hub", "real_profiles",
           "rejections_hint", "wait_for_devices", "welcome_for"]

FALLBACK_CLASS = "rpi4_4gb"  # the profile of a real device whose class the catalogue does not know


class SessionError(ValueError):
    """The bridge cannot start; the message starts with the field at fault (``bridge: ...``)."""


class BridgeSettings(Protocol):
    """The scenario's ``bridge`` section (``fleet.app.schema.BridgeConfig``)."""

    bind: str
    expect_devices: int
    wait_s: float
    keys_dir: str | None
    allow_plain: bool
    heartbeat_interval_s: float
    liveness: int


class LearningSource(Protocol):
    """What the bridge needs of the learning plane (``fleet.learning.plane.LearningPlane``)."""

    algorithm: object
    state: object
    partitions: Sequence[np.ndarray]

    def job(self, task_id: int) -> tuple: ...
    def provide(self, task_id: int, result: object) -> None: ...


def open_hub(b: BridgeSettings) -> Hub:
    """Bind the hub on ``b.bind``: CURVE with the keys in ``b.keys_dir``, or plain TCP where allowed."""
    security = None
    try:
        if b.keys_dir is not None:
            from fleet.bridge.security import ServerSecurity

            security = ServerSecurity(b.keys_dir)
        else:
            from fleet.bridge.security import check_plain_allowed

            check_plain_allowed(b.bind, b.allow_plain)
    except (ValueError, OSError) as exc:
        raise SessionError(f"bridge: {exc}") from None
    try:
        return Hub(b.bind, b.heartbeat_interval_s, b.liveness, security=security)
    except Exception as exc:  # zmq.ZMQError: address in use, bad endpoint
        raise SessionError(f"bridge.bind: cannot bind {b.bind!r} ({exc})") from None


def welcome_for(b: BridgeSettings, algorithm_name: str, algorithm_params: dict, dataset: str,
                partitions: Sequence[np.ndarray]) -> Callable[[RealDevice], dict]:
    """The ``welcome`` body for a device: its index, the liveness settings, the algorithm and its data."""
    def welcome(device: RealDevice) -> dict:
        return {"device": device.index, "heartbeat_interval_s": b.heartbeat_interval_s,
                "liveness": b.liveness, "algorithm": {"name": algorithm_name, "params": dict(algorithm_params)},
                "dataset": {"name": dataset, "partition": [int(i) for i in partitions[device.index]]}}

    return welcome


def _learning_hooks(learning: LearningSource) -> tuple[Callable, Callable]:
    """``task_body(task, deadline_s)`` and ``expected(task)`` of ``BridgeTransport`` for ``learning``."""
    algorithm = learning.algorithm
    max_norm = UPDATE_NORM_RATIO * max(1.0, float(learning.state.weights.double().norm()))

    def update_shape(task) -> UpdateShape:
        return algorithm.update_shape(task.config)

    def task_body(task, deadline_s):
        job, state = learning.job(task.task_id)
        return payloads.task_body(task, job.seed, state, update_kind=update_shape(task).kind, deadline_s=deadline_s)

    def expected(task) -> dict:
        shape = update_shape(task)
        try:  # the state the task started from: its size follows its architecture
            n_params = int(learning.job(task.task_id)[1].weights.numel())
        except KeyError:  # cancelled meanwhile: the update is late, and checked against the current model
            n_params = int(learning.state.weights.numel())
        out = {"n_params": n_params, "update_kind": shape.kind,
               "max_samples": len(learning.partitions[task.device]), "max_norm": max_norm}
        if shape.kind == "seeds":
            out["n_directions"] = shape.seed_pairs
        return out

    return task_body, expected


def wait_for_devices(transport: BridgeTransport, expect_devices: int, wait_s: float,
                     poll_s: float = 0.1) -> list[RealDevice]:
    """Admit devices into the slots ``first_real .. first_real + expect_devices - 1`` until that many are
    attached and confirmed (a frame after their hello), or ``wait_s`` wall seconds passed with at least
    one (on the hub's clock). Every device that said hello keeps its index; one not confirmed by then
    starts the run purged. Afterwards no new device may join. Returns the devices by index; raises
    ``SessionError`` when none was confirmed."""
    first = transport.first_real
    free_slots = list(range(first, first + expect_devices))
    transport.admit = lambda _name: free_slots.pop(0) if free_slots else None
    clock = transport.clock

    def confirmed() -> int:
        return sum(d.alive and d.confirmed for d in transport.real.values())

    deadline_s = clock() + wait_s
    try:
        while confirmed() < expect_devices and clock() < deadline_s:
            transport.pump(min(poll_s, max(0.0, deadline_s - clock())))
    finally:
        transport.admit = None
    if not confirmed():
        raise SessionError(f"bridge: no real device attached to {transport.endpoint} within {wait_s:g} s"
                           f"{rejections_hint(transport.rejected)}")
    attached = sorted(transport.real.values(), key=lambda d: d.index)
    for device in attached:
        if device.alive and not device.confirmed:  # a hello nobody followed up: trust it no further
            transport.purge(device)
    return attached


# Why a CURVE handshake fails (``ServerSecurity``'s causes), as a user would check it.
_HANDSHAKE_CAUSES = {
    "unknown_key": "a device's certificate is not in keys_dir/allowed",
    "bad_crypto": "an agent has another hub's server.key",
    "not_curve": "an agent runs without --keys",
    "aborted": "an agent hung up mid-handshake",
    "protocol": "a handshake broke the protocol",
    "auth_error": "the authenticator failed",
}
# Why a hello is refused (``BridgeTransport``).
_HELLO_CAUSES = {"device_class": "an agent's --profile is not a catalog class",
                 "fleet_full": "more devices than bridge.expect_devices"}


def rejections_hint(rejected: Counter) -> str:
    """What the refused handshakes and hellos in ``rejected`` (``BridgeTransport.rejected``) say about why
    no device attached, as a clause to append to an error line ("" when there were none). A handshake
    count is one per failed attempt: an agent that closes its socket on a failure (``fleet.agent``) adds
    about one per connection it tries, a plain ZeroMQ client one per libzmq reconnect (every 0.1 s)."""
    parts = []
    handshakes = {cause: rejected[f"auth_{cause}"] for cause in _HANDSHAKE_CAUSES if rejected[f"auth_{cause}"]}
    if handshakes:
        total = sum(handshakes.values())
        why = "; ".join(f"{n} {cause}: {_HANDSHAKE_CAUSES[cause]}" for cause, n in handshakes.items())
        parts.append(f"{total} CURVE handshake{'s' if total != 1 else ''} refused ({why})")
    hellos = {cause: rejected[cause] for cause in _HELLO_CAUSES if rejected[cause]}
    if hellos:
        total = sum(hellos.values())
        why = "; ".join(f"{n} {cause}: {_HELLO_CAUSES[cause]}" for cause, n in hellos.items())
        parts.append(f"{total} hello{'s' if total != 1 else ''} refused ({why})")
    return "; " + "; ".join(parts) if parts else ""


def real_profiles(attached: Sequence[RealDevice], rng: np.random.Generator) -> list[DeviceProfile]:
    """A ``DeviceProfile`` for each real device: sampled from the class it named (``FALLBACK_CLASS`` if the
    catalogue does not know it) on ethernet, its class recorded as ``real:<class>``."""
    out = []
    for device in attached:
        cls = device.device_class if device.device_class in DEVICE_CLASSES else FALLBACK_CLASS
        (p,) = sample_fleet([MixEntry(cls, "ethernet", 1.0)], 1, rng)
        out.append(dataclasses.replace(p, device_id=device.index, device_class=real_class(device.device_class)))
    return out


def attach(b: BridgeSettings, kernel: Kernel, inner: Transport, learning: LearningSource, first_real: int,
           welcome: Callable[[RealDevice], dict]) -> tuple[BridgeTransport, list[DeviceProfile]]:
    """Bind the hub, wait for the real devices and pace ``kernel.env`` (a ``PacedEnvironment``) by them.
    Returns the coordinator's transport (``inner`` for devices below ``first_real``) and the real devices'
    profiles. On failure the hub is closed."""
    if not isinstance(kernel.env, PacedEnvironment):
        raise TypeError("a run with real devices needs a PacedEnvironment as its clock")
    hub = open_hub(b)
    task_body, expected = _learning_hooks(learning)
    transport = BridgeTransport(kernel, inner, hub, first_real, task_body, learning.provide, expected, welcome)
    try:
        attached = wait_for_devices(transport, b.expect_devices, b.wait_s)
    except BaseException:
        hub.close()  # no ``bye``: the devices were never told the run started
        raise
    kernel.env.pace(transport.horizon_s, transport.pump)
    return transport, real_profiles(attached, kernel.rng.stream("fleet", first_real))
