"""The simulated network: both ports of ``fleet.core.transport`` for simulated devices, the server's
``Transport`` and the devices' ``DeviceLink``.

The simulated path of a message between a device and the server:

1. The access hop, over the device's own link (its sampled rate, latency, loss and LoRa-style
   framing and duty cycle). The gateway's medium is shared: a transmission first waits, FIFO, for
   one of the gateway's ``channels``, then holds it for its airtime (``queue_s`` is the wait).
2. Losses: each attempt is lost with the link's ``loss_prob``; the number of attempts is drawn at
   once (geometric), retries wait ``retry_backoff_s`` each, and a message still lost after
   ``max_attempts`` is reported to the coordinator as a ``link`` loss.
3. Duty-cycle silences between frames, the access latency and the backhaul hop (latency plus
   serialization at the backhaul rate; backhauls are assumed provisioned, so they do not queue).

An update's upload can be cut on the device's side: when it gets the channel, ``SimulatedDevices.
upload_stop`` says whether the device goes offline or its battery runs flat before the airtime ends;
then the channel is held only until that instant and the update is lost (``upload_cut``). The
energy of the transmitted bytes is charged when the airtime ends (``upload_aired``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import simpy

from devices import DeviceProfile, framed_transfer_time_scalar_s
from fleet.core.kernel import Kernel
from fleet.core.messages import Leave, Message, Task, Update
from fleet.core.transport import Delivery, DeviceLink, Transport
from fleet.core.wire import encoded_size_bytes
from fleet.sim.chain import Medium, TaskRun, start
from fleet.sim.topology import GatewaySpec, Topology

if TYPE_CHECKING:
    from fleet.sim.devices import SimulatedDevices


class Route:
    """What a device's every transfer reads: its profile, its gateway's medium (None: unshared) and backhaul
    (latency s, rate bit/s), and, for a link that sends one frame at full duty (``plain``), its constants
    read out of the profile once (``loss_log``: log of the loss probability, None for a lossless link)."""

    __slots__ = ("profile", "medium", "backhaul_latency_s", "backhaul_bit_per_s", "plain", "overhead_bytes",
                 "up_bit_per_s", "down_bit_per_s", "latency_s", "access_s", "loss_log")

    def __init__(self, profile: DeviceProfile, medium: Medium | None, backhaul: tuple[float, float]) -> None:
        self.profile, self.medium = profile, medium
        self.backhaul_latency_s, self.backhaul_bit_per_s = backhaul
        self.plain = profile.max_frame_payload_bytes is None and profile.duty_cycle == 1.0
        self.overhead_bytes = profile.frame_overhead_bytes
        self.up_bit_per_s, self.down_bit_per_s = profile.up_bit_per_s, profile.down_bit_per_s
        self.latency_s = profile.latency_s
        self.access_s = self.latency_s + self.backhaul_latency_s  # the fixed part of a one-attempt hop
        self.loss_log = math.log(profile.loss_prob) if profile.loss_prob > 0.0 else None


class SimulatedNetwork(Transport, DeviceLink):
    """The simulated network: routes on ``topology`` with per-device links from ``profiles``.

    ``bytes_sent[to_server]`` counts the bytes put on links in each direction, retransmissions
    included. With ``SimulatedDevices`` attached (``attach_simulated``), a task runs as a
    ``fleet.sim.chain.TaskRun``; with any other device handler, or with ``chains=False``, as one SimPy
    process (``_carry``), the reference the chain is held equal to."""

    def __init__(
        self,
        kernel: Kernel,
        profiles: Sequence[DeviceProfile],
        topology: Topology,
        gateway_specs: dict[str, GatewaySpec],
        max_attempts: int = 4,
        retry_backoff_s: float = 1.0,
        chains: bool = True,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"network.max_attempts must be >= 1, got {max_attempts}")
        self._kernel = kernel
        self._env = kernel.env
        self._profiles = profiles
        self._gateway_of = topology.gateway_of
        self._max_attempts = max_attempts
        self._retry_backoff_s = retry_backoff_s
        self._loss_draws = kernel.rng.device_draws("link", "uniform", len(profiles))
        self._medium: dict[int, Medium | None] = {}
        self.bytes_sent = {True: 0, False: 0}
        self._backhaul: dict[int, tuple[float, float]] = {}
        self._chains = chains
        self._simulated: SimulatedDevices | None = None
        self._uploads: SimulatedDevices | None = None  # asked about every update's upload (process or chain)
        self._fuses = getattr(self._env, "fuses", False)  # may a TaskRun's stage run at once (``TaskRun._then``)?
        self._routes: dict[int, Route] = {}  # by device, made at its first message (``route``)
        self._starts = None  # the tasks sent at this instant, started as one step (``fleet.sim.chain.start``)
        for gw, kind in topology.gateway_kind.items():
            spec = gateway_specs[kind]
            self._medium[gw] = Medium(self._env, spec.channels) if spec.channels is not None else None
            self._backhaul[gw] = (spec.backhaul_latency_s, spec.backhaul_bit_per_s)

    @property
    def gateway_count(self) -> int:
        return len(self._medium)

    def attach_simulated(self, devices: SimulatedDevices) -> None:
        """Carry every task to ``devices`` as a ``TaskRun`` (unless built with ``chains=False``); ask
        ``devices`` about every update's upload (``upload_stop``, ``upload_aired``, ``upload_cut``)."""
        self._uploads = devices
        if self._chains:
            self._simulated = devices

    def attach_devices(self, handler) -> None:
        super().attach_devices(handler)
        self._simulated = self._uploads = None  # a handler of its own: tasks run as processes

    def send(self, msg: Task) -> simpy.Event:
        if self._simulated is not None:
            done = simpy.Event(self._env)
            self._starts = start(TaskRun(self, self._simulated, msg, done), self._starts)
            return done
        return self._env.process(self._carry(msg, msg.device, False))

    def send_many(self, msgs: Sequence[Task]) -> None:
        """``send`` each task in order, without the events nobody waits on."""
        if self._simulated is None:
            super().send_many(msgs)
            return
        starts, devices, env = self._starts, self._simulated, self._env
        for msg in msgs:
            run = TaskRun(self, devices, msg, None)
            if starts is None or not starts.join(env, run):  # ``start``, inline
                starts = start(run, None)
        self._starts = starts

    def upload(self, msg: Message):
        return self._carry(msg, msg.device, True)

    def report_silence(self, msg: Leave, after_s: float) -> None:
        def deliver(_event):
            self._server_handler(msg, Delivery(self._env.now, 0.0, 0.0, 0))

        self._env.timeout(after_s).callbacks.append(deliver)

    def route(self, device: int) -> Route:
        """``device``'s ``Route`` (made at its first message, then kept)."""
        route = self._routes.get(device)
        if route is None:
            gw = self._gateway_of.item(device)
            route = self._routes[device] = Route(self._profiles[device], self._medium[gw], self._backhaul[gw])
        return route

    def _plan(self, msg: Message, route: Route, to_server: bool) -> tuple[int, float, float, bool, int]:
        """A transfer: its size on the wire, how long it holds the medium (every attempt's airtime), the rest of
        the hop (duty-cycle silences, retry back-offs, access latency, backhaul), whether it is lost, and the
        bytes transmitted (every attempt). Counts the bytes in ``bytes_sent``.

        Attempts: when the link is lossy, one uniform draw ``u`` of the device's ``link`` stream gives the
        transmissions needed, ``1 + floor(log(1 - u) / log(loss_prob))`` (geometric: P(attempts > k) =
        ``loss_prob ** k``); more than ``max_attempts`` means every one of them was lost."""
        size_bytes = encoded_size_bytes(msg)
        rate = route.up_bit_per_s if to_server else route.down_bit_per_s
        if route.plain:  # framed_transfer_time_scalar_s for one frame at full duty
            airtime_s, silence_s = 8 * (size_bytes + route.overhead_bytes) / rate, 0.0
        else:
            p = route.profile
            max_frame, overhead, duty = p.max_frame_payload_bytes, p.frame_overhead_bytes, p.duty_cycle
            airtime_s = framed_transfer_time_scalar_s(size_bytes, rate, 1.0, max_frame, overhead)
            silence_s = 0.0
            if duty < 1.0:
                silence_s = framed_transfer_time_scalar_s(size_bytes, rate, duty, max_frame, overhead) - airtime_s
        loss_log, lost = route.loss_log, False
        if loss_log is None:
            attempts = 1
        else:  # inline: two messages a task
            attempts = 1 + int(math.log(1.0 - self._loss_draws.next(msg.device)) / loss_log)
            if attempts > self._max_attempts:
                attempts, lost = self._max_attempts, True
        tx_bytes = attempts * size_bytes
        self.bytes_sent[to_server] += tx_bytes
        serialization_s = 8.0 * size_bytes / route.backhaul_bit_per_s
        if attempts == 1 and silence_s == 0.0:  # the sum below, to the bit: its first two terms are 0.0
            return size_bytes, airtime_s, route.access_s + serialization_s, lost, tx_bytes
        rest_s = (attempts * silence_s + (attempts - 1) * self._retry_backoff_s + route.latency_s
                  + route.backhaul_latency_s + serialization_s)
        return size_bytes, attempts * airtime_s, rest_s, lost, tx_bytes

    def _carry(self, msg: Message, device: int, to_server: bool):
        """The transfer as a generator (module docstring); returns the ``Delivery``, None if lost."""
        env = self._env
        route = self.route(device)
        size_bytes, hold_s, rest_s, lost, tx_bytes = self._plan(msg, route, to_server)
        sent_s = env.now
        medium = route.medium
        uploads = self._uploads if to_server and type(msg) is Update else None
        if medium is not None:
            slot = env.event()
            medium.request(slot.succeed)
            yield slot
        queue_s = env.now - sent_s
        stop = None if uploads is None else uploads.upload_stop(msg, sent_s, env.now, hold_s, tx_bytes)
        if stop is not None:
            grant_s = env.now
            yield env.timeout(stop[0] - grant_s)
            if medium is not None:
                medium.release()
            self.report_silence(uploads.upload_cut(msg, stop[1], grant_s, hold_s, tx_bytes),
                                uploads.failure_detection_s)
            return None
        yield env.timeout(hold_s)
        if medium is not None:
            medium.release()
        if uploads is not None:
            uploads.upload_aired(msg, tx_bytes)
        yield env.timeout(rest_s)
        if lost:
            self._loss_handler(msg, device)
            return None
        delivery = Delivery(sent_s, env.now - sent_s - queue_s, queue_s, size_bytes)
        if to_server:
            self._server_handler(msg, delivery)
        else:
            continuation = self._device_handler(msg, delivery)
            if continuation is not None:
                yield from continuation
        return delivery
