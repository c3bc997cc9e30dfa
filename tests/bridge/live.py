"""Helpers for tests against a live hub on loopback: a DEALER socket, waiting on a condition, the frames a
hub or a socket took in, and a device's hello."""

from __future__ import annotations

import time

import zmq

from fleet.bridge import protocol
from fleet.bridge.hub import Hub


def dealer(ctx: zmq.Context, endpoint: str) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return sock


def until(condition, timeout_s: float = 5.0, step=lambda: time.sleep(0.01)) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        step()


def received(hub: Hub, count: int = 1, timeout_s: float = 10.0) -> list:
    """The next ``count`` decoded frames the hub took in; ``receive`` also returns early, empty, when the
    I/O thread only counted a rejection, so wait on the frames themselves."""
    got: list = []
    until(lambda: len(got) >= count or got.extend(hub.receive(0.1)) or len(got) >= count, timeout_s,
           step=lambda: None)
    assert len(got) == count, got
    return got


def frames(sock: zmq.Socket, kind: str, timeout_s: float = 5.0) -> protocol.Message:
    """The next frame of ``kind`` on ``sock``, skipping others (heartbeats)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if sock.poll(50):
            msg = protocol.decode(sock.recv())
            if msg.kind == kind:
                return msg
    raise AssertionError(f"no {kind} frame within {timeout_s} s")


HELLO = {"device_class": "rpi4_4gb", "free_memory_bytes": 2**30, "flops_per_s": 1e9, "agent_version": "1"}
