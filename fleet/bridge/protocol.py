"""The bridge's wire protocol, version 2: what a hub and an agent put in one ZeroMQ frame.

docs/protocol.md is the specification (byte layouts, every field, limits, errors, an annotated frame);
this module implements it. A frame is the msgpack array ``[version, kind, body]`` (``fleet.core.wire``
lays it out and packs it, for the bridge and the simulated network alike); ``body`` is a map
with string keys checked strictly against the kind's schema (a missing, extra or wrongly typed field is
an error); tensors travel as ``{"dtype", "shape", "data"}`` maps of raw little-endian bytes.

* ``decode(frame, max_bytes)`` never trusts the frame: it checks the size, walks the msgpack structure
  without building objects (``_scan``: object count, nesting depth, truncation, ext types), unpacks with
  msgpack's length limits, then checks the envelope, the schema and every tensor. Anything wrong raises
  ``ProtocolError`` with one of ``REASONS``; nothing else escapes for any input bytes.
* ``encode(kind, body)`` accepts numpy arrays or torch tensors in tensor fields, packs the fields in
  schema order (so equal bodies give equal bytes) and decodes its own output, so whatever it returns,
  ``decode`` accepts.

What each kind's body holds, and its checks, is ``fleet.bridge.schema`` (this module re-exports its
names). The codec is the wire format alone: it imports no zmq, no simpy and no torch. What the learning
plane puts in a ``task`` and takes out of an ``update`` (``ModelState`` and ``ClientResult`` to and from bodies,
and the checks of a message against its task) is ``fleet.bridge.payloads``.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

import msgpack

from fleet.bridge.schema import (
    CAUSES,
    DTYPES,
    KINDS,
    MAX_SCORE_NORM,
    MAX_TENSOR_ELEMENTS,
    MAX_TENSOR_RANK,
    MAX_UINT,
    PHASES,
    REASONS,
    UPDATE_KINDS,
    UPDATE_REASONS,
    UPDATE_TENSORS,
    ProtocolError,
    _BadMap,
    _pairs,
    check_body,
    tensor,
    to_wire,
)
from fleet.core.wire import VERSION
from fleet.core.wire import frame as wire_frame

__all__ = [
    "VERSION", "KINDS", "REASONS", "CAUSES", "PHASES", "UPDATE_KINDS", "DTYPES", "MAX_MESSAGE_BYTES",
    "MAX_STR_BYTES", "MAX_OBJECTS", "MAX_DEPTH", "MAX_TENSOR_RANK", "MAX_TENSOR_ELEMENTS", "MAX_UINT",
    "UPDATE_REASONS", "MAX_SCORE_NORM", "CURVE_OVERHEAD_BYTES", "UPDATE_TENSORS", "ProtocolError", "Message",
    "encode", "decode", "tensor",
]

MAX_MESSAGE_BYTES = 64 * 2**20  # default frame limit; the hub sets ZMQ_MAXMSGSIZE to the same value
CURVE_OVERHEAD_BYTES = 33  # a CURVE MESSAGE command is the frame plus 33 bytes (measured, libzmq 4.3.5)
MAX_STR_BYTES = 4096  # any msgpack str (keys included), in UTF-8 bytes
MAX_OBJECTS = 65536  # msgpack objects in one frame (every value, key and container counts one)
MAX_DEPTH = 16  # container nesting (the envelope is depth 1, the body depth 2)


@dataclass(frozen=True, eq=False)
class Message:
    """A decoded frame: ``kind`` and a read-only ``body`` (tensors are read-only little-endian numpy
    arrays); ``size_bytes`` is the frame's length. ``msg["field"]`` reads the body."""

    kind: str
    body: Mapping[str, Any]
    size_bytes: int = 0

    def __getitem__(self, key: str) -> Any:
        return self.body[key]


# --- the structural scan: msgpack framing checked before any object is built ----------------------------
# first byte -> payload bytes (nil, false, true, floats, ints), length-field bytes (bin, str),
# (length-field bytes, objects per entry) (array, map); fixint, fixstr, fixarray and fixmap are decoded inline
_FIXED = {0xC0: 0, 0xC2: 0, 0xC3: 0, 0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8,
          0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8}
_SIZED = {0xC4: 1, 0xC5: 2, 0xC6: 4, 0xD9: 1, 0xDA: 2, 0xDB: 4}  # bin8/16/32, str8/16/32
_CONTAINERS = {0xDC: (2, 1), 0xDD: (4, 1), 0xDE: (2, 2), 0xDF: (4, 2)}  # array16/32, map16/32


