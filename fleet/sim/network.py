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
"""

from __future__ import annotations

import math
from typing import Sequence

import simpy

from devices import DeviceProfile, framed_transfer_time_scalar_s
from fleet.core.kernel import Kernel
from fleet.core.messages import Leave, Message, Task
from fleet.core.transport import Delivery, DeviceLink, Transport
from fleet.core.wire import encoded_size_bytes
from fleet.sim.topology import GatewaySpec, Topology
from fleet.sim.twins import serialization_time_scalar_s


class SimulatedNetwork(Transport, DeviceLink):
    """The simulated network: routes on ``topology`` with per-device links from ``profiles``.

    ``bytes_sent[to_server]`` counts the bytes put on links in each direction, retransmissions
    included."""

    def __init__(
        self,
        kernel: Kernel,
        profiles: Sequence[DeviceProfile],
        topology: Topology,
        gateway_specs: dict[str, GatewaySpec],
        max_attempts: int = 4,
        retry_backoff_s: float = 1.0,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"network.max_attempts must be >= 1, got {max_attempts}")
        self._kernel = kernel
        self._env = kernel.env
        self._profiles = profiles
        self._gateway_of = topology.gateway_of.tolist()
        self._max_attempts = max_attempts
        self._retry_backoff_s = retry_backoff_s
        self._loss_draws = kernel.rng.device_draws("link", "uniform", len(profiles))
        self._medium: dict[int, simpy.Resource | None] = {}
        self.bytes_sent = {True: 0, False: 0}
        self._backhaul: dict[int, tuple[float, float]] = {}
        for gw, kind in topology.gateway_kind.items():
            spec = gateway_specs[kind]
            self._medium[gw] = (simpy.Resource(self._env, capacity=spec.channels)
                                if spec.channels is not None else None)
            self._backhaul[gw] = (spec.backhaul_latency_s, spec.backhaul_bit_per_s)

    @property
    def gateway_count(self) -> int:
        return len(self._medium)

    def send(self, msg: Task) -> simpy.Process:
        return self._env.process(self._carry(msg, msg.device, False))

    def upload(self, msg: Message):
        return self._carry(msg, msg.device, True)

    def report_silence(self, msg: Leave, after_s: float) -> None:
        def deliver(_event):
            self._server_handler(msg, Delivery(self._env.now, 0.0, 0.0, 0))

        self._env.timeout(after_s).callbacks.append(deliver)

    def _attempts(self, device: int, loss_prob: float) -> tuple[int, bool]:
        """Transmissions needed (geometric, from one uniform draw) and whether all were lost."""
        if loss_prob <= 0.0:
            return 1, False
        u = 1.0 - self._loss_draws.next(device)  # in (0, 1]
        attempts = 1 + int(math.log(u) / math.log(loss_prob))  # P(attempts > k) = loss_prob**k
        if attempts > self._max_attempts:
            return self._max_attempts, True
        return attempts, False

    def _carry(self, msg: Message, device: int, to_server: bool):
        """The transfer as a generator (module docstring); returns the ``Delivery``, None if lost."""
        env = self._env
        p = self._profiles[device]
        gw = self._gateway_of[device]
        size_bytes = encoded_size_bytes(msg)
        rate = p.up_bit_per_s if to_server else p.down_bit_per_s
        max_frame, overhead = p.max_frame_payload_bytes, p.frame_overhead_bytes
        airtime_s = framed_transfer_time_scalar_s(size_bytes, rate, 1.0, max_frame, overhead)
        silence_s = 0.0
        if p.duty_cycle < 1.0:
            silence_s = framed_transfer_time_scalar_s(size_bytes, rate, p.duty_cycle, max_frame,
                                                      overhead) - airtime_s
        attempts, lost = self._attempts(device, p.loss_prob)
        self.bytes_sent[to_server] += attempts * size_bytes
        sent_s = env.now
        medium = self._medium[gw]
        if medium is not None:
            with medium.request() as slot:
                yield slot
                queue_s = env.now - sent_s
                yield env.timeout(attempts * airtime_s)
        else:
            queue_s = 0.0
            yield env.timeout(attempts * airtime_s)
        backhaul_latency_s, backhaul_bit_per_s = self._backhaul[gw]
        rest_s = (attempts * silence_s + (attempts - 1) * self._retry_backoff_s
                  + p.latency_s + backhaul_latency_s
                  + serialization_time_scalar_s(size_bytes, backhaul_bit_per_s))
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
