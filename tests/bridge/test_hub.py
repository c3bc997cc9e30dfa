"""The hub at its edges (issue 8): liveness and flood control on a fake clock, and a live hub on loopback
against busy loops, floods and oversized frames."""

from __future__ import annotations

import time

import numpy as np
import pytest
import zmq

import algorithms.local  # noqa: F401  (torch, imported once here rather than inside a timed wait)
from fleet.bridge import protocol
from fleet.bridge.hub import FloodGuard, Hub, Liveness
from fleet.bridge.protocol import CURVE_OVERHEAD_BYTES
from tests.bridge.live import HELLO, dealer, received, until


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


# --- liveness and flood control, on a fake clock ---------------------------------------------------------
def test_liveness_expires_a_peer_after_exactly_liveness_silent_intervals():
    clock = FakeClock()
    live = Liveness(interval_s=1.0, liveness=3, clock=clock)
    live.track(b"a")
    live.track(b"b")
    clock.now_s += 2.0
    live.seen(b"b")
    live.seen(b"stranger")  # untracked: ignored
    clock.now_s += 1.0  # a silent for exactly 3 intervals: not yet
    assert live.expired() == []
    clock.now_s += 0.001
    assert live.expired() == [b"a"]
    assert live.expired() == []  # reported once
    clock.now_s += 2.0
    assert live.expired() == [b"b"] and live.last_seen_s == {}


def test_heartbeats_are_due_every_interval_from_the_last_one():
    clock = FakeClock()
    live = Liveness(interval_s=0.5, liveness=3, clock=clock)
    assert live.beat_due()
    clock.now_s += 0.499
    assert not live.beat_due()
    clock.now_s += 0.001
    assert live.beat_due()
    assert not live.beat_due()


def test_flood_guard_admits_its_rate_drops_the_excess_and_bans_a_persistent_flooder():
    clock = FakeClock()
    guard = FloodGuard(rate_per_s=8.0, ban_after=5, clock=clock)  # binary fractions: exact tokens
    assert [guard.admit(b"f") for _ in range(8)] == ["ok"] * 8  # the burst
    assert [guard.admit(b"f") for _ in range(4)] == ["drop"] * 4
    clock.now_s += 0.125  # one token back, and one frame of debt (4) forgiven
    assert guard.admit(b"f") == "ok"
    assert [guard.admit(b"f") for _ in range(2)] == ["drop", "ban"]  # debt 3 + 2 = ban_after
    clock.now_s += 100.0
    assert guard.admit(b"f") == "drop"  # banned for good
    assert guard.admit(b"honest") == "ok"  # another peer has its own bucket


# --- a live hub --------------------------------------------------------------------------------------------
def test_a_busy_loop_neither_silences_the_hub_nor_expires_its_peers(ctx):
    """Defect 14: while the loop aggregates (here 2.5 s of torch work, as the learning plane's
    aggregation is), the hub's thread keeps reading and heartbeating. Margins for a loaded 2-core
    machine: the thread only has to beat within liveness x interval = 1 s, against 0.25 s nominal.
    (A loop of pure Python would starve the thread: each of its socket calls waits for the GIL.)"""
    import torch

    a = torch.randn(384, 384)
    interval_s, liveness = 0.25, 4
    hub = Hub("tcp://127.0.0.1:*", heartbeat_interval_s=interval_s, liveness=liveness)
    agent = dealer(ctx, hub.endpoint)
    try:
        agent.send(protocol.encode("hello", {**HELLO, "device_name": "pi"}))
        (hello,) = hub.poll(5.0)
        hub.track(hello.identity)
        beat = protocol.encode("heartbeat", {"sent_s": 0.0})
        heard, end, last_beat = [], time.monotonic() + 2.5, 0.0
        while time.monotonic() < end:  # the "aggregation": never calls poll
            a = torch.tanh(a @ a)  # one intra-op thread or several: torch drops the GIL while it computes
            while agent.poll(0):
                heard.append(time.monotonic())
                agent.recv()
            if time.monotonic() - last_beat >= interval_s:  # an honest agent beats at the interval: a frame
                agent.send(beat)                     # every turn of this loop would be a flood
                last_beat = time.monotonic()
        events = hub.poll(0.0)
        assert [e.event for e in events if e.event != "frame"] == []  # nobody expired
        assert len(heard) >= 4 and max(np.diff(heard)) < liveness * interval_s  # never silent that long
    finally:
        hub.close()


