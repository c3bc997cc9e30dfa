"""The agent (fleet/bridge/agent.py) against a scripted hub: a bare ROUTER socket in the test, and a fake clock, so
liveness, reconnects and answers are checked without depending on how busy the machine is."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import numpy as np
import pytest
import zmq

from fleet.bridge import protocol
from fleet.bridge.agent import FIRST_BACKOFF_S, MAX_BACKOFF_S, Agent, Backoff, HubLiveness
from fleet.bridge.agent_cli import main

ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 20.0  # the longest the test waits for a frame the agent must send (a loaded machine is slow)


class FakeClock:
    def __init__(self, now_s: float = 100.0) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


def test_hub_liveness_adopts_the_welcome_and_expires_after_exactly_liveness_intervals():
    clock = FakeClock()
    live = HubLiveness(2.0, 5, clock)
    live.adopt(0.25, 4)
    assert live.limit_s == 1.0
    clock.now_s += 1.0
    assert not live.dead()  # exactly the limit: not yet
    clock.now_s += 1e-6
    assert live.dead()
    live.heard()
    assert not live.dead()


def test_hub_liveness_beats_once_per_interval():
    clock = FakeClock()
    live = HubLiveness(0.5, 3, clock)
    assert not live.beat_due()
    clock.now_s += 0.5
    assert live.beat_due() and not live.beat_due()
    clock.now_s += 0.49
    assert not live.beat_due()
    clock.now_s += 0.01
    assert live.beat_due()


def test_backoff_doubles_to_the_cap_the_protocol_page_states():
    backoff = Backoff()
    assert [backoff.next_s() for _ in range(8)] == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 32.0, 32.0]
    backoff.reset()
    assert backoff.next_s() == FIRST_BACKOFF_S
    doc = " ".join((ROOT / "docs" / "protocol.md").read_text().split())
    assert f"doubling to a cap of {MAX_BACKOFF_S:g} s" in doc


# --- a scripted hub -------------------------------------------------------------------------------------------
class ScriptedHub:
    """A ROUTER socket the test drives by hand."""

    def __init__(self, endpoint: str = "tcp://127.0.0.1:*") -> None:
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(endpoint)
        self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)

    def recv(self, timeout_s: float = WAIT_S, skip: tuple[str, ...] = ()) -> tuple[bytes, protocol.Message]:
        """The next frame whose kind is not in ``skip``; fails the test after ``timeout_s``."""
        while self.socket.poll(int(timeout_s * 1000)):
            identity, frame = self.socket.recv_multipart()
            msg = protocol.decode(frame)
            if msg.kind not in skip:
                return identity, msg
        raise AssertionError(f"no frame from the agent within {timeout_s} s")

    def quiet(self, timeout_s: float) -> list[str]:
        """The kinds of the frames that arrive within ``timeout_s``."""
        kinds = []
        while self.socket.poll(int(timeout_s * 1000)):
            kinds.append(protocol.decode(self.socket.recv_multipart()[1]).kind)
        return kinds

    def send(self, identity: bytes, kind: str, body: dict) -> None:
        self.socket.send_multipart([identity, protocol.encode(kind, body)])

    def close(self) -> None:
        self.socket.close(0)
        self.context.term()


WELCOME = {"device": 4, "heartbeat_interval_s": 0.25, "liveness": 4,
           "algorithm": {"name": "fedavg", "params": {}}, "dataset": {"name": "digits", "partition": [0, 1, 2]}}


def _task(task_id: int) -> dict:
    return {"task_id": task_id, "round_index": 0, "model_version": 0, "phase": "train", "local_steps": 1,
            "batch_size": 1, "seed": 5, "weights": np.zeros(3, np.float32), "prune_step": 0,
            "update_kind": "delta"}


class ScriptedAgent(Agent):
    """The real socket loop, without torch: welcomes load nothing, tasks are refused at once."""

    def __init__(self, connect: str, clock, sleep, **kwargs) -> None:
        super().__init__(connect, "rpi4_4gb", "pi-t", heartbeat_interval_s=1.0, liveness=2,
                         flops_per_s=1e9, clock=clock, sleep=sleep, **kwargs)
        self.computed: list[int] = []

    def _welcome(self, body: dict) -> None:
        pass

    def _task(self, body: dict) -> tuple[str, dict]:
        self.computed.append(int(body["task_id"]))
        return "refusal", {"task_id": int(body["task_id"]), "cause": "failure", "free_memory_bytes": 0}


class Running:
    """``agent.run()`` on a thread of its own; ``status`` is its return value."""

    def __init__(self, agent: Agent) -> None:
        self.agent, self.status = agent, None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.status = self.agent.run()

    def join(self) -> int:
        self.thread.join(WAIT_S)
        assert not self.thread.is_alive(), "the agent did not stop"
        return self.status


class Sleeps:
    """An injected ``sleep``: records each wait and whether the agent still held a socket, then blocks until
    the test calls ``release``."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, bool]] = []
        self.entered, self._go = threading.Event(), threading.Event()
        self.agent: Agent | None = None

    def __call__(self, wait_s: float) -> None:
        self.calls.append((wait_s, self.agent.socket is not None))
        self.entered.set()
        assert self._go.wait(WAIT_S)
        self._go.clear()

    def release(self) -> None:
        self.entered.clear()
        self._go.set()


