"""A simulated task as a chain of steps: its download, the device's work and its upload, without a process.

The reference is one SimPy process per task (``SimulatedNetwork.send`` with any device handler; the
generator ``SimulatedNetwork._carry`` and ``SimulatedDevices._run``). A ``TaskRun`` does the same work in
callbacks on ``fleet.core.steps`` steps, scheduling what the process schedules at the moments it does:

* ``Initialize`` of the process (urgent, at the send) -> ``_started``;
* a granted request for the gateway's medium -> ``_granted``; the airtime's timeout -> ``_aired``; the
  release of the medium -> a ``Medium`` step; the rest of the hop (silences, retries, latencies,
  backhaul) -> ``_arrived``;
* the device's compute (or its interruption) -> ``_computed``; then the upload, as the download, except
  that an update's upload the device cannot finish (``SimulatedDevices.upload_stop``) holds the medium
  only until it stops -> ``_cut``.

The process's own end event is the one thing not scheduled: nobody waits for it (``send``'s event fires
only if someone attached a callback to it by then). So every other event keeps its place in SimPy's loop,
equal-time order included, and the event log is byte for byte the reference's (``tests/sim/test_chain.py``
runs both on the same scenarios). ``Medium`` is ``simpy.Resource``'s FIFO with the same grant and release
events, for both paths.
"""

from __future__ import annotations

from collections import deque
from heapq import heappush
from typing import TYPE_CHECKING, Callable

from fleet.core.messages import Message, Task, Update
from fleet.core.steps import NORMAL, URGENT, Step, schedule, schedule_at
from fleet.core.transport import Delivery

if TYPE_CHECKING:
    import simpy

    from fleet.sim.devices import SimulatedDevices
    from fleet.sim.network import SimulatedNetwork

__all__ = ["Medium", "TaskRun", "start"]


class _Release(Step):
    __slots__ = ()


class Medium:
    """A gateway's shared medium: ``capacity`` transmissions at once, the rest wait first come, first served.

    The events of ``simpy.Resource``, at the same moments: ``request(grant)`` queues ``grant`` and, as
    ``Resource`` does on every request, grants the head of the queue if a channel is free; a grant is the
    callable ``grant()``, which schedules the requester's "granted" event now. ``release()`` frees a
    channel at once and schedules a release event, whose processing grants the head of the queue.

    A release event does something only if, when the loop reaches it, someone waits and a channel is
    free. Told where the loop is (``at``, the key of the step being processed), the medium takes the
    release's place in the loop (its eid) but puts it on the queue only once that can happen before the
    loop passes it: when a change leaves someone waiting with a channel free. Until then nothing waits or
    no channel is free, so the release would have done nothing. Without ``at`` (a process's transfer) every
    release is scheduled; a medium serves one kind of caller or the other."""

    __slots__ = ("_env", "_capacity", "_users", "_queue", "_pending", "_on_release")

    def __init__(self, env: simpy.Environment, capacity: int) -> None:
        self._env = env
        self._capacity = capacity
        self._users = 0
        self._queue: deque[Callable[[], None]] = deque()
        self._pending: deque[tuple] = deque()  # places of releases not (yet) on the queue, in loop order
        self._on_release = [self._trigger]  # the callbacks of every release step (read, never changed, by the loop)

    def request(self, grant: Callable[[bool], None], at: tuple | None = None, tail: bool = False) -> None:
        """Queue ``grant``; grant the head if a channel is free. ``tail``: the caller does nothing after this
        call but return to the loop, and so does the grant it makes (``grant(True)``)."""
        queue = self._queue
        if not queue and self._users < self._capacity:  # the head at once: what _grant_head would do
            self._users += 1
            head = grant
        else:
            queue.append(grant)
            head = self._grant_head()
        if at is not None and self._pending:
            self._settle(at)  # schedules no eid: it may come before the grant, as the grant's push is last
        if head is not None:
            head(tail)

    def release(self, at: tuple | None = None, defer: bool = False) -> tuple | None:
        """Free a channel now. With ``defer``, when the release event would be the loop's next one
        (``is_next``), it is not scheduled: its place is returned, and the caller calls ``trigger(place)``
        as its last act (after its other scheduling, which cannot come before it)."""
        self._users -= 1
        env = self._env
        key = (env._now, NORMAL, next(env._eid))
        if at is None:
            self._schedule(key)
            return None
        pending = self._pending
        if self._queue:
            if pending:
                self._settle(at)  # schedules no eid: the same whether before or after the release's push
            if defer:  # is_next(env, key[0]), inline (every transfer)
                queue = env._queue
                if not queue or queue[0][0] > key[0] or (queue[0][0] == key[0] and queue[0][1] > NORMAL):
                    return key
            self._schedule(key)
            return None
        pending.append(key)  # nobody waits, so it cannot grant: only forget the releases the loop passed
        while pending[0] < at:  # (this one, newer than ``at``, stays)
            pending.popleft()
        return None

    def trigger(self, at: tuple) -> None:
        """What the loop does at a release event's place ``at`` (a place ``release`` returned)."""
        queue, head = self._queue, None
        if queue and self._users < self._capacity:  # ``_grant_head``, inline (most tasks)
            self._users += 1
            head = queue.popleft()
        if self._pending:
            self._settle(at)
        if head is not None:
            head(True)

    def _schedule(self, key: tuple) -> None:
        step = _Release()
        step.callbacks = self._on_release
        schedule_at(self._env, step, key)

    def _trigger(self, step: _Release) -> None:
        self.trigger(step.key)

    def _grant_head(self) -> Callable[[bool], None] | None:
        """``Resource._trigger_put``: look at the head of the queue only, take a channel for it if one is
        free; its grant, for the caller to make (after its other scheduling: a grant takes the next eid)."""
        if self._queue and self._users < self._capacity:
            self._users += 1
            return self._queue.popleft()
        return None

    def _settle(self, at: tuple) -> None:
        """Forget the releases the loop has passed; schedule the others if one of them can now grant."""
        pending = self._pending
        while pending and pending[0] < at:
            pending.popleft()
        if pending and self._queue and self._users < self._capacity:
            while pending:
                self._schedule(pending.popleft())


