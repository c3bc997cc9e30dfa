"""A pickle reader for trace files that can build nothing but plain data.

FedScale ships its device traces as pickles, and ``pickle.load`` on a file someone sent you runs whatever
code the file names. In the pickle machine the only door to a callable is ``find_class`` (the GLOBAL,
STACK_GLOBAL, INST, OBJ and EXT opcodes all go through it; REDUCE and BUILD can only call what it returned),
plus ``persistent_load`` for persistent ids. ``PlainUnpickler`` shuts both: every class lookup and every
persistent id is refused, so a ``__reduce__`` payload stops at its first GLOBAL, before anything is called.
Out-of-band buffers (protocol 5) are refused because no buffers are given. What is left builds only
``None``, bools, ints, floats, strings, bytes, tuples, lists, dicts and sets; ``load_plain`` then walks the
result and refuses anything but dicts, lists, tuples, ints, floats, strings, bools and ``None``.

Errors are ``TraceError`` (a ``ValueError``): one line naming the file.
"""

from __future__ import annotations

import io
import pickle

from devices.traces.errors import TraceError

__all__ = ["PlainUnpickler", "load_plain", "check_plain"]

_PLAIN_LEAVES = (str, int, float, bool, type(None))


class PlainUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that refuses every global and every persistent id (``pickle.UnpicklingError``)."""

    def find_class(self, module: str, name: str):  # noqa: D401 - the hook pickle calls
        raise pickle.UnpicklingError(f"the pickle names the global {module[:60]}.{name[:60]}; a trace holds only "
                                     "dicts, lists, numbers and strings")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("the pickle uses a persistent id; a trace holds only dicts, lists, "
                                     "numbers and strings")


def check_plain(data: object, where: str) -> None:
    """Refuse (``TraceError`` naming ``where``) anything in ``data`` but dicts, lists, tuples, str, int, float,
    bool and None. Iterative; each container is visited once, so shared and cyclic references end."""
    seen: set[int] = set()
    stack = [data]
    while stack:
        node = stack.pop()
        if type(node) in _PLAIN_LEAVES:  # exact types: a subclass of str could carry behaviour
            continue
        if type(node) not in (dict, list, tuple):
            raise TraceError(f"{where}: holds a {type(node).__name__}; a trace holds only dicts, lists, numbers "
                             "and strings")
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.extend([*node.keys(), *node.values()] if type(node) is dict else node)


def load_plain(raw: bytes, where: str) -> object:
    """The plain data pickled in ``raw`` (the bytes of the file ``where``), through ``PlainUnpickler``."""
    try:
        data = PlainUnpickler(io.BytesIO(raw), encoding="utf-8").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            MemoryError, OverflowError, RecursionError, UnicodeDecodeError) as exc:
        message = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise TraceError(f"{where}: not a plain-data pickle ({message})") from None
    check_plain(data, where)
    return data
