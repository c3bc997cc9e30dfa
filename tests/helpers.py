"""Helpers for tests: small hand-built fleets with exactly known links, and a free loopback port."""

from __future__ import annotations

import dataclasses
import socket

import numpy as np

from devices import MixEntry, sample_fleet
from fleet.sim.network import SimulatedNetwork
from fleet.sim.topology import GatewaySpec, build_topology

FAST_BIT_PER_S = 1e15  # a link so fast that serialization is negligible


def make_profiles(n, device_class="rpi4_4gb", link_class="wifi", seed=0, **link):
    """``n`` sampled devices of one class, with link fields replaced by ``link`` (exact values)."""
    profiles = sample_fleet([MixEntry(device_class, link_class, 1.0)], n,
                            np.random.default_rng(seed))
    return [dataclasses.replace(p, **link) for p in profiles]


def make_network(kernel, profiles, channels=None, backhaul_latency_s=0.0,
                 backhaul_bit_per_s=FAST_BIT_PER_S, devices_per_gateway=10**6, **kwargs):
    spec = GatewaySpec(devices_per_gateway, channels, backhaul_latency_s, backhaul_bit_per_s)
    topology = build_topology(["gw"] * len(profiles), {"gw": spec}, kernel.rng.stream("topology"))
    return SimulatedNetwork(kernel, profiles, topology, {"gw": spec}, **kwargs)


def free_port() -> int:
    """A TCP port on the loopback that nothing listens on now, for a hub to bind in a test."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
