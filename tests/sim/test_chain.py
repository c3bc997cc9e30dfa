"""A task as a chain of steps (``fleet.sim.chain``) gives the event log of one SimPy process per task, byte for
byte: the same runs built both ways, including fleets whose identical links and devices make many events fall
at the same instant (where only SimPy's own tie-break order decides which row comes first)."""

from __future__ import annotations

import functools
from collections import Counter

import pytest

import fleet.app.build as build
from fleet.app.scenario import load_variants, parse_scenario
from fleet.app.study import analyse, summary
from fleet.core.kernel import Kernel
from fleet.core.messages import Task
from fleet.sim.devices import DeviceRules, SimulatedDevices
from fleet.sim.network import SimulatedNetwork
from tests.helpers import make_network, make_profiles

SCENARIOS = build.Path(__file__).resolve().parents[2] / "scenarios"

TIES = {  # every link identical, no slowdown: downloads, refusals and silences land together
    "name": "ties", "seed": 5, "mode": "timing",
    "fleet": {"devices": 240, "mix": [
        {"device_class": "rpi4_4gb", "link_class": "wifi", "fraction": 0.4,
         "link": {"bandwidth_sigma": 0.0, "latency_sigma": 0.0, "loss_prob": 0.0}},
        {"device_class": "mcu_tiny", "link_class": "wifi", "fraction": 0.2,
         "link": {"bandwidth_sigma": 0.0, "latency_sigma": 0.0, "loss_prob": 0.0}},
        {"device_class": "esp32_s3_psram", "link_class": "wifi", "fraction": 0.2,
         "link": {"bandwidth_sigma": 0.0, "latency_sigma": 0.0, "loss_prob": 0.2},
         "availability": {"failure": {"mtbf_s": 600, "mttr_s": 300}}},
        {"device_class": "phone_mid", "link_class": "ethernet", "fraction": 0.2,
         "availability": {"diurnal": {"period_s": 400, "on_fraction": 0.5}}}]},
    "network": {"gateways": {"access_point": {"devices_per_gateway": 7, "channels": 2},
                             "switch": {"devices_per_gateway": 5, "channels": None}}},
    "devices": {"slowdown_sigma": 0.0},
    "algorithm": {"name": "fedavg", "params": {"model": "mlp_small", "local_steps": 2}},
    "coordinator": {"mode": "sync", "rounds": 12, "clients_per_round": 60, "over_selection": 0.5,
                    "deadline_s": 40, "quorum": 0.3},
}


def _run(scenario, chains: bool):
    network = functools.partial(SimulatedNetwork, chains=chains)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(build, "SimulatedNetwork", network)
        sim = build.build_simulation(scenario)
    sim.run()
    summ = summary(sim, analyse(sim), sim.kernel.recorder.sha256())
    summ.pop("wall_s")
    return sim.kernel.recorder.rows, summ


def _scenarios():
    yield "ties-sync", parse_scenario(TIES)
    yield "ties-fedbuff", parse_scenario({**TIES, "coordinator": {"mode": "fedbuff", "rounds": 30,
                                                                   "concurrency": 50, "buffer_size": 10,
                                                                   "task_timeout_s": 60}})
    for name, scenario in load_variants(SCENARIOS / "stragglers.yaml", ["mode=timing", "coordinator.rounds=12"]):
        yield f"stragglers-{name}", scenario
    for name, scenario in load_variants(SCENARIOS / "iot_1000.yaml", ["mode=timing", "coordinator.rounds=8"]):
        if name in ("fedavg", "fedfpzo"):
            yield f"iot_1000-{name}", scenario


@pytest.mark.parametrize(("name", "scenario"), list(_scenarios()), ids=lambda v: v if isinstance(v, str) else "")
def test_chains_give_the_process_per_task_event_log(name, scenario):
    rows, summ = _run(scenario, chains=True)
    reference_rows, reference_summ = _run(scenario, chains=False)
    assert rows == reference_rows
    assert summ == reference_summ
    if name.startswith("ties"):  # the point of this fleet: many rows share an instant
        assert max(Counter(row[0] for row in rows if row[1] != "dispatch").values()) > 5


def test_the_event_send_returns_fires_with_the_download_only_for_who_waits():
    """``Transport.send``'s event: a chain schedules it at the end only if someone waits for it."""
    kernel = Kernel(seed=2)
    profiles = make_profiles(2, latency_s=0.01, loss_prob=0.0)
    net = make_network(kernel, profiles, channels=1)
    SimulatedDevices(kernel, net, profiles, [build.AlwaysOn()] * 2, [None] * 2, DeviceRules(slowdown_sigma=0.0))
    heard = []
    net.attach_server(lambda m, d: heard.append((kernel.env.now, m)), lambda m, d: None)
    env = kernel.env
    task = Task(0, 0, 0, 0, "train", 1, 1, 100, 10**6, 64, None, 64)
    waited = []

    def waiter():
        down = yield net.send(task)
        waited.append((env.now, down))

    env.process(waiter())
    quiet = net.send(Task(1, 1, 0, 0, "train", 1, 1, 100, 10**6, 64, None, 64))
    env.run()
    (t_done, down), = waited
    assert sorted(m.task_id for _, m in heard) == [0, 1] and t_done == dict((m.task_id, t) for t, m in heard)[0]
    assert down.sent_s == 0.0 and down.size_bytes > 0 and down.link_s > 0.01
    assert quiet.processed and quiet.value.sent_s == 0.0  # fired, though nobody was scheduled for it


@pytest.mark.parametrize("channels", [1, 2, None])
def test_a_medium_queues_as_simpys_resource_does(channels):
    """Five tasks at one instant on a shared medium, a sixth while they queue: who waits how long, and in which
    order the server hears them, as with ``simpy.Resource`` (the reference's medium)."""
    def heard(chains: bool) -> list:
        kernel = Kernel(seed=4)
        profiles = make_profiles(6, latency_s=0.0, loss_prob=0.0, up_bit_per_s=8e3, down_bit_per_s=8e3)
        net = make_network(kernel, profiles, channels=channels, chains=chains)
        SimulatedDevices(kernel, net, profiles, [build.AlwaysOn()] * 6, [None] * 6, DeviceRules(slowdown_sigma=0.0))
        out = []
        net.attach_server(lambda m, d: out.append((kernel.env.now, m.task_id, d.queue_s)), lambda m, d: None)
        for i in range(5):
            net.send(Task(i, i, 0, 0, "train", 1, 1, 100, 10**3, 10, None, 10))
        kernel.env.timeout(0.05).callbacks.append(
            lambda _e: net.send(Task(5, 5, 0, 0, "train", 1, 1, 100, 10**3, 10, None, 10)))
        kernel.env.run()
        return out

    got = heard(True)
    assert got == heard(False) and sorted(t for _, t, _ in got) == list(range(6))
    assert (max(q for _, _, q in got) > 0) == (channels is not None)
