"""Real agent processes on loopback next to simulated devices, in one run.

Margins hold on a loaded 2-core machine: the agents take their liveness settings from the hub's welcome, the
hub's socket has a thread of its own, and no test asserts how fast anything happened. Each real run is
marked slow (agent processes import torch)."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from fleet.app.build import build_simulation
from fleet.app.scenario import parse_scenario
from fleet.app.schema import BridgeConfig
from tests.helpers import free_port

ROOT = Path(__file__).resolve().parents[2]



def _agent(port: int, name: str, *extra: str, stderr=subprocess.DEVNULL) -> subprocess.Popen:
    """A real agent with its own defaults (it adopts the hub's liveness settings from the welcome)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "fleet.agent", "--connect", f"tcp://127.0.0.1:{port}",
                             "--name", name, "--profile", "rpi4_4gb", *extra], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=stderr)


def _scenario(port: int, expect: int, bridge: dict | None = None, **coordinator) -> dict:
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
                   "allow_plain": True, **(bridge or {})},
    }


@pytest.fixture
def agents():
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def _wait_for(path: Path, text: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in (path.read_text() if path.exists() else ""):
        assert time.monotonic() < deadline, f"{path.name}: no {text!r} within {timeout_s} s"
        time.sleep(0.1)


@pytest.mark.slow
def test_agents_started_before_the_hub_adopt_its_heartbeat_and_train(agents, tmp_path):
    """Defects 12 and 13, through the CLI. The agents start first and give up one connection (its hello
    queued, unanswered) before the hub binds. Their own heartbeat is 3 s, longer than the hub's 0.5 s x 4
    window: only by adopting the welcome's settings do they stay attached. Every real update arrives."""
    port = free_port()
    logs = [tmp_path / "pi-a.err", tmp_path / "pi-b.err"]
    for name, log in zip(("pi-a", "pi-b"), logs):
        with log.open("w") as err:
            agents.append(_agent(port, name, "--heartbeat-interval-s", "3", "--liveness", "1", stderr=err))
    for log in logs:
        _wait_for(log, "reconnecting in")  # a hello was queued on a socket the agent then gave up
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump(_scenario(port, 2, {"heartbeat_interval_s": 0.5, "liveness": 4})))
    from fleet.app.run import main

    assert main([str(path), "--out", str(tmp_path / "out"), "--no-figures", "--quiet"]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["real_devices"] == 2
    assert summary["real_updates_accepted"] == 6  # 2 devices x 3 rounds
    assert summary["bridge_rejected"] == {}
    with (tmp_path / "out" / "events.csv").open() as f:
        real = [r for r in csv.DictReader(f) if r["event"] == "update" and int(r["device"]) >= 4]
    assert len(real) == 6 and all(float(r["compute_s"]) > 0 for r in real)  # what the agents measured


@pytest.mark.slow
def test_a_killed_agent_is_a_link_dropout_and_a_restarted_one_rejoins(agents):
    port = free_port()
    agents += [_agent(port, "pi-a"), _agent(port, "pi-b")]
    interval_s, liveness = 0.5, 4
    scenario = parse_scenario(_scenario(port, 2, {"heartbeat_interval_s": interval_s, "liveness": liveness},
                                        rounds=4, deadline_s=60.0))
    sim = build_simulation(scenario)
    victim = agents[1]
    killed_at = {}

    def on_round(done: int) -> None:
        if done == 1:
            victim.send_signal(signal.SIGKILL)
            killed_at["wall"] = time.monotonic()
        if done == 2:  # restart it, and hold the loop (servicing frames) until it is back
            agents.append(_agent(port, "pi-b"))
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not all(d.alive for d in sim.bridge.real.values()):
                sim.bridge.pump(0.1)

    sim.run(on_round)
    assert sim.stopped_by == "completed"
    link = [r for r in sim.kernel.recorder.rows if r[1] == "dropout" and r[5] == "link" and r[3] >= 4]
    assert link, "the killed agent's task must be a link dropout"
    pi_b = next(d for d in sim.bridge.real.values() if d.name == "pi-b")
    # its last frame came at most one interval before the kill: never purged before that much silence
    assert pi_b.purged_wall_s[0] - killed_at["wall"] >= (liveness - 1) * interval_s
    assert pi_b.rejoined == 1 and pi_b.alive  # the restarted agent came back under its old index
    assert sim.bridge.real_updates_accepted >= 4
    evaluations = sim.learning.evaluations
    assert sim.learning.version == 4 and evaluations[-1].loss < evaluations[0].loss


class LossyRelay:
    """A poor Wi-Fi link in user space: a TCP relay on loopback in front of ``target_port``. Every chunk one
    side writes reaches the other ``delay_s`` later, in order. A chunk is lost with probability ``loss``;
    TCP's retransmission then holds it, and everything behind it, back by one retransmission timeout
    (``2 delay_s + 0.2`` s, Linux's minimum over the round trip), doubling for each further loss in a row
    (at most ``max_losses``). Seeded: the same seed gives the same losses."""

    def __init__(self, target_port: int, delay_s: float, loss: float, seed: int, max_losses: int = 4) -> None:
        self.target_port, self.delay_s, self.loss, self.max_losses = target_port, delay_s, loss, max_losses
        self.rng = np.random.default_rng(seed)
        self.stalls_s: list[float] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = [self.listener]
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                near, _ = self.listener.accept()
                far = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                return
            self.sockets += [near, far]
            for src, dst in ((near, far), (far, near)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _stall_s(self) -> float:
        rto_s, stall_s, losses = 2 * self.delay_s + 0.2, 0.0, 0
        with self._lock:
            while losses < self.max_losses and self.rng.random() < self.loss:
                stall_s += rto_s * 2 ** losses
                losses += 1
            if stall_s:
                self.stalls_s.append(stall_s)
        return stall_s

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        import queue

        chunks: queue.SimpleQueue = queue.SimpleQueue()

        def write() -> None:
            while (item := chunks.get()) is not None:
                release_s, data = item
                time.sleep(max(0.0, release_s - time.monotonic()))
                try:
                    dst.sendall(data)
                except OSError:
                    return
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

        threading.Thread(target=write, daemon=True).start()
        last_s = 0.0
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                chunks.put(None)
                return
            last_s = max(last_s, time.monotonic() + self.delay_s + self._stall_s())  # TCP keeps order
            chunks.put((last_s, data))

    def close(self) -> None:
        for s in self.sockets:
            s.close()


@pytest.mark.slow
def test_default_liveness_survives_a_lossy_link_and_only_allowed_keys_attach(agents, tmp_path):
    """Defect 16: through 200 ms each way with 30 % of chunks lost (stalls of 0.6 s, 1.8 s or 4.2 s as TCP
    retransmits once, twice or three times), with CURVE, the default liveness settings (``BridgeConfig``'s
    and the agent's, 2 s x 5) keep both devices attached: every real update arrives, nobody rejoins (the old
    1 s x 3 purged them at the first 4.2 s stall). A valid key the hub has never seen is still refused."""
    import shutil

    from fleet.bridge.keys import create_keys

    hub_keys, stranger = tmp_path / "hub", tmp_path / "stranger"
    create_keys(hub_keys, server=True, devices=["pi-a", "pi-b"])
    create_keys(stranger, devices=["pi-x"])  # a valid CURVE key the hub has never seen
    shutil.copy(hub_keys / "server.key", stranger / "server.key")
    port = free_port()
    relay = LossyRelay(port, delay_s=0.2, loss=0.3, seed=16, max_losses=3)
    try:
        agents += [_agent(relay.port, name, "--keys", str(hub_keys)) for name in ("pi-a", "pi-b")]
        agents.append(_agent(relay.port, "pi-x", "--keys", str(stranger)))
        data = _scenario(port, 2, {"keys_dir": str(hub_keys), "allow_plain": False}, deadline_s=120.0)
        sim = build_simulation(parse_scenario(data))
        defaults = BridgeConfig()
        assert (sim.bridge._hub.heartbeat_interval_s, sim.bridge._hub.liveness) == (
            defaults.heartbeat_interval_s, defaults.liveness)
        sim.run()
    finally:
        relay.close()
    assert sim.stopped_by == "completed"
    assert sorted(d.name for d in sim.bridge.real.values()) == ["pi-a", "pi-b"]
    assert sim.bridge.real_updates_accepted == 6
    assert [d.rejoined for d in sim.bridge.real.values()] == [0, 0]
    assert all(not d.purged_wall_s for d in sim.bridge.real.values())
    rejected = sim.bridge.rejected
    assert rejected.get("auth_unknown_key", 0) >= 1
    assert {k: v for k, v in rejected.items() if not k.startswith("auth_")} == {}
    assert max(relay.stalls_s) > 3.0, "no stall longer than the old 1 s x 3 window: the test proves nothing"


def test_hub_rejects_and_counts_every_malformed_frame():
    """Hypothesis throws arbitrary frames at a live hub over a real socket: nothing crashes, nothing
    reaches a device, and each bad frame is counted once under a reason."""
    import zmq
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from fleet.bridge import protocol
    from fleet.bridge.transport import Hub

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