@pytest.fixture
def hub():
    h = ScriptedHub()
    yield h
    h.close()


def _start(connect: str, clock: FakeClock, **kwargs) -> tuple[Running, Sleeps]:
    sleeps = Sleeps()
    agent = ScriptedAgent(connect, clock, sleeps, **kwargs)
    sleeps.agent = agent
    return Running(agent), sleeps


def test_agent_heartbeats_at_the_welcome_interval_and_reconnects_after_its_liveness(hub):
    """Defect 12: the agent adopts the welcome's 0.25 s x 4 (its own settings are 1 s x 2); defect 13: it
    closes the socket before it backs off."""
    clock = FakeClock()
    running, sleeps = _start(hub.endpoint, clock)
    identity, hello = hub.recv()
    assert hello.kind == "hello" and hello["device_name"] == "pi-t"
    hub.send(identity, "welcome", WELCOME)
    welcomed_s = clock.now_s
    got_identity, beat = hub.recv()  # at once: it confirms the connection
    assert (got_identity, beat.kind) == (identity, "heartbeat")
    for step in range(1, 4):  # one heartbeat per 0.25 s of the fake clock, on the same connection
        clock.now_s = welcomed_s + 0.25 * step
        got_identity, beat = hub.recv()
        assert (got_identity, beat.kind) == (identity, "heartbeat")
    assert running.agent.hub.limit_s == 1.0
    clock.now_s = welcomed_s + 1.0  # exactly 4 silent intervals: still there
    assert hub.recv()[1].kind == "heartbeat"
    assert not sleeps.entered.is_set()
    clock.now_s = welcomed_s + 1.0625
    assert sleeps.entered.wait(WAIT_S)
    assert sleeps.calls == [(FIRST_BACKOFF_S, False)]  # the socket was closed before the back-off
    sleeps.release()
    new_identity, hello = hub.recv(skip=("heartbeat",))
    assert hello.kind == "hello" and new_identity != identity
    hub.send(new_identity, "bye", {"reason": "test over"})
    assert running.join() == 0


