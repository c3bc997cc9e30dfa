"""``TraceError``: a trace file that cannot be used. Its message is one line naming the file, and the client
id and field where one is at fault."""

from __future__ import annotations

__all__ = ["TraceError", "shown"]


class TraceError(ValueError):
    """A bad trace file: unreadable, not plain data, a missing or bad field, an unknown client id."""


def shown(path: object) -> str:
    """``path`` as error messages name it: at most 160 characters, the end kept (the file name)."""
    text = str(path)
    return text if len(text) <= 160 else "..." + text[-157:]
