"""The outside review of the real-device bridge: bad agent options are one line and status 2; a profile must
be a catalog class (agent and hub); wrong keys say what is wrong on both ends; the agent's start is clean;
a task for a device the hub knows is gone is that device having left, not a link loss."""

from __future__ import annotations

import subprocess
import sys
import time
import warnings
from collections import Counter

import numpy as np
import pytest

from fleet.bridge import protocol
from fleet.bridge.agent import Agent
from fleet.bridge.agent_cli import main
from fleet.bridge.keys import create_keys
from fleet.bridge.session import SessionError, rejections_hint, wait_for_devices
from fleet.core.messages import Leave
from tests.bridge.live import HELLO, dealer, frames
from tests.bridge.test_agent import ROOT, FakeClock, Running, ScriptedAgent, ScriptedHub, Sleeps
from tests.bridge.test_bridge_transport import Harness, _fake_bridge, _task

KNOWN = ("mcu_tiny, mcu_mid, esp32, esp32_s3_psram, rpi_zero2w, rpi4_2gb, rpi4_4gb, jetson_nano, "
         "jetson_orin_nano, phone_low, phone_mid, phone_high")


@pytest.fixture
def keys(tmp_path):
    """A hub's key folder with devices pi-a and pi-b, and a stranger's: pi-x, unknown to the hub, with its
    own server key (``other``)."""
    hub_keys, other = tmp_path / "hub", tmp_path / "other"
    create_keys(hub_keys, server=True, devices=["pi-a", "pi-b"])
    create_keys(other, server=True, devices=["pi-a", "pi-x"])
    return hub_keys, other


