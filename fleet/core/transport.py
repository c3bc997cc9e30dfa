"""The transport seam: how messages travel between the coordinator and the devices.

Two ports, one per side:

* ``Transport``, the server's side: the coordinator attaches its handlers and sends tasks. The
  simulated network (``fleet.sim.network``), the ZeroMQ bridge (``fleet.bridge.transport``) and
  ``FunctionTransport`` (a function as a transport, for tests) implement it, so the coordinator
  cannot tell a simulated device from a real one.
* ``DeviceLink``, a simulated device's side: tasks arrive at the attached handler, replies go up
  with ``upload`` (a generator the device's own process runs, so one SimPy process carries a task
  from its download to its reply), and a device that falls silent is reported with
  ``report_silence``. The simulated network implements it; a real device's side is its agent, on
  the other end of the bridge's socket.

The device a message concerns is always ``msg.device``; the direction follows from the port.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, Generator, NamedTuple, Sequence

import simpy

from fleet.core.messages import Leave, Message, Task

__all__ = ["Delivery", "DeviceLink", "FunctionTransport", "Handler", "LossHandler", "Reply", "Transport"]


class Delivery(NamedTuple):
    """How a message travelled: when it was sent (virtual s), time on links (incl. retries) and time
    waiting for a shared medium (s), and its size on the wire.

    A named tuple rather than a dataclass: one is made per message, on the hot path."""

    sent_s: float
    link_s: float
    queue_s: float
    size_bytes: int


#: ``handler(msg, delivery)``: a message arrived. A device handler may return a generator, which the
#: delivering process then runs as its continuation; a server handler's return value is ignored.
Handler = Callable[[Message, Delivery], object]
#: ``on_lost(msg, device)``: ``msg`` to or from ``device`` will never arrive (the link gave up).
LossHandler = Callable[[Message, int], None]


class Transport(ABC):
    """The server's port: carries tasks to devices, and the devices' replies back to the server.

    Contract:

    * ``attach_server(on_message, on_lost)`` once, before the first ``send``.
    * ``send(task)`` returns an event that fires when the server is done sending (delivered or
      given up); it never blocks.
    * Every task sent is answered by at most one of: ``on_message(reply, delivery)`` with the
      device's ``Update`` or ``Refusal``, ``on_message(leave, delivery)`` when the device fell
      silent, or ``on_lost(task_or_reply, device)`` when a link gave up. A device may also never
      answer (the coordinator's own deadline covers that).
    * Handlers are called inside the event loop, at the virtual time the reply arrives (never
      before the task was sent), and must not block.
    * ``send_many(tasks)`` is ``send`` of each task in order, for a caller that waits on none of their
      events (a round's dispatch); a transport may do it in one go. The default calls ``send``.
    * ``unreachable()`` lists the devices it cannot reach now (none by default); a coordinator does not
      select them.
    * ``close()`` releases what the transport holds (sockets); idempotent.
    """

    _server_handler: Handler | None = None
    _loss_handler: LossHandler | None = None

    def attach_server(self, on_message: Handler, on_lost: LossHandler) -> None:
        """Receive every message addressed to the server, and hear of every loss."""
        self._server_handler = on_message
        self._loss_handler = on_lost

    @abstractmethod
    def send(self, msg: Task) -> simpy.Event:
        """Send ``msg`` from the server to device ``msg.device``."""

    def send_many(self, msgs: Sequence[Task]) -> None:
        """``send`` each of ``msgs``, in order; nobody waits on their events."""
        for msg in msgs:
            self.send(msg)

    def unreachable(self) -> Sequence[int]:
        """The devices this transport knows it cannot reach now (a real device whose hub purged it, until it says
        hello again), which a coordinator leaves out when it selects; none by default: a simulated device is
        always reached, and judges its own availability when its task arrives."""
        return ()

    def close(self) -> None:
        """Release what the transport holds (nothing, unless a subclass says otherwise)."""


class DeviceLink(ABC):
    """A simulated device's port: tasks in, replies and silences out.

    Contract:

    * ``attach_devices(handler)`` once: every message addressed to a device reaches ``handler``,
      which reads the device from ``msg.device``. A generator it returns is run by the process that
      delivered the message, as its continuation (one process per task, no second one spawned).
    * ``upload(msg)`` is the transfer of ``msg`` to the server as a generator, for the device's
      process to ``yield from``; it returns the ``Delivery``, or None when the link gave up (the
      server's loss handler was told). The server's handler has run by the time it returns.
    * ``report_silence(leave, after_s)``: the device went silent; the server hears ``leave``
      ``after_s`` virtual seconds from now, over no link (in the bridge this is the hub's liveness
      expiring; here a fixed detection delay).
    """

    _device_handler: Handler | None = None

    def attach_devices(self, handler: Handler) -> None:
        """Receive every message addressed to any device."""
        self._device_handler = handler

    @abstractmethod
    def upload(self, msg: Message) -> Generator[simpy.Event, object, Delivery | None]:
        """Carry ``msg`` from device ``msg.device`` to the server (a generator to ``yield from``)."""

    @abstractmethod
    def report_silence(self, msg: Leave, after_s: float) -> None:
        """Hand ``msg`` to the server ``after_s`` virtual seconds from now, without using a link."""


class Reply(NamedTuple):
    """What a ``FunctionTransport`` device does with a task: ``message`` reaches the server
    ``after_s`` virtual seconds after the send, over a link of ``link_s``; a ``message`` of None is
    a loss (the server's loss handler hears of the task)."""

    after_s: float
    message: Message | None
    link_s: float = 0.0


class FunctionTransport(Transport):
    """A function as a transport, for tests (httpx's ``MockTransport``): ``handler(task)`` returns the
    ``Reply`` the device gives, or None for a device that never answers. No links, no queues, no
    randomness: a reply arrives exactly ``after_s`` after its task was sent. ``sent`` lists the tasks in
    the order they were sent."""

    def __init__(self, env: simpy.Environment, handler: Callable[[Task], Reply | None]) -> None:
        self._env = env
        self._handler = handler
        self.sent: list[Task] = []

    def send(self, msg: Task) -> simpy.Event:
        self.sent.append(msg)
        reply = self._handler(msg)
        if reply is not None:
            if not 0.0 <= reply.link_s <= reply.after_s:
                raise ValueError(f"a reply needs 0 <= link_s <= after_s, got {reply.link_s} and {reply.after_s}")
            self._env.timeout(reply.after_s).callbacks.append(lambda _event: self._arrive(msg, reply))
        done = self._env.event()
        done.succeed()
        return done

    def _arrive(self, task: Task, reply: Reply) -> None:
        if reply.message is None:
            self._loss_handler(task, task.device)
        else:
            now = self._env.now
            self._server_handler(reply.message, Delivery(now - reply.link_s, reply.link_s, 0.0, 0))
