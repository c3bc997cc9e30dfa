"""The agent a physical device runs to join a simulated fleet:

    python -m fleet.agent --connect tcp://HOST:PORT [--profile NAME] [--keys DIR] [--data DIR] [--name NAME]
                          [--threads N] [--max-reconnects N] [--heartbeat-interval-s S] [--liveness N]

It says ``hello`` (its device class, measured free memory and a quick measured FLOP/s), receives a
``welcome`` (its device index, the algorithm, its data partition and the hub's liveness settings), then runs
every ``task`` it gets with the project's own algorithms and replies with the update and what it measured, or
a refusal (``fleet.bridge.runner``, which holds everything the agent computes; this module is the socket).

Liveness (docs/protocol.md section 6): once welcomed, the agent heartbeats every ``heartbeat_interval_s``
*of the welcome* and counts the hub gone after ``liveness`` silent intervals *of the welcome*; its own
settings (``--heartbeat-interval-s``, ``--liveness``) only bound the wait for a welcome. Only a frame that
decodes counts as a sign of life.

Reconnect: when the hub is silent (or never welcomes it) the agent **closes its socket first** (dropping a
queued ``hello``, which the hub must never attach from), then sleeps 1, 2, 4 ... seconds (capped at
``MAX_BACKOFF_S``, 32 s) and says ``hello`` again under the same name on a new socket. A task it is working
on survives the reconnect: its answer goes out once the new ``welcome`` arrives. A task repeated on the same
connection is ignored; one re-sent after a reconnect whose answer was already sent gets that answer again.

Handshake failures (CURVE): the agent watches its socket's handshakes; when the hub refuses one (this
device's certificate is not in the hub's ``allowed/`` folder) or it fails (``server.key`` is not this hub's
key, or the hub does not speak CURVE), it closes the socket at once, says the likely cause in one line and
backs off as for a silent hub. Closing at once means the hub counts about one failed handshake per attempt
(left open, libzmq would retry the handshake every 0.1 s or so).

Exit: status 0 on ``bye`` (the run finished) or Ctrl-C; status 1, with one line on stderr, after
``--max-reconnects`` connections in a row brought no welcome (default 10, about 4 minutes with the default
settings; 0 means try for ever); status 2, with one line, when an option is wrong (an unknown ``--profile``,
an address ZeroMQ cannot parse, a keys folder without this device's keys), when the welcome asks for what it
cannot run (an unknown algorithm, a dataset it does not hold), or when the hub says ``bye`` before the
first welcome (it refused the ``hello``; its reason is printed).

Threads: torch uses ``--threads`` if given, else what ``OMP_NUM_THREADS`` says (torch reads it), else
torch's own default; the agent never raises it.
"""

from __future__ import annotations

import collections
import sys
import time
from typing import Callable

import zmq
from zmq.utils.monitor import recv_monitor_message

from fleet.bridge.protocol import CURVE_OVERHEAD_BYTES
from fleet.bridge.runner import (
    CannotJoin,
    free_memory_bytes,
    load_welcome,
    measured_flops_per_s,
    run_task,
)

AGENT_VERSION = "fleet.agent 2"
HEARTBEAT_INTERVAL_S = 2.0  # the agent's own settings, used until a welcome brings the hub's
LIVENESS = 5  # silent intervals; 2 s x 5 = 10 s survives the TCP stalls of a lossy Wi-Fi link (docs/bridge.md)
FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 32.0  # docs/protocol.md section 6 states the same cap
MAX_RECONNECTS = 10  # connections in a row without a welcome before the agent gives up (0: never)
POLL_S = 0.05  # the socket loop's longest wait: how soon a finished task's answer goes out
ANSWERS_KEPT = 64  # answered task ids remembered, to ignore repeats
RECONNECT_IVL_MS = 500  # libzmq's reconnect interval on one socket (its default, 100 ms, races the close)

Clock = Callable[[], float]

_HANDSHAKE_EVENTS = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                     | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH)


