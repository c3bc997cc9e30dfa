"""The network's shape: device → gateway (shared medium) → backhaul → server, on networkx.

Devices are grouped by the ``gateway_kind`` of their link class; each kind has its own gateways,
each serving up to ``devices_per_gateway`` devices chosen at random (topology RNG stream).
Routes are read off the graph by one breadth-first search from the server, so a deeper topology
(gateways behind aggregation routers, say) needs no change here beyond building more edges.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import networkx as nx
import numpy as np

from fleet.core.messages import SERVER


@dataclass(frozen=True, slots=True)
class GatewaySpec:
    """One kind of gateway: how many devices share one, and how many transmit at once."""

    devices_per_gateway: int
    channels: int | None  # concurrent transmissions on the shared medium; None = no contention
    backhaul_latency_s: float
    backhaul_bit_per_s: float


@dataclass(frozen=True)
class Topology:
    graph: nx.Graph
    gateway_of: np.ndarray  # device id -> gateway node id (negative ids: gateways are -2, -3, ...)
    gateway_kind: Mapping[int, str]  # gateway node id -> kind
    devices_per_gateway: Mapping[int, int]


def build_topology(
    device_kinds: Sequence[str],
    specs: Mapping[str, GatewaySpec],
    rng: np.random.Generator,
) -> Topology:
    """Attach device ``i`` (gateway kind ``device_kinds[i]``) to a gateway of that kind.

    Gateway node ids are negative integers below ``SERVER`` so that device ids stay 0..n-1.
    Raises ``ValueError`` naming a gateway kind that has no spec.
    """
    graph = nx.Graph()
    graph.add_node(SERVER, role="server")
    n = len(device_kinds)
    gateway_of = np.empty(n, dtype=np.int64)
    kinds_arr = np.asarray(device_kinds)
    gateway_kind: dict[int, str] = {}
    members: dict[int, int] = {}
    next_id = SERVER - 1
    for kind in sorted(set(device_kinds)):
        spec = specs.get(kind)
        if spec is None:
            raise ValueError(f"network.gateways: no spec for gateway kind {kind!r}")
        ids = np.flatnonzero(kinds_arr == kind)
        rng.shuffle(ids)
        for start in range(0, len(ids), spec.devices_per_gateway):
            gw = next_id
            next_id -= 1
            chunk = ids[start:start + spec.devices_per_gateway]
            graph.add_node(gw, role="gateway", kind=kind)
            graph.add_edge(gw, SERVER, latency_s=spec.backhaul_latency_s,
                           bit_per_s=spec.backhaul_bit_per_s)
            graph.add_edges_from((int(d), gw) for d in chunk)
            gateway_kind[gw] = kind
            members[gw] = len(chunk)
    # Read each device's gateway off the graph (the hop before the device on its route).
    predecessors = dict(nx.bfs_predecessors(graph, SERVER))
    for device in range(n):
        gateway_of[device] = predecessors[device]
    return Topology(graph, gateway_of, gateway_kind, members)
