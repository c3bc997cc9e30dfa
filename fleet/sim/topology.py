"""The network's shape: device → gateway (shared medium) → backhaul → server.

Devices are grouped by the ``gateway_kind`` of their link class; each kind has its own gateways,
each serving up to ``devices_per_gateway`` devices chosen at random (topology RNG stream).
A device's route is its gateway, then that gateway's backhaul to the server; the assignment is held
as one array (``gateway_of``), a few bytes per device, so that fleets of millions fit. ``graph()``
draws the same network as a networkx graph (one node per device: for small fleets and inspection).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

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
    gateway_of: np.ndarray  # device id -> gateway node id (negative ids: gateways are -2, -3, ...)
    gateway_kind: Mapping[int, str]  # gateway node id -> kind
    devices_per_gateway: Mapping[int, int]
    backhaul: Mapping[int, tuple[float, float]]  # gateway node id -> (latency s, bit/s) of its backhaul

    def graph(self):
        """The network as a graph: the server, the gateways (``role``, ``kind``; a backhaul edge each, with
        ``latency_s`` and ``bit_per_s``) and the devices (an edge to their gateway)."""
        import networkx as nx  # only here: a graph of millions of devices is for no one's hot path

        graph = nx.Graph()
        graph.add_node(SERVER, role="server")
        for gw, kind in self.gateway_kind.items():
            latency_s, bit_per_s = self.backhaul[gw]
            graph.add_node(gw, role="gateway", kind=kind)
            graph.add_edge(gw, SERVER, latency_s=latency_s, bit_per_s=bit_per_s)
        graph.add_edges_from(zip(range(len(self.gateway_of)), self.gateway_of.tolist()))
        return graph


def build_topology(
    device_kinds: Sequence[str] | np.ndarray,
    specs: Mapping[str, GatewaySpec],
    rng: np.random.Generator,
) -> Topology:
    """Attach device ``i`` (gateway kind ``device_kinds[i]``) to a gateway of that kind.

    Kinds are taken in sorted order; each kind's devices (ascending ids) are shuffled with ``rng`` and
    dealt to its gateways ``devices_per_gateway`` at a time. Gateway node ids are negative integers below
    ``SERVER`` so that device ids stay 0..n-1. Raises ``ValueError`` naming a gateway kind that has no spec.
    """
    names, codes = np.unique(np.asarray(device_kinds, dtype=str), return_inverse=True)
    return build_topology_coded(names.tolist(), codes, specs, rng)


def build_topology_coded(kind_names: Sequence[str], kind_of: np.ndarray, specs: Mapping[str, GatewaySpec],
                         rng: np.random.Generator) -> Topology:
    """``build_topology`` with device ``i``'s kind given as ``kind_names[kind_of[i]]`` (a few bytes a
    device instead of a string each)."""
    n = len(kind_of)
    gateway_of = np.empty(n, dtype=np.int64)
    gateway_kind: dict[int, str] = {}
    members: dict[int, int] = {}
    backhaul: dict[int, tuple[float, float]] = {}
    next_id = SERVER - 1
    present = set(np.unique(kind_of).tolist()) if n else set()
    for kind in sorted(kind_names[code] for code in present):
        spec = specs.get(kind)
        if spec is None:
            raise ValueError(f"network.gateways: no spec for gateway kind {kind!r}")
        ids = np.flatnonzero(kind_of == kind_names.index(kind))
        rng.shuffle(ids)
        per = spec.devices_per_gateway
        count = -(-len(ids) // per)
        gateway_of[ids] = next_id - np.arange(len(ids)) // per
        for k in range(count):
            gw = next_id - k
            gateway_kind[gw] = kind
            members[gw] = min(per, len(ids) - k * per)
            backhaul[gw] = (spec.backhaul_latency_s, spec.backhaul_bit_per_s)
        next_id -= count
    return Topology(gateway_of, gateway_kind, members, backhaul)
