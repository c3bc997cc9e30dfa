"""Real agent processes on loopback next to simulated devices, in one run."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fleet.scenario import parse_scenario
from fleet.simulation import build_simulation

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _agent(port: int, name: str, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "fleet.agent", "--connect", f"tcp://127.0.0.1:{port}",
                             "--name", name, "--profile", "rpi4_4gb", "--heartbeat-interval-s", "0.2",
                             *extra], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _scenario(port: int, expect: int, **coordinator) -> dict:
    return {
        "name": "bridge", "seed": 3, "mode": "learning",
        "fleet": {"devices": 4, "mix": [{"device_class": "rpi4_4gb", "link_class": "wifi", "fraction": 1.0}]},
        "data": {"dataset": "digits", "partition": "iid"},
        "algorithm": {"name": "fedavg", "params": {"model": "mlp_small", "batch_size": 16, "local_steps": 2}},
        "coordinator": {"mode": "sync", "rounds": 3, "clients_per_round": 6, "over_selection": 0.0,
                        "quorum": 0.5, **coordinator},
        "evaluation": {"interval_s": 1.0},
        "executor": {"backend": "sequential"},
        "bridge": {"bind": f"tcp://127.0.0.1:{port}", "expect_devices": expect, "wait_s": 60,
                   "allow_plain": True, "heartbeat_interval_s": 0.2, "liveness": 3},
    }


@pytest.fixture
def agents():
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


@pytest.mark.slow
def test_real_agents_train_next_to_simulated_devices(agents):
    port = _free_port()
    agents += [_agent(port, "pi-a"), _agent(port, "pi-b")]
    sim = build_simulation(parse_scenario(_scenario(port, 2))).run()
    assert sim.stopped_by == "completed"
    assert len(sim.bridge.real) == 2 and sim.bridge.real_updates_accepted == 6  # 2 devices x 3 rounds
    rows = [r for r in sim.kernel.recorder.rows if r[1] == "update" and r[3] >= 4]
    assert len(rows) == 6
    assert all(r[9] > 0 for r in rows)  # compute_s: what the agent measured
    evaluations = sim.learning.evaluations
    assert sim.learning.version == 3 and evaluations[-1].loss < evaluations[0].loss
    assert sum(sim.bridge.rejected.values()) == 0


@pytest.mark.slow
def test_a_killed_agent_is_a_link_dropout_and_a_restarted_one_rejoins(agents):
    port = _free_port()
    agents += [_agent(port, "pi-a"), _agent(port, "pi-b")]
    scenario = parse_scenario(_scenario(port, 2, rounds=4, deadline_s=30.0))
    sim = build_simulation(scenario)
    victim = agents[1]
    killed_at = {}

    def on_round(done: int) -> None:
        if done == 1:
            victim.send_signal(signal.SIGKILL)
            killed_at["wall"] = time.monotonic()
        if done == 2:  # restart it, and hold the loop (servicing frames) until it is back
            agents.append(_agent(port, "pi-b"))
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not all(d.alive for d in sim.bridge.real.values()):
                sim.bridge.pump(0.1)

    sim.run(on_round)
    assert sim.stopped_by == "completed"
    link = [r for r in sim.kernel.recorder.rows if r[1] == "dropout" and r[5] == "link" and r[3] >= 4]
    assert link, "the killed agent's task must be a link dropout"
    pi_b = next(d for d in sim.bridge.real.values() if d.name == "pi-b")
    detected_s = pi_b.purged_wall_s[0] - killed_at["wall"]
    assert detected_s <= 3 * 0.2 + 0.3  # three heartbeat intervals, plus the polling slack
    assert pi_b.rejoined == 1 and pi_b.alive  # the restarted agent came back under its old index
    assert sim.bridge.real_updates_accepted >= 4


@pytest.mark.slow
def test_only_allowed_keys_attach(agents, tmp_path):
    import shutil

    from fleet.keys import create_keys

    hub_keys, stranger = tmp_path / "hub", tmp_path / "stranger"
    create_keys(hub_keys, server=True, devices=["pi-a"])
    create_keys(stranger, devices=["pi-x"])  # a valid CURVE key the hub has never seen
    shutil.copy(hub_keys / "server.key", stranger / "server.key")
    port = _free_port()
    agents += [_agent(port, "pi-a", "--keys", str(hub_keys)), _agent(port, "pi-x", "--keys", str(stranger))]
    data = _scenario(port, 2, rounds=2)
    data["bridge"].update(keys_dir=str(hub_keys), allow_plain=False, wait_s=8)
    sim = build_simulation(parse_scenario(data)).run()
    assert [d.name for d in sim.bridge.real.values()] == ["pi-a"]
    assert sim.bridge.real_updates_accepted == 2
    assert sim.bridge.rejected.get("auth_unknown_key", 0) >= 1


def test_hub_rejects_and_counts_every_malformed_frame():
    """Hypothesis throws arbitrary frames at a live hub over a real socket: nothing crashes, nothing
    reaches a device, and each bad frame is counted once under a reason."""
    import zmq
    from hypothesis import given, settings, strategies as st

    from fleet import protocol
    from fleet.bridge import Hub

    hub = Hub("tcp://127.0.0.1:*", heartbeat_interval_s=60)
    context = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(hub.endpoint)
    valid = protocol.encode("heartbeat", {"sent_s": 1.0})
    try:
        @settings(max_examples=200, deadline=None)
        @given(st.one_of(st.binary(max_size=256),
                         st.binary(min_size=1, max_size=64).map(lambda b: valid[:len(b) % len(valid)] + b)))
        def throw(frame):
            before = sum(hub.rejected.values())
            dealer.send(frame)
            got = []
            deadline = time.monotonic() + 2
            while not got and sum(hub.rejected.values()) == before and time.monotonic() < deadline:
                got = hub.receive(0.05)
            try:
                protocol.decode(frame)
                decodable = True
            except protocol.ProtocolError:
                decodable = False
            if decodable:
                assert len(got) == 1
            else:
                assert got == [] and sum(hub.rejected.values()) == before + 1

        throw()
    finally:
        dealer.close(0)
        context.term()
        hub.close()
