"""The transport seam: how messages travel between the coordinator and devices.

``Transport`` is the one interface the coordinator and device processes talk through; the
simulated network (``fleet.sim.network``) and the ZeroMQ bridge (``fleet.bridge.transport``) both
implement it, so the coordinator cannot tell a simulated device from a real one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, NamedTuple

import simpy

from fleet.core.messages import Message

__all__ = ["Delivery", "Handler", "Transport"]


class Delivery(NamedTuple):
    """How a message travelled: time on links (incl. retries), time waiting for a shared medium.

    A named tuple rather than a dataclass: one is made per message, on the hot path."""

    sent_s: float
    link_s: float
    queue_s: float
    size_bytes: int


Handler = Callable[[Message, Delivery], object]


class Transport(ABC):
    """Carries messages between the coordinator (node ``SERVER``) and devices (nodes 0..n-1).

    Contract: ``send`` returns an event that fires when the sender is done with the message
    (delivered or given up). On arrival the receiver's handler is called with the message and its
    ``Delivery``; a message given up on is passed to the loss handler instead. Handlers run inside
    the event loop and must not block; a device handler may return a generator, which the
    transport then runs as the continuation of the delivering process (one SimPy process per
    task instead of two).
    """

    def __init__(self) -> None:
        self._server_handler: Handler | None = None
        self._device_handler: Handler | None = None
        self._loss_handler: Callable[[Message, int], None] | None = None

    def attach_server(self, handler: Handler, on_lost: Callable[[Message, int], None]) -> None:
        """Receive messages addressed to the server; ``on_lost(msg, device)`` hears of losses."""
        self._server_handler = handler
        self._loss_handler = on_lost

    def attach_devices(self, handler: Handler) -> None:
        """Receive messages addressed to any device (the handler reads the device from the msg)."""
        self._device_handler = handler

    @abstractmethod
    def send(self, msg: Message, device: int, to_server: bool) -> simpy.Event:
        """Send ``msg`` between ``device`` and the server, in the direction ``to_server``."""
