"""The hub's socket: one ZeroMQ ROUTER serviced by a thread of its own, whatever the event loop is doing.

Why a thread (issue 8, defect 14): the event loop also aggregates, which takes seconds of torch work on a
loaded machine. Were the socket serviced only between events, the hub would send no heartbeat and read no
frame meanwhile, and every agent (and the hub's own liveness clock) would take the silence for a death.
So ``Hub`` owns the socket from its I/O thread alone (ZeroMQ sockets are not thread-safe): the thread
reads, decodes, counts, keeps liveness and sends heartbeats on time; the event loop gets decoded frames
and expiries from a queue (``poll``) and hands frames to send to the thread (``send``). Liveness therefore
measures the peer's silence, never the hub's computing.

Each turn of the I/O thread (``_turn``) reads at most ``max_frames_per_turn`` frames (libzmq's ROUTER
queues its peers fairly, so a batch is round-robin over them), then sends what the loop queued, heartbeats
when due, and expiries. A peer that sends more than ``flood_frames_per_s`` (its token bucket,
``FloodGuard``) has the excess dropped undecoded and counted as ``flooding``; one that keeps at it is
disconnected (its TCP connection is shut down; ``flooded`` in the ``poll`` events) and ignored.

Frame limit (the same in both modes): a frame may be ``max_message_bytes`` long, plain or CURVE. The ROUTER's
``ZMQ_MAXMSGSIZE`` is twice that plus CURVE's 33 bytes of framing per message (measured with libzmq 4.3.5),
so a frame up to twice the limit is read and counted as ``oversized``; a larger one makes libzmq close
that connection before buffering it, which the hub cannot tell from a hang-up (not counted).

Liveness and flood control take their clock as a parameter (``clock``, default ``time.monotonic``), so they
are tested with a fake clock.
"""

from __future__ import annotations

import logging
import os
import queue
import socket as _socket
import threading
import time
from collections import Counter
from typing import Callable, NamedTuple

import zmq

from fleet.bridge import protocol

__all__ = ["Liveness", "FloodGuard", "Incoming", "Hub"]

_log = logging.getLogger("fleet.bridge.hub")

Clock = Callable[[], float]


class Liveness:
    """Which peers are alive: each ``seen`` resets a peer's silence; ``expired`` returns (and forgets) the
    peers silent for more than ``liveness * interval_s``; ``beat_due`` says when a heartbeat round is due
    (every ``interval_s``, counted from the last one)."""

    def __init__(self, interval_s: float, liveness: int, clock: Clock = time.monotonic) -> None:
        self.interval_s, self.liveness, self.clock = interval_s, liveness, clock
        self.last_seen_s: dict[bytes, float] = {}
        self._last_beat_s = -float("inf")

    def track(self, peer: bytes) -> None:
        """Start watching ``peer`` (its silence counts from now)."""
        self.last_seen_s[peer] = self.clock()

    def forget(self, peer: bytes) -> None:
        self.last_seen_s.pop(peer, None)

    def seen(self, peer: bytes) -> None:
        """A frame from ``peer`` decoded: it is alive now (untracked peers are ignored)."""
        if peer in self.last_seen_s:
            self.last_seen_s[peer] = self.clock()

    def beat_due(self) -> bool:
        now = self.clock()
        if now - self._last_beat_s >= self.interval_s:
            self._last_beat_s = now
            return True
        return False

    def expired(self) -> list[bytes]:
        limit_s = self.liveness * self.interval_s
        now = self.clock()
        gone = [p for p, seen_s in self.last_seen_s.items() if now - seen_s > limit_s]
        for peer in gone:
            del self.last_seen_s[peer]
        return gone


class FloodGuard:
    """A token bucket per peer: ``rate_per_s`` frames a second, bursts up to ``rate_per_s``. ``admit``
    says ``"ok"``, ``"drop"`` (over budget: drop it undecoded) or ``"ban"`` (disconnect it; later calls
    say ``"drop"``). Each dropped frame adds one to the peer's debt, which drains at ``rate_per_s``; a
    peer is banned when its debt reaches ``ban_after``, so one that sends more than twice its rate for
    long enough is banned, and one that only bursts is merely slowed down."""

    def __init__(self, rate_per_s: float, ban_after: int, clock: Clock = time.monotonic) -> None:
        self.rate_per_s, self.ban_after, self.clock = rate_per_s, ban_after, clock
        self._state: dict[bytes, tuple[float, float, float]] = {}  # peer -> (tokens, debt, at_s)
        self.banned: set[bytes] = set()

    def admit(self, peer: bytes) -> str:
        if peer in self.banned:
            return "drop"
        now = self.clock()
        tokens, debt, at_s = self._state.get(peer, (self.rate_per_s, 0.0, now))
        refill = (now - at_s) * self.rate_per_s
        tokens, debt = min(self.rate_per_s, tokens + refill), max(0.0, debt - refill)
        if tokens >= 1.0:
            self._state[peer] = (tokens - 1.0, debt, now)
            return "ok"
        debt += 1.0
        self._state[peer] = (tokens, debt, now)
        if debt >= self.ban_after:
            self.banned.add(peer)
            del self._state[peer]
            return "ban"
        return "drop"