def _scan(buf: bytes) -> None:
    """Walk ``buf`` as exactly one msgpack object; ``malformed`` on truncation, trailing bytes, reserved
    or ext types, more than ``MAX_OBJECTS`` objects or deeper than ``MAX_DEPTH``. Bins and strs are
    skipped by length, so the cost is one step per object, never per byte."""
    n, pos, objects, left = len(buf), 0, 0, [1]
    while left:
        if left[-1] == 0:
            left.pop()
            continue
        left[-1] -= 1
        objects += 1
        if objects > MAX_OBJECTS:
            raise ProtocolError("malformed", f"more than {MAX_OBJECTS} msgpack objects")
        if pos >= n:
            raise ProtocolError("malformed", "truncated frame")
        b = buf[pos]
        pos += 1
        items = 0
        if b <= 0x7F or b >= 0xE0:  # positive / negative fixint
            continue
        if b <= 0x8F:
            items = 2 * (b & 0x0F)
        elif b <= 0x9F:
            items = b & 0x0F
        elif b <= 0xBF:
            pos += b & 0x1F
        elif b in _FIXED:
            pos += _FIXED[b]
        elif b in _SIZED:
            width = _SIZED[b]
            pos += width + int.from_bytes(buf[pos:pos + width], "big")
        elif b in _CONTAINERS:
            width, per = _CONTAINERS[b]
            if pos + width > n:
                raise ProtocolError("malformed", "truncated frame")
            items = per * int.from_bytes(buf[pos:pos + width], "big")
            pos += width
        else:  # 0xc1 (never used) and the ext family
            raise ProtocolError("malformed", f"msgpack type byte 0x{b:02x} is not allowed")
        if pos > n:
            raise ProtocolError("malformed", "truncated frame")
        if b >= 0x80 and (b <= 0x9F or b in _CONTAINERS):
            if items > MAX_OBJECTS:
                raise ProtocolError("malformed", f"a container of {items} items")
            left.append(items)
            if len(left) > MAX_DEPTH + 1:
                raise ProtocolError("malformed", f"nesting deeper than {MAX_DEPTH}")
    if pos != n:
        raise ProtocolError("malformed", f"{n - pos} bytes after the message")


# --- the codec ------------------------------------------------------------------------------------------
def decode(frame: bytes | bytearray | memoryview, max_bytes: int = MAX_MESSAGE_BYTES) -> Message:
    """Check and unpack one frame; ``ProtocolError`` (with ``.reason``) for anything off-protocol."""
    if not isinstance(frame, (bytes, bytearray, memoryview)):
        raise TypeError(f"decode() takes bytes, got {type(frame).__name__}")
    size = memoryview(frame).nbytes
    if size > max_bytes:
        raise ProtocolError("oversized", f"{size} bytes > {max_bytes}")
    buf = bytes(frame)
    _scan(buf)
    try:
        top = msgpack.unpackb(buf, raw=False, strict_map_key=False, object_pairs_hook=_pairs,
                              max_bin_len=max_bytes, max_str_len=MAX_STR_BYTES, max_array_len=MAX_OBJECTS,
                              max_map_len=MAX_OBJECTS, max_ext_len=0)
    except (ValueError, TypeError, msgpack.UnpackException) as error:  # bad UTF-8, a str over the limit
        raise ProtocolError("malformed", f"msgpack: {type(error).__name__}: {error}") from None
    if type(top) is not list or not top or type(top[0]) is not int:
        raise ProtocolError("malformed", "not an array [version, kind, body]")
    if top[0] != VERSION:
        raise ProtocolError("version", f"version {top[0]}, this peer speaks {VERSION}")
    if len(top) != 3 or type(top[1]) is not str or not isinstance(top[2], (dict, _BadMap)):
        raise ProtocolError("malformed", "not an array [version, kind, body]")
    kind, body = top[1], top[2]
    if kind not in KINDS:
        raise ProtocolError("kind", f"unknown kind {kind!r}")
    return Message(kind, MappingProxyType(check_body(kind, body)), len(buf))


def encode(kind: str, body: Mapping[str, Any], max_bytes: int = MAX_MESSAGE_BYTES, *,
           self_check: bool = True) -> bytes:
    """One frame for ``kind`` and ``body``; raises ``ProtocolError`` for what ``decode`` would reject.

    With ``self_check`` (the default) the frame is decoded once before it is returned, so whatever
    ``encode`` gives is guaranteed to decode. The hub and the agent pass ``self_check=False`` for the
    frames they build themselves on the hot path (about 25 us a round trip): the receiving side decodes
    and checks every frame anyway."""
    if kind not in KINDS:
        raise ProtocolError("kind", f"unknown kind {kind!r}")
    body = to_wire(kind, body)
    try:
        frame = wire_frame(kind, body)
    except (TypeError, ValueError, OverflowError) as error:
        raise ProtocolError("schema", f"{kind}: cannot pack: {error}") from None
    if self_check:
        decode(frame, max_bytes)
    elif len(frame) > max_bytes:
        raise ProtocolError("oversized", f"{len(frame)} bytes > {max_bytes}")
    return frame
