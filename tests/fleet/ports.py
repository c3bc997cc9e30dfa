"""``free_port()``: a TCP port on the loopback that nothing listens on now, for a hub to bind in a test."""

from __future__ import annotations

import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