class Incoming(NamedTuple):
    """An event for the loop: a decoded frame (``message``), or an expiry or flood ban (``message`` None,
    ``event`` ``"expired"`` / ``"flooded"``). ``received_s`` is the hub clock when it happened; ``user_id``
    the CURVE name of the sender (None in plain mode)."""

    event: str  # "frame", "expired" or "flooded"
    identity: bytes
    message: protocol.Message | None
    received_s: float
    user_id: str | None = None


class Hub:
    """The ROUTER end of the bridge, serviced by its own thread (module docstring).

    ``security`` applies CURVE (``fleet.bridge.security.ServerSecurity``) or is None for plain TCP (only on
    loopback, checked by the caller). Peers are identified by their ROUTER routing id; ``track`` puts one
    under liveness (heartbeats go to tracked peers), ``forget`` takes it off. ``rejected`` counts every
    dropped frame by reason (the protocol's reasons, ``malformed`` for a multi-part message, ``flooding``),
    and whatever the caller adds with ``reject``."""

    def __init__(self, bind: str, heartbeat_interval_s: float = 1.0, liveness: int = 3,
                 max_message_bytes: int = protocol.MAX_MESSAGE_BYTES, security: object | None = None, *,
                 clock: Clock = time.monotonic, max_frames_per_turn: int = 256,
                 flood_frames_per_s: float = 500.0, flood_ban_after: int = 1000) -> None:
        self.heartbeat_interval_s, self.liveness = heartbeat_interval_s, liveness
        self.max_message_bytes, self.security, self.clock = max_message_bytes, security, clock
        self.max_frames_per_turn = max_frames_per_turn
        self._liveness = Liveness(heartbeat_interval_s, liveness, clock)
        self._guard = FloodGuard(flood_frames_per_s, flood_ban_after, clock)
        self._rejected: Counter = Counter()
        self._lock = threading.Lock()
        self._inbox: queue.SimpleQueue[Incoming] = queue.SimpleQueue()
        self._outbox: queue.SimpleQueue[tuple] = queue.SimpleQueue()
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.ROUTER)
        overhead = protocol.CURVE_OVERHEAD_BYTES if security is not None else 0
        self.socket.setsockopt(zmq.MAXMSGSIZE, 2 * max_message_bytes + overhead)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.ROUTER_MANDATORY, 0)
        if security is not None:
            security.apply(self.context, self.socket)
        try:
            self.socket.bind(bind)
        except zmq.ZMQError:
            self._close_socket()
            raise
        self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self._wake_in = self.context.socket(zmq.PAIR)
        self._wake_in.bind(f"inproc://fleet-hub-wake-{id(self)}")
        self._wake_out = self.context.socket(zmq.PAIR)
        self._wake_out.connect(f"inproc://fleet-hub-wake-{id(self)}")
        self._wake_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fleet-hub-io", daemon=True)
        self._thread.start()

    # --- the loop's side ------------------------------------------------------------------------------
    @property
    def rejected(self) -> Counter:
        """A copy of the counts of rejected frames, by reason."""
        with self._lock:
            return Counter(self._rejected)

    def reject(self, reason: str, detail: str = "") -> None:
        """Count a rejected frame under ``reason`` and log why (any thread)."""
        with self._lock:
            self._rejected[reason] += 1
        _log.warning("bridge: rejected a frame (%s)%s", reason, f": {detail}" if detail else "")

    def send(self, identity: bytes, kind: str, body: dict) -> None:
        """Queue a frame for ``identity``; the I/O thread sends it within a turn (dropped if the peer is
        gone: liveness reports it)."""
        frame = protocol.encode(kind, body, self.max_message_bytes, self_check=False)
        self._command("send", identity, frame)

    def track(self, identity: bytes) -> None:
        """Watch ``identity``'s liveness from now on and send it heartbeats."""
        self._command("track", identity)

    def forget(self, identity: bytes) -> None:
        self._command("forget", identity)

    def poll(self, timeout_s: float) -> list[Incoming]:
        """Events so far, waiting up to ``timeout_s`` for the I/O thread to take in something (frames it
        only counted as rejected end the wait too, and give no event)."""
        out = []
        try:
            out.append(self._inbox.get(timeout=timeout_s) if timeout_s > 0 else self._inbox.get_nowait())
        except queue.Empty:
            return out
        while True:
            try:
                out.append(self._inbox.get_nowait())
            except queue.Empty:
                return [e for e in out if e.event != "turn"]

    def receive(self, timeout_s: float) -> list[tuple[bytes, protocol.Message]]:
        """The decoded frames of ``poll(timeout_s)`` as (identity, message); other events are dropped."""
        return [(e.identity, e.message) for e in self.poll(timeout_s) if e.event == "frame"]

    def close(self, goodbye: list[bytes] = ()) -> None:
        """Send ``bye`` to ``goodbye``, stop the thread, close the socket."""
        for identity in goodbye:
            self.send(identity, "bye", {"reason": "run finished"})
        self._stop.set()
        self._command("stop", b"")
        self._thread.join()
        self._wake_out.close(0)
        self._close_socket()

    def _command(self, op: str, identity: bytes, frame: bytes = b"") -> None:
        self._outbox.put((op, identity, frame))
        with self._wake_lock:
            if not self._wake_out.closed:
                try:
                    self._wake_out.send(b"", zmq.NOBLOCK)
                except zmq.Again:  # a wake is a hint: the thread is gone (close) or has wakes queued already
                    pass

    def _close_socket(self) -> None:
        self.socket.close(0)
        if self.security is not None and hasattr(self.security, "stop"):
            self.security.stop()
        self.context.term()

    # --- the I/O thread ---------------------------------------------------------------------------------
    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        poller.register(self._wake_in, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                wait_ms = max(1, int(1000 * min(0.05, self.heartbeat_interval_s / 4)))
                ready = dict(poller.poll(wait_ms))
                if self._wake_in in ready:
                    while self._wake_in.poll(0):
                        self._wake_in.recv()
                if not self._turn():
                    return
        finally:
            while self._wake_in.poll(0):
                self._wake_in.recv()
            self._wake_in.close(0)

    def _turn(self) -> bool:
        """One turn: a bounded batch of frames, queued sends, heartbeats, expiries. False on ``stop``."""
        queued, read = self._inbox.qsize(), 0
        for read in range(1, self.max_frames_per_turn + 1):
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                read -= 1
                break
            self._take(frames)
        if read and self._inbox.qsize() == queued:  # all dropped: still wake a waiting ``poll``
            self._inbox.put(Incoming("turn", b"", None, self.clock()))
        while True:
            try:
                op, identity, frame = self._outbox.get_nowait()
            except queue.Empty:
                break
            if op == "stop":
                return False
            if op == "send":
                self._send_now(identity, frame)
            elif op == "track":
                self._liveness.track(identity)
            else:
                self._liveness.forget(identity)
        if self._liveness.beat_due():
            beat = protocol.encode("heartbeat", {"sent_s": self.clock()}, self_check=False)
            for identity in list(self._liveness.last_seen_s):
                self._send_now(identity, beat)
        for identity in self._liveness.expired():
            self._inbox.put(Incoming("expired", identity, None, self.clock()))
        return True

    def _take(self, frames: list) -> None:
        identity = frames[0].bytes
        verdict = self._guard.admit(identity)
        if verdict != "ok":
            self.reject("flooding") if verdict == "drop" else self._ban(identity, frames[-1])
            return
        if len(frames) != 2:
            self.reject("malformed", "not exactly one frame after the routing id")
            return
        payload = frames[1]
        try:
            msg = protocol.decode(payload.buffer, self.max_message_bytes)
        except protocol.ProtocolError as error:
            self.reject(error.reason, error.detail)
            return
        self._liveness.seen(identity)
        user_id = payload.get("User-Id") if self.security is not None else None
        self._inbox.put(Incoming("frame", identity, msg, self.clock(), user_id))

    def _ban(self, identity: bytes, frame) -> None:
        """Disconnect a flooding peer: shut its TCP (or IPC) connection down under libzmq, which then
        closes it (a DEALER reconnects under a new routing id and must earn its budget again)."""
        self.reject("flooding", "peer disconnected")
        self._liveness.forget(identity)
        self._inbox.put(Incoming("flooded", identity, None, self.clock()))
        try:
            fd = frame.get(zmq.SRCFD)
        except zmq.ZMQError:
            return
        if fd is not None and fd >= 0:
            try:
                with _socket.socket(fileno=os.dup(fd)) as conn:
                    conn.shutdown(_socket.SHUT_RDWR)
            except OSError:  # already closed
                pass

    def _send_now(self, identity: bytes, frame: bytes) -> None:
        try:
            self.socket.send_multipart([identity, frame], zmq.NOBLOCK)
        except zmq.ZMQError:  # peer gone or its queue full: liveness will purge it
            pass