def test_a_flooding_peer_is_counted_and_disconnected_while_an_honest_one_keeps_its_heartbeats(ctx):
    """Defect 22: a peer firing junk as fast as it can does not starve the hub: the honest agent keeps
    getting heartbeats and is never expired; the flooder is counted, then disconnected."""
    hub = Hub("tcp://127.0.0.1:*", heartbeat_interval_s=0.1, liveness=5, flood_frames_per_s=200,
              flood_ban_after=400, max_frames_per_turn=64)
    honest, flooder = dealer(ctx, hub.endpoint), dealer(ctx, hub.endpoint)
    flooder.setsockopt(zmq.SNDHWM, 100_000)
    try:
        honest.send(protocol.encode("hello", {**HELLO, "device_name": "honest"}))
        (hello,) = hub.poll(5.0)
        hub.track(hello.identity)
        beat = protocol.encode("heartbeat", {"sent_s": 0.0})
        events, heard, end, next_beat = [], 0, time.monotonic() + 1.0, 0.0
        while time.monotonic() < end:
            for _ in range(200):
                try:
                    flooder.send(b"\xc1junk", zmq.NOBLOCK)
                except zmq.Again:
                    break
            if time.monotonic() >= next_beat:  # at most 50 a second, a quarter of the budget: honest however
                honest.send(beat)              # fast the loop spins (poll returns at once while events queue)
                next_beat = time.monotonic() + 0.02
            while honest.poll(0):
                honest.recv()
                heard += 1
            events += hub.poll(0.01)
        flooded = [e for e in events if e.event == "flooded"]
        assert [e.event for e in events if e.event not in ("frame", "flooded")] == []
        assert len(flooded) >= 1 and hello.identity not in {e.identity for e in flooded}
        assert hub.rejected["flooding"] >= 400 and heard >= 4
    finally:
        hub.close()


@pytest.mark.parametrize("curve", [False, True])
def test_the_frame_limit_is_the_same_with_curve_and_oversized_frames_are_counted(ctx, tmp_path, curve):
    """Defect 24: a frame of exactly ``max_message_bytes`` arrives in both modes; one byte more is
    counted as ``oversized`` and the connection stays up."""
    from fleet.bridge.keys import create_keys
    from fleet.bridge.security import ClientSecurity, ServerSecurity

    limit = 2000
    security = None
    if curve:
        create_keys(tmp_path, server=True, devices=["pi"])
        security = ServerSecurity(tmp_path)
    hub = Hub("tcp://127.0.0.1:*", heartbeat_interval_s=60, max_message_bytes=limit, security=security)
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if curve:
        ClientSecurity(tmp_path, "pi").apply(sock)
    sock.connect(hub.endpoint)
    try:
        short = protocol.encode("bye", {"reason": ""})
        exact = protocol.encode("bye", {"reason": "x" * (limit - len(short) - 2)})  # str8 -> str16: 2 bytes
        assert len(exact) == limit
        sock.send(exact)
        (got,) = received(hub)
        assert got[1]["reason"] == "x" * (limit - len(short) - 2)
        sock.send(exact + b"\x00")  # one byte over: counted, not a dropped connection
        sock.send(short)
        until(lambda: hub.rejected["oversized"] == 1)
        (after,) = received(hub)
        assert after[1].kind == "bye" and sum(hub.rejected.values()) == 1
        assert CURVE_OVERHEAD_BYTES == 33
    finally:
        sock.close(0)
        hub.close()
