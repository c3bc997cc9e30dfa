"""A command whose reader goes away (``python -m fleet.run --schema | head``) ends quietly."""

from __future__ import annotations

import functools
import os
import sys
from typing import Callable

__all__ = ["SIGPIPE_STATUS", "quiet_on_closed_pipe"]

#: The status a shell reports for a writer killed by SIGPIPE (128 + 13).
SIGPIPE_STATUS = 141


def quiet_on_closed_pipe(main: Callable[..., int]) -> Callable[..., int]:
    """Wrap a ``main(argv) -> status``: a ``BrokenPipeError`` (stdout's reader closed) ends it with
    ``SIGPIPE_STATUS`` and no traceback. stdout is pointed at /dev/null first, since Python flushes it again at
    exit and would report the same broken pipe there."""

    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except BrokenPipeError:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return SIGPIPE_STATUS

    return wrapper