class _Starts(Step):
    """The ``Initialize`` events of tasks sent one after the other at one instant (consecutive eids: nothing
    else was scheduled between them), processed as one step: in the loop they follow each other too."""

    __slots__ = ("runs", "last_eid")

    def __init__(self, env: simpy.Environment, run: TaskRun) -> None:
        self.runs = [run]
        self.callbacks = [self._start]
        schedule(env, self, 0, URGENT)
        self.last_eid = self.key[2]

    def join(self, env: simpy.Environment, run: TaskRun) -> bool:
        """Take ``run`` if its ``Initialize`` would come right after the last one taken (it takes its eid)."""
        eid = next(env._eid)
        if self.callbacks is None or eid != self.last_eid + 1 or env._now != self.key[0]:
            return False
        self.runs.append(run)
        self.last_eid = eid
        return True

    def _start(self, step: _Starts) -> None:
        at, runs = step.key, self.runs
        last = runs[-1]
        for run in runs:
            run.begin(run.task, False, at, run is last)


class TaskRun(Step):
    """One task, from the server's send to the server hearing back (see the module docstring).

    ``done`` is what ``send`` returned: it fires (is scheduled) at the end only if someone is waiting on it,
    with the download's ``Delivery`` (None when the download was lost), as the reference process would; None
    when nobody can wait (``send_many``).
    Each stage is a plain function of the run (``callbacks`` holds it: the loop calls it with the run)."""

    __slots__ = ("net", "env", "devices", "task", "device", "route", "medium", "done",
                 "down_sent_s", "down_link_s", "down_queue_s", "down_size", "msg", "to_server", "size", "hold_s",
                 "rest_s", "lost", "tx_bytes", "sent_s", "queue_s", "state", "compute_s", "t0", "stop_s", "cause",
                 "grant_s", "upload", "fuse")

    def __init__(self, net: SimulatedNetwork, devices: SimulatedDevices, task: Task,
                 done: simpy.Event | None) -> None:
        self.net, self.env, self.devices, self.task, self.done = net, net._env, devices, task, done
        device = self.device = task.device
        route = self.route = net._routes.get(device) or net.route(device)  # made at the device's first message
        self.medium = route.medium
        self.down_link_s = None  # the download has not arrived (yet)
        self.fuse = net._fuses  # may a stage run at once (``_then``)?

    # --- the network's part: one transfer (``SimulatedNetwork._carry``) --------------------------------------
    def begin(self, msg: Message, to_server: bool, at: tuple, tail: bool = True) -> None:
        """Start carrying ``msg`` (to the server, or to the device), now; ``at`` is the loop's place. Unless
        ``tail`` is False, the caller does nothing after this call but return to the loop (see ``_then``)."""
        self.msg, self.to_server = msg, to_server
        self.size, self.hold_s, self.rest_s, self.lost, self.tx_bytes = self.net._plan(msg, self.route, to_server)
        self.upload = to_server and type(msg) is Update
        env = self.env
        self.sent_s = env._now
        if self.medium is not None:
            self.medium.request(self._grant, at, tail)
        else:
            self.queue_s = 0.0
            self._hold(env._now, tail)

    def _then(self, delay: float, stage: list) -> None:
        """Schedule ``stage`` (the run's next) ``delay`` seconds from now; the caller does nothing after this
        call but return to the loop. So when nothing on the queue comes before the step (``fleet.core.steps.
        is_next``, inline), the loop would process it next: run it at once, at its time and with its eid, and
        skip the push and the pop. Only under an environment that allows it (``fuses``; a paced one does not)."""
        env = self.env
        t, eid = env._now + delay, next(env._eid)
        self.key = (t, NORMAL, eid)
        if self.fuse:
            queue = env._queue
            if not queue:
                env._now = t
                stage[0](self)
                return
            head = queue[0]
            if head[0] > t or (head[0] == t and head[1] > NORMAL):
                env._now = t
                stage[0](self)
                return
        self.callbacks = stage
        heappush(env._queue, (t, NORMAL, eid, self))

    def _grant(self, tail: bool) -> None:
        """The medium granted the request now: the granted step (``_then(0, _GRANTED)`` when ``tail``, inline:
        about two a task)."""
        env = self.env
        t, eid = env._now + 0, next(env._eid)
        self.key = (t, NORMAL, eid)
        if tail and self.fuse:
            queue = env._queue
            if not queue or queue[0][0] > t or (queue[0][0] == t and queue[0][1] > NORMAL):
                env._now = t
                self._granted()
                return
        self.callbacks = _GRANTED
        heappush(env._queue, (t, NORMAL, eid, self))

    def _granted(self) -> None:
        now = self.env._now
        self.queue_s = now - self.sent_s
        if self.upload and self.state.cuttable:
            self._hold(now, True)
        else:  # no cut to ask about (a download, a device that cannot go silent): ``_hold``, inline
            self._then(self.hold_s, _AIRED)

    def _hold(self, now: float, tail: bool) -> None:
        """Hold the medium for the airtime, or, for an update the device cannot finish sending, until it stops.
        ``tail``: the caller does nothing after this call (``_then``)."""
        env, delay, then = self.env, self.hold_s, _AIRED
        if self.upload and self.state.cuttable:  # ``upload_stop`` is None for a device that cannot go silent
            stop = self.devices.upload_stop(self.msg, self.sent_s, now, self.hold_s, self.tx_bytes)
            if stop is not None:
                self.grant_s, self.cause = now, stop[1]
                delay, then = stop[0] - now, _CUT
        if tail:
            self._then(delay, then)
            return
        t, eid = now + delay, next(env._eid)
        self.key, self.callbacks = (t, NORMAL, eid), then
        heappush(env._queue, (t, NORMAL, eid, self))

    def _cut(self) -> None:
        if self.medium is not None:
            self.medium.release(self.key)
        devices = self.devices
        self.net.report_silence(devices.upload_cut(self.msg, self.cause, self.grant_s, self.hold_s, self.tx_bytes),
                                devices.failure_detection_s)
        self.end()

    def _aired(self) -> None:
        medium = self.medium
        release = None if medium is None else medium.release(self.key, self.fuse)
        if self.upload:
            self.devices.upload_aired(self.msg, self.tx_bytes)
        if release is None:
            self._then(self.rest_s, _ARRIVED)
            return
        env = self.env  # the release comes next: the arrival goes on the queue, then the release is processed
        t, eid = env._now + self.rest_s, next(env._eid)
        self.key, self.callbacks = (t, NORMAL, eid), _ARRIVED
        heappush(env._queue, (t, NORMAL, eid, self))
        medium.trigger(release)

    def _arrived(self) -> None:
        net, now = self.net, self.env._now
        if self.lost:
            net._loss_handler(self.msg, self.device)
            self.end()
            return
        link_s = now - self.sent_s - self.queue_s
        if self.to_server:
            net._server_handler(self.msg, Delivery(self.sent_s, link_s, self.queue_s, self.size))
            if self.done is not None:  # ``end`` does nothing else (every task)
                self.end()
        else:
            self.down_sent_s, self.down_link_s, self.down_queue_s, self.down_size = (self.sent_s, link_s,
                                                                                      self.queue_s, self.size)
            self.devices._arrive(self, now)

    # --- the device's part calls these -----------------------------------------------------------------------
    #: ``wait(delay, then)``: call ``then[0](run)`` ``delay`` seconds from now (a timeout in the reference
    #: process); the caller does nothing after this call but return to the loop. ``_then`` itself, not a call
    #: more (once a task).
    wait = _then

    def end(self) -> None:
        """The reference process returns: its event fires, if anyone waits for it."""
        done = self.done
        if done is None:
            return
        done._ok = True
        done._value = None if self.down_link_s is None else Delivery(self.down_sent_s, self.down_link_s,
                                                                     self.down_queue_s, self.down_size)
        if done.callbacks:
            self.env.schedule(done)
        else:
            done.callbacks = None  # processed: nobody was waiting, and nobody will be scheduled for it


_GRANTED, _AIRED, _ARRIVED, _CUT = [TaskRun._granted], [TaskRun._aired], [TaskRun._arrived], [TaskRun._cut]


def start(run: TaskRun, starts: _Starts | None) -> _Starts:
    """Schedule ``run``'s ``Initialize``: in ``starts`` if it directly follows the last one there, else in a
    new ``_Starts`` (returned, for the next send to join)."""
    env = run.env
    if starts is not None and starts.join(env, run):
        return starts
    return _Starts(env, run)