def handshake_hint(cause: str, connect: str, keys: str | None, name: str) -> str:
    """One line saying why a CURVE handshake with the hub failed, and what to check."""
    if cause == "refused":
        return (f"the hub at {connect} refused this device's key: its certificate {name}.key is not in the "
                "hub's keys/allowed folder (python -m fleet.keys)")
    return (f"the CURVE handshake with {connect} failed: {keys}/server.key is probably not this hub's public "
            "key (or the hub does not use CURVE)")


class HubLiveness:
    """The agent's view of the hub's liveness, on an injected clock (seconds).

    ``heard()`` when a frame from the hub decodes; ``dead()`` once more than ``liveness * interval_s`` has
    passed since (or since ``reset()``); ``beat_due()`` is True at most once per ``interval_s`` and says
    when to send a heartbeat. ``adopt(interval_s, liveness)`` takes the welcome's settings."""

    def __init__(self, interval_s: float, liveness: int, clock: Clock = time.monotonic) -> None:
        self.interval_s, self.liveness, self.clock = float(interval_s), int(liveness), clock
        self.reset()

    def reset(self) -> None:
        self.last_heard_s = self.last_beat_s = self.clock()

    def adopt(self, interval_s: float, liveness: int) -> None:
        self.interval_s, self.liveness = float(interval_s), int(liveness)

    def heard(self) -> None:
        self.last_heard_s = self.clock()

    @property
    def limit_s(self) -> float:
        """The silence after which the hub counts as gone, in seconds."""
        return self.liveness * self.interval_s

    def dead(self) -> bool:
        return self.clock() - self.last_heard_s > self.limit_s

    def beat_due(self) -> bool:
        now = self.clock()
        if now - self.last_beat_s >= self.interval_s:
            self.last_beat_s = now
            return True
        return False


class Backoff:
    """Waits before reconnecting: ``first_s``, then doubling, capped at ``cap_s``; ``reset()`` after a
    welcome."""

    def __init__(self, first_s: float = FIRST_BACKOFF_S, cap_s: float = MAX_BACKOFF_S) -> None:
        self.first_s, self.cap_s = first_s, cap_s
        self.reset()

    def reset(self) -> None:
        self._next_s = self.first_s

    def next_s(self) -> float:
        wait_s = min(self._next_s, self.cap_s)
        self._next_s = min(2 * self._next_s, self.cap_s)
        return wait_s