# --- 1. bad options: one line, status 2, no traceback ----------------------------------------------------------
def test_bad_agent_options_are_one_line_naming_the_option_and_status_2(keys, tmp_path, capsys):
    hub_keys, _ = keys
    cases = [
        (["--keys", str(tmp_path / "nonexist"), "--name", "pi-a"],
         f"fleet.agent: --keys: {tmp_path / 'nonexist'} is not a folder (it holds this device's NAME.key_secret "
         "and the hub's server.key, from python -m fleet.keys)"),
        (["--keys", str(hub_keys), "--name", "pi-c"],
         f"fleet.agent: --keys (for --name pi-c): device secret key not found: {hub_keys / 'pi-c.key_secret'}; "
         f"run `python -m fleet.keys DIR --device pi-c` (and --server once) where the keys are made, and copy "
         "DIR/pi-c.key_secret and DIR/server.key to this device's keys folder"),
        (["--profile", "bogus"], f"fleet.agent: --profile: unknown device class 'bogus' (known: {KNOWN})"),
        (["--profile", "x|y,z"], f"fleet.agent: --profile: unknown device class 'x|y,z' (known: {KNOWN})"),
    ]
    for args, line in cases:
        assert main(["--connect", "tcp://127.0.0.1:1", *args]) == 2
        assert capsys.readouterr().err.splitlines() == [line]
    assert main(["--connect", "localhost:5599"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "fleet.agent: --connect: 'localhost:5599' is not a ZeroMQ address (Invalid argument "
        "(addr='localhost:5599')); write tcp://HOST:PORT"]


@pytest.mark.parametrize("args, start", [
    (["--connect", "localhost:5599"], "fleet.agent: --connect: 'localhost:5599' is not a ZeroMQ address"),
    (["--connect", "tcp://127.0.0.1:1", "--keys", "/nonexistent-keys", "--name", "pi-a"],
     "fleet.agent: --keys: /nonexistent-keys is not a folder"),
])
def test_the_agent_program_exits_2_with_one_line_and_no_traceback(args, start):
    out = subprocess.run([sys.executable, "-m", "fleet.agent", *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(start), out.stderr


# --- 2. the profile is a catalog class -------------------------------------------------------------------------
def test_the_hub_refuses_a_hello_of_an_unknown_class_with_a_bye_that_says_why(kernel, ctx):
    h = Harness(kernel)
    try:
        sock = dealer(ctx, h.hub.endpoint)
        sock.send(protocol.encode("hello", {**HELLO, "device_class": "x|y,z", "device_name": "pi"}))
        h.pumpuntil(lambda: h.transport.rejected["device_class"] == 1)
        bye = frames(sock, "bye")
        assert bye["reason"] == f"unknown device class 'x|y,z' (known: {KNOWN})"
        assert h.transport.real == {} and h.transport.rejected == Counter({"device_class": 1})
        h.attach(sock)  # the same connection, with a catalog class: attached
        assert [(d.index, d.device_class) for d in h.transport.real.values()] == [(1, "rpi4_4gb")]
    finally:
        h.transport.close()


def test_an_agent_told_bye_before_any_welcome_prints_the_reason_and_exits_2(capsys):
    hub = ScriptedHub()
    try:
        sleeps = Sleeps()
        agent = ScriptedAgent(hub.endpoint, FakeClock(), sleeps)
        sleeps.agent = agent
        running = Running(agent)
        identity, hello = hub.recv()
        hub.send(identity, "bye", {"reason": "unknown device class 'bogus'"})
        assert running.join() == 2
    finally:
        hub.close()
    assert capsys.readouterr().err.splitlines() == [
        f"fleet.agent: the hub at {hub.endpoint} refused this device: unknown device class 'bogus'"]


# --- 3. wrong keys ------------------------------------------------------------------------------------------------
def test_no_device_attached_says_how_many_handshakes_and_hellos_were_refused():
    rejected = Counter({"auth_bad_crypto": 3, "auth_unknown_key": 1, "device_class": 2, "stale_task": 5})
    assert rejections_hint(rejected) == (
        "; 4 CURVE handshakes refused (1 unknown_key: a device's certificate is not in keys_dir/allowed; "
        "3 bad_crypto: an agent has another hub's server.key); 2 hellos refused (2 device_class: an agent's "
        "--profile is not a catalog class)")
    assert rejections_hint(Counter({"auth_not_curve": 1})) == (
        "; 1 CURVE handshake refused (1 not_curve: an agent runs without --keys)")
    assert rejections_hint(Counter({"stale_task": 2})) == ""


def test_wait_for_devices_names_the_refusals_when_nobody_attached():
    class Nobody:  # a transport no device ever reaches
        first_real, real, endpoint, admit = 1, {}, "tcp://127.0.0.1:5555", None
        rejected = Counter({"auth_bad_crypto": 2})

        def __init__(self) -> None:
            self.now_s = 0.0

        def clock(self) -> float:
            return self.now_s

        def pump(self, timeout_s: float) -> None:
            self.now_s += max(timeout_s, 0.05)

    with pytest.raises(SessionError) as error:
        wait_for_devices(Nobody(), 1, wait_s=1.0)
    assert str(error.value) == (
        "bridge: no real device attached to tcp://127.0.0.1:5555 within 1 s; 2 CURVE handshakes refused "
        "(2 bad_crypto: an agent has another hub's server.key)")


def _curve_agent(endpoint, keys_dir, name, attempts):
    """An agent that never sleeps its back-off and gives up after ``attempts`` connections."""
    return Agent(endpoint, "rpi4_4gb", name, keys=str(keys_dir), heartbeat_interval_s=0.5, liveness=2,
                 max_reconnects=attempts, flops_per_s=1e9, sleep=lambda _s: None)


@pytest.mark.parametrize("wrong, cause, hint", [
    ("server_key", "bad_crypto", "the CURVE handshake with {endpoint} failed: {keys}/server.key is probably not "
                                 "this hub's public key (or the hub does not use CURVE)"),
    ("not_allowed", "unknown_key", "the hub at {endpoint} refused this device's key: its certificate pi-x.key "
                                   "is not in the hub's keys/allowed folder (python -m fleet.keys)"),
])
def test_an_agent_with_wrong_keys_says_why_and_costs_the_hub_one_handshake_per_attempt(keys, tmp_path, capsys,
                                                                                      wrong, cause, hint):
    import shutil

    from fleet.bridge.hub import Hub
    from fleet.bridge.security import ServerSecurity

    hub_keys, other = keys
    if wrong == "server_key":  # pi-a's key is allowed, but the agent holds another hub's server.key
        agent_keys, name = tmp_path / "agent", "pi-a"
        agent_keys.mkdir()
        shutil.copy(hub_keys / "pi-a.key_secret", agent_keys)
        shutil.copy(other / "server.key", agent_keys)
    else:  # the right server.key, but pi-x is not in the hub's allowed folder
        agent_keys, name = other, "pi-x"
        shutil.copy(hub_keys / "server.key", other / "server.key")
    security = ServerSecurity(hub_keys)
    hub = Hub("tcp://127.0.0.1:*", security=security)
    try:
        agent = _curve_agent(hub.endpoint, agent_keys, name, attempts=3)
        assert agent.run() == 1
        time.sleep(0.3)  # the monitor thread counts a few ms late
        by_cause = security.rejected_by_cause
    finally:
        hub.close()
    line = hint.format(endpoint=hub.endpoint, keys=agent_keys)
    assert capsys.readouterr().err.splitlines() == [f"fleet.agent: {line}; reconnecting in {s:g} s"
                                                    for s in (1, 2)] + [
        f"fleet.agent: no welcome from {hub.endpoint} on 3 connections in a row; giving up ({line})"]
    assert by_cause[cause] == 3  # one per connection the agent tried (libzmq alone retried every 0.1 s)
    assert sum(by_cause.values()) <= 4  # at most one more, counted "aborted", when a close races a retry


# --- 4. a clean start -----------------------------------------------------------------------------------------------
def test_one_failed_connection_is_singular(capsys):
    import torch

    threads = torch.get_num_threads()
    try:
        status = main(["--connect", "tcp://127.0.0.1:1", "--name", "pi-z", "--threads", "1",
                       "--heartbeat-interval-s", "0.02", "--liveness", "1", "--max-reconnects", "1"])
    finally:
        torch.set_num_threads(threads)
    assert status == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        "fleet.agent: no welcome from tcp://127.0.0.1:1 on 1 connection in a row; giving up")


def test_a_welcome_loads_without_the_non_writable_array_warning():
    from fleet.bridge.runner import load_welcome

    welcome = protocol.decode(protocol.encode("welcome", {
        "device": 1, "heartbeat_interval_s": 1.0, "liveness": 3,
        "algorithm": {"name": "fedavg", "params": {"model": "mlp_small"}},
        "dataset": {"name": "digits", "partition": np.arange(5, dtype=np.int64)}}))
    assert not welcome.body["dataset"]["partition"].flags.writeable  # what the codec gives
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, data = load_welcome(welcome.body, None)
    assert len(data) == 5


# --- 5. a task for a device the hub knows is gone ----------------------------------------------------------------
def test_a_task_for_a_purged_device_goes_to_nobody_and_the_device_has_left(kernel):
    transport, hub, _, heard, lost = _fake_bridge(kernel, first_real=0)
    transport.purge(transport.real[2])
    kernel.env.run(until=3.0)
    transport.send(_task(7, 2))
    assert hub.due == [] and transport.pending == {}  # nothing sent, nothing awaited
    kernel.env.run(until=4.0)
    assert heard == [(3.0, Leave(2, 7, 0, "offline"))] and lost == []
    assert kernel.recorder.rows[-1] == (3.0, "dropout", 0, 2, 7, "offline") + (None,) * 8


def test_a_purged_device_is_unreachable_until_it_is_alive_again(kernel):
    transport, _, _, _, _ = _fake_bridge(kernel, first_real=1)
    assert transport.unreachable() == []
    transport.purge(transport.real[2])
    assert transport.unreachable() == [2]
    transport.real[2].alive = True  # back on its connection
    assert transport.unreachable() == []