def test_an_agent_started_before_the_hub_joins_on_its_live_socket_only():
    """Defect 13: the hello queued on the socket the agent gives up must never reach the hub. The hub binds
    while the agent backs off; the only hello it gets is on the agent's new socket, which it then keeps."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    clock = FakeClock()
    running, sleeps = _start(f"tcp://127.0.0.1:{port}", clock)
    clock.now_s += 2.0625  # its own 1 s x 2 without a welcome
    assert sleeps.entered.wait(WAIT_S)
    assert sleeps.calls == [(FIRST_BACKOFF_S, False)]
    hub = ScriptedHub(f"tcp://127.0.0.1:{port}")
    try:
        assert hub.quiet(0.5) == []  # nothing from the abandoned socket
        clock.now_s += 1.0
        sleeps.release()
        identity, hello = hub.recv()
        assert hello.kind == "hello"
        hub.send(identity, "welcome", WELCOME)
        for _ in range(2):
            got, msg = hub.recv()
            assert (got, msg.kind) == (identity, "heartbeat")
            clock.now_s += 0.25
        hub.send(identity, "bye", {})
        assert running.join() == 0
        assert len(sleeps.calls) == 1
    finally:
        hub.close()


def test_a_repeated_task_is_answered_once_and_re_answered_after_a_reconnect(hub):
    """Decision c: a task repeated on one connection is ignored; after a reconnect the hub re-sends the
    pending task and the agent sends its answer again, without computing it twice."""
    clock = FakeClock()
    running, sleeps = _start(hub.endpoint, clock)
    identity, _ = hub.recv()
    hub.send(identity, "welcome", WELCOME)
    for task_id in (7, 7, 8):
        hub.send(identity, "task", _task(task_id))
    answers = [hub.recv(skip=("heartbeat",)) for _ in range(2)]
    assert [(i, m.kind, m["task_id"]) for i, m in answers] == [(identity, "refusal", 7), (identity, "refusal", 8)]
    clock.now_s += 1.0625  # the hub is silent past 0.25 s x 4: reconnect
    assert sleeps.entered.wait(WAIT_S)
    sleeps.release()
    new_identity, hello = hub.recv(skip=("heartbeat",))
    assert hello.kind == "hello"
    hub.send(new_identity, "welcome", WELCOME)
    hub.send(new_identity, "task", _task(8))  # still pending on the hub: sent again, same task_id
    hub.send(new_identity, "task", _task(9))
    answers = [hub.recv(skip=("heartbeat",)) for _ in range(2)]
    assert [(i, m["task_id"]) for i, m in answers] == [(new_identity, 8), (new_identity, 9)]
    assert running.agent.computed == [7, 8, 9]
    hub.send(new_identity, "bye", {})
    assert running.join() == 0


def test_a_frame_that_does_not_decode_is_no_sign_of_life(hub, capsys):
    clock = FakeClock()
    running, sleeps = _start(hub.endpoint, clock)
    identity, _ = hub.recv()
    hub.send(identity, "welcome", WELCOME)
    assert hub.recv()[1].kind == "heartbeat"
    clock.now_s += 0.75
    hub.socket.send_multipart([identity, b"\xc1 not msgpack"])
    assert hub.recv()[1].kind == "heartbeat"  # it has read the bad frame by the time of this heartbeat
    clock.now_s += 0.3125  # 1.0625 s after the welcome, the last frame that decoded
    assert sleeps.entered.wait(WAIT_S)
    sleeps.release()
    hub.send(hub.recv(skip=("heartbeat",))[0], "bye", {})
    assert running.join() == 0
    assert "rejected a frame from the hub (malformed)" in capsys.readouterr().err


def test_the_agent_gives_up_after_max_reconnects_with_one_line(capsys):
    """Defect 15: an agent no hub answers exits with status 1 and one line, instead of retrying for ever."""
    import socket

    import torch

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    threads = torch.get_num_threads()
    try:
        status = main(["--connect", f"tcp://127.0.0.1:{port}", "--name", "pi-z", "--threads", "1",
                       "--heartbeat-interval-s", "0.02", "--liveness", "1", "--max-backoff-s", "0.01",
                       "--max-reconnects", "3"])
        assert torch.get_num_threads() == 1  # --threads wins
    finally:
        torch.set_num_threads(threads)
    err = capsys.readouterr().err.splitlines()
    assert status == 1
    assert err[0] == f"fleet.agent: pi-z (rpi4_4gb) on 1 torch thread(s), connecting to tcp://127.0.0.1:{port}"
    assert err[1:3] == [f"fleet.agent: the hub at tcp://127.0.0.1:{port} is silent; reconnecting in 0.01 s"] * 2
    assert err[3:] == [f"fleet.agent: no welcome from tcp://127.0.0.1:{port} on 3 connections in a row; "
                       "giving up"]


@pytest.mark.parametrize("args, message", [
    (["--threads", "0"], "argument --threads: must be at least 1, got 0"),
    (["--heartbeat-interval-s", "nan"], "argument --heartbeat-interval-s: must be a positive number"),
])
def test_bad_agent_options_are_one_line_and_status_2(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--connect", "tcp://127.0.0.1:1", *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_the_agent_honours_omp_num_threads():
    """Defect 15: with no --threads, torch keeps what OMP_NUM_THREADS says (the old agent raised it to
    min(4, cpus))."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "fleet.agent", "--connect", "tcp://127.0.0.1:1", "--name", "x",
                          "--heartbeat-interval-s", "0.02", "--liveness", "1", "--max-reconnects", "1"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert re.match(r"fleet\.agent: x \(rpi4_4gb\) on 1 torch thread\(s\)", out.stderr)


def test_a_welcome_the_agent_cannot_run_ends_it_with_status_2_and_one_line(hub, capsys):
    class Agent2(ScriptedAgent):
        _welcome = Agent._welcome  # the real one: it looks the dataset up

    sleeps = Sleeps()
    agent = Agent2(hub.endpoint, FakeClock(), sleeps)
    running = Running(agent)
    identity, _ = hub.recv()
    hub.send(identity, "welcome", {**WELCOME, "dataset": {"name": "imagenet", "partition": [0]}})
    assert running.join() == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"fleet.agent: cannot run what {hub.endpoint} asks: ValueError: dataset 'imagenet' is unknown here "
        "(known: digits, fashion_mnist)")