class Agent:
    """One device's agent (module docstring). ``clock`` and ``sleep`` are injected for tests; so is
    ``flops_per_s`` (measured with torch when None)."""

    def __init__(self, connect: str, profile: str, name: str, data_dir: str | None = None,
                 keys: str | None = None, heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S,
                 liveness: int = LIVENESS, max_backoff_s: float = MAX_BACKOFF_S,
                 max_reconnects: int = MAX_RECONNECTS, *, flops_per_s: float | None = None,
                 clock: Clock = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.connect, self.profile, self.name = connect, profile, name
        self.data_dir, self.keys = data_dir, keys
        self.join_interval_s, self.join_liveness = heartbeat_interval_s, liveness
        self.max_reconnects, self.clock, self.sleep = max_reconnects, clock, sleep
        self.hub = HubLiveness(heartbeat_interval_s, liveness, clock)
        self.backoff = Backoff(cap_s=max_backoff_s)
        self.context = zmq.Context()
        self.socket: zmq.Socket | None = None
        self.connection = 0  # counts sockets opened; answers remember the one they went out on
        self.welcomed = False  # on the current connection
        self.ever_welcomed = False  # on any connection: a ``bye`` before the first welcome is a refusal
        self.algorithm = None
        self.data = None
        self.flops_per_s = measured_flops_per_s() if flops_per_s is None else flops_per_s
        self.pending: dict[int, object] = {}  # task_id -> future of its answer, in arrival order
        self.answered: collections.OrderedDict[int, tuple] = collections.OrderedDict()  # id -> (reply, conn)
        self.welcome_job = None
        self.security = None
        if keys is not None:
            from fleet.bridge.security import ClientSecurity

            self.security = ClientSecurity(keys, name)  # KeyFileError names the missing or bad file
        self.monitor: zmq.Socket | None = None
        self.handshakes_ok = 0  # on the current connection
        self.handshake_failure: str | None = None  # "refused" or "failed": why the last connection ended
        self.refusal: str | None = None  # the reason of a ``bye`` before any welcome

    # --- the socket -------------------------------------------------------------------------------------
    def _open(self) -> None:
        from fleet.bridge import protocol

        self._close()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        # libzmq's own retry after a failed handshake comes this long after it, well after the loop (which
        # looks every POLL_S) has closed the socket: one failed handshake per connection the agent tries.
        self.socket.setsockopt(zmq.RECONNECT_IVL, RECONNECT_IVL_MS)
        overhead = CURVE_OVERHEAD_BYTES if self.keys is not None else 0  # the frame limit is the protocol's
        self.socket.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_MESSAGE_BYTES + overhead)
        self.handshakes_ok, self.handshake_failure = 0, None
        if self.security is not None:
            self.security.apply(self.socket)
            self.monitor = self.socket.get_monitor_socket(_HANDSHAKE_EVENTS)
        self.socket.connect(self.connect)
        self.connection += 1
        self.welcomed = False
        self.hub.adopt(self.join_interval_s, self.join_liveness)
        self.hub.reset()
        self._send("hello", {"device_class": self.profile, "free_memory_bytes": free_memory_bytes(),
                             "flops_per_s": self.flops_per_s, "agent_version": AGENT_VERSION,
                             "device_name": self.name})

    def _close(self) -> None:
        """Close the socket at once (LINGER 0): what it still queued, a ``hello`` included, is dropped."""
        if self.monitor is not None:
            self.socket.disable_monitor()
            self.monitor.close(0)
            self.monitor = None
        if self.socket is not None:
            self.socket.close(0)
            self.socket = None

    def _handshake_failed(self) -> str | None:
        """Read the socket's handshake events: ``"refused"`` (the hub's ZAP handler said no to this key),
        ``"failed"`` (no CURVE agreement: a wrong ``server.key``, or a plain hub), else None."""
        while self.monitor is not None and self.monitor.poll(0):
            event = recv_monitor_message(self.monitor)["event"]
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.handshakes_ok += 1
            elif event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                return "refused"
            elif self.handshakes_ok == 0:  # before any success: the keys; after one, a dropped link
                return "failed"
        return None

    def _send(self, kind: str, body: dict) -> None:
        from fleet.bridge import protocol

        try:  # the hub checks every frame; a full queue means a dead link, which liveness will find
            self.socket.send(protocol.encode(kind, body, self_check=False), zmq.NOBLOCK)
        except zmq.Again:
            pass

    # --- the work (on the worker thread) ------------------------------------------------------------------
    def _welcome(self, body: dict) -> None:
        self.algorithm, self.data = load_welcome(body, self.data_dir)

    def _task(self, body: dict) -> tuple[str, dict]:
        """Run one task; return the answer to send."""
        return run_task(self.algorithm, self.data, body)

    # --- the loop -------------------------------------------------------------------------------------------
    def _on_task(self, worker, body: dict) -> None:
        task_id = int(body["task_id"])
        if task_id in self.pending:
            return  # already working on it
        if task_id in self.answered:
            reply, connection = self.answered[task_id]
            if connection != self.connection:  # re-sent after a reconnect: the answer may have been lost
                self._send(*reply)
                self.answered[task_id] = (reply, self.connection)
            return
        self.pending[task_id] = worker.submit(self._task, body)

    def _flush(self) -> None:
        """Send the answers that are ready, in arrival order, once this connection is welcomed."""
        while self.welcomed and self.pending:
            task_id, future = next(iter(self.pending.items()))
            if not future.done():
                return
            del self.pending[task_id]
            reply = future.result()
            self._send(*reply)
            self.answered[task_id] = (reply, self.connection)
            while len(self.answered) > ANSWERS_KEPT:
                self.answered.popitem(last=False)

    def _session(self, worker) -> str:
        """One connection: ``hello``, then frames until ``bye`` (returns "bye"), silence ("silent") or a
        failed CURVE handshake ("handshake", the cause in ``handshake_failure``)."""
        from fleet.bridge import protocol

        self._open()
        while True:
            if self.welcome_job is not None and self.welcome_job.done():
                job, self.welcome_job = self.welcome_job, None
                job.result()  # raises CannotJoin
            self._flush()
            self.handshake_failure = self._handshake_failed()
            if self.handshake_failure is not None:
                self._close()
                return "handshake"
            msg = None
            if self.socket.poll(int(POLL_S * 1000)):
                try:
                    msg = protocol.decode(self.socket.recv())
                except protocol.ProtocolError as error:  # not a sign of life (docs/protocol.md section 7)
                    print(f"fleet.agent: rejected a frame from the hub ({error.reason})", file=sys.stderr)
            if msg is not None:
                self.hub.heard()
                if msg.kind == "welcome":
                    self.hub.adopt(msg.body["heartbeat_interval_s"], msg.body.get("liveness", 3))
                    self.welcomed = self.ever_welcomed = True
                    self.backoff.reset()
                    self.welcome_job = worker.submit(self._welcome, msg.body)
                    self.hub.last_beat_s = -float("inf")  # answer at once: confirms this connection
                elif msg.kind == "task" and self.welcomed:
                    self._on_task(worker, msg.body)
                elif msg.kind == "bye":
                    if not self.ever_welcomed:  # the hub refused the hello and says why
                        self.refusal = str(msg.body.get("reason", "no reason given"))
                    return "bye"
            if self.welcomed and self.hub.beat_due():
                self._send("heartbeat", {"sent_s": self.clock()})
            if self.hub.dead():
                self._close()
                return "silent"

    def _why_no_session(self) -> str:
        """The line for a connection that ended without ``bye``: a failed handshake's cause, or silence."""
        if self.handshake_failure is not None:
            return handshake_hint(self.handshake_failure, self.connect, self.keys, self.name)
        silent = f"the hub at {self.connect} is silent"
        if self.security is not None and self.handshakes_ok == 0 and not self.welcomed:
            return (f"{silent} (no CURVE handshake completed: is the hub running there? a wrong server.key or "
                    "a key missing from the hub's allowed folder also looks like this)")
        return silent

    def run(self) -> int:
        """Connect, work, reconnect; the exit status (module docstring). Work (loading the data, local
        updates) runs on one worker thread, so heartbeats go on while the device computes."""
        from concurrent.futures import ThreadPoolExecutor

        worker = ThreadPoolExecutor(max_workers=1)
        failed = 0  # connections in a row that brought no welcome
        try:
            while True:
                try:
                    outcome = self._session(worker)
                except CannotJoin as error:
                    print(f"fleet.agent: cannot run what {self.connect} asks: {error}", file=sys.stderr)
                    return 2
                if outcome == "bye" and self.refusal is not None:
                    print(f"fleet.agent: the hub at {self.connect} refused this device: {self.refusal}",
                          file=sys.stderr)
                    return 2
                if outcome == "bye":
                    return 0
                failed = 0 if self.welcomed else failed + 1
                if self.max_reconnects and failed >= self.max_reconnects:
                    why = "" if self.handshake_failure is None else f" ({self._why_no_session()})"
                    print(f"fleet.agent: no welcome from {self.connect} on {failed} connection"
                          f"{'' if failed == 1 else 's'} in a row; giving up{why}", file=sys.stderr)
                    return 1
                wait_s = self.backoff.next_s()
                print(f"fleet.agent: {self._why_no_session()}; reconnecting in {wait_s:g} s", file=sys.stderr)
                self.sleep(wait_s)  # the socket is closed: nothing queued on it can reach the hub
        finally:
            self._close()
            worker.shutdown(wait=False, cancel_futures=True)
            self.context.term()
