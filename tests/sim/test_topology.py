"""The topology as arrays (``fleet.sim.topology``): the same gateway for every device as the graph it replaces,
read off a breadth-first search from the server."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from fleet.core.messages import SERVER
from fleet.sim.topology import GatewaySpec, build_topology, build_topology_coded

SPECS = {"access_point": GatewaySpec(30, 1, 0.001, 1e9), "cell": GatewaySpec(200, 8, 0.02, 1e9),
         "switch": GatewaySpec(48, None, 0.0005, 1e10)}


def _by_graph(kinds, specs, rng):
    """The topology as it was built before: a networkx graph, devices' gateways read off a BFS."""
    graph = nx.Graph()
    graph.add_node(SERVER, role="server")
    kinds_arr = np.asarray(kinds)
    next_id = SERVER - 1
    for kind in sorted(set(kinds)):
        spec = specs[kind]
        ids = np.flatnonzero(kinds_arr == kind)
        rng.shuffle(ids)
        for start in range(0, len(ids), spec.devices_per_gateway):
            gw = next_id
            next_id -= 1
            graph.add_node(gw, role="gateway", kind=kind)
            graph.add_edge(gw, SERVER, latency_s=spec.backhaul_latency_s, bit_per_s=spec.backhaul_bit_per_s)
            graph.add_edges_from((int(d), gw) for d in ids[start:start + spec.devices_per_gateway])
    predecessors = dict(nx.bfs_predecessors(graph, SERVER))
    return np.array([predecessors[d] for d in range(len(kinds))]), graph


@pytest.mark.parametrize("seed", [0, 3])
def test_every_device_gets_the_gateway_the_graph_gave_it(seed):
    rng = np.random.default_rng(seed)
    kinds = rng.choice(["access_point", "cell", "switch"], size=2_000, p=[0.5, 0.2, 0.3]).tolist()
    topology = build_topology(kinds, SPECS, np.random.default_rng(seed))
    gateway_of, graph = _by_graph(kinds, SPECS, np.random.default_rng(seed))
    assert topology.gateway_of.tolist() == gateway_of.tolist()
    assert nx.utils.graphs_equal(topology.graph(), graph)
    for gw, count in topology.devices_per_gateway.items():
        assert count == int((topology.gateway_of == gw).sum())
        assert topology.gateway_kind[gw] == graph.nodes[gw]["kind"]


def test_kinds_as_codes_and_as_names_agree_and_an_unknown_kind_is_named():
    kinds = ["switch", "cell", "switch", "cell", "cell"]
    names = ["cell", "switch"]
    codes = np.array([names.index(k) for k in kinds])
    a = build_topology(kinds, SPECS, np.random.default_rng(1))
    b = build_topology_coded(names, codes, SPECS, np.random.default_rng(1))
    assert a.gateway_of.tolist() == b.gateway_of.tolist() and a.gateway_kind == b.gateway_kind
    with pytest.raises(ValueError, match="no spec for gateway kind 'lora_gateway'"):
        build_topology(["lora_gateway"], SPECS, np.random.default_rng(0))
