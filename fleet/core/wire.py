"""The frame: how a message travels, on the bridge and in the simulation alike.

A frame is the msgpack array ``[VERSION, kind, body]``: ``kind`` a str, ``body`` a map with str keys
(docs/protocol.md). ``frame(kind, body)`` packs one; ``fleet.bridge.protocol.encode`` packs every frame
the bridge sends with it, after its checks. ``encoded_size_bytes(msg)`` is the length of the frame the
bridge sends for a core message, so the simulated network times a message by its real size.

A core message travels as its *header*, then its *payload*:

* the header is the message's own fields that the wire carries, under their wire names, in the order of
  ``HEADERS``: of a task, what the device must know of it; of an update and a refusal, what the hub
  cannot know without it. A task's ``deadline_s`` is left out when None; the bridge sends the budget left
  in its place (``Task.deadline_s`` is a virtual instant), a float64 like the instant, so of the same size.
  A task's ``mode`` and ``architecture`` are left out when empty (an algorithm with one kind of round and
  a fixed model), so they cost nothing to the algorithms that do not use them.
* the payload is every other entry of the body, what the learning plane adds: of a task its seed, prune
  step, update kind and model tensors; of an update its kind, sample count, peak memory, loss and
  tensors; a refusal has none. ``payload_bytes`` counts those entries as they pack, keys included. In
  timing-only mode no tensor exists, and ``payload_bytes`` is the size the algorithm's cost model gives.

A body has at most ``MAX_BODY_FIELDS`` entries, so its map header (a msgpack fixmap) is one byte whatever
the count, and a frame's length is exactly its header's frame plus its payload: ``encoded_size_bytes``
packs the header for real and counts the payload at its length, without materialising it. A ``Leave``
never travels (the server hears of a device that left through its own detection), so it has no frame.
"""

from __future__ import annotations

import threading
from types import MappingProxyType
from typing import Any, Callable, Mapping

import msgpack

from fleet.core.messages import Message, Refusal, Task, Update

__all__ = ["VERSION", "MAX_BODY_FIELDS", "HEADERS", "frame", "header", "encoded_size_bytes", "packed_int_bytes"]

VERSION = 2
MAX_BODY_FIELDS = 15  # a msgpack fixmap: the most entries whose map header is one byte

HEADERS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "task": ("task_id", "round_index", "model_version", "phase", "local_steps", "batch_size",
             "peak_memory_bytes", "deadline_s", "mode", "architecture"),
    "update": ("task_id", "compute_s"),
    "refusal": ("task_id", "cause", "free_memory_bytes"),
})

_local = threading.local()  # a msgpack Packer is not thread-safe; the hub packs on two threads


def _packer() -> msgpack.Packer:
    packer = getattr(_local, "packer", None)
    if packer is None:
        packer = _local.packer = msgpack.Packer(use_bin_type=True)
    return packer


def frame(kind: str, body: Mapping[str, Any]) -> bytes:
    """The frame ``[VERSION, kind, body]`` as msgpack bytes (bins as bin, strs as str)."""
    return _packer().pack([VERSION, kind, body])


def _task(t: Task) -> dict:
    body = {"task_id": t.task_id, "round_index": t.round_index, "model_version": t.model_version,
            "phase": t.phase, "local_steps": t.local_steps, "batch_size": t.batch_size,
            "peak_memory_bytes": t.peak_memory_bytes}
    if t.deadline_s is not None:
        body["deadline_s"] = float(t.deadline_s)
    if t.mode:
        body["mode"] = t.mode
    if t.architecture:
        body["architecture"] = list(t.architecture)
    return body


def _update(u: Update) -> dict:
    return {"task_id": u.task_id, "compute_s": float(u.compute_s)}


def _refusal(r: Refusal) -> dict:
    return {"task_id": r.task_id, "cause": r.cause, "free_memory_bytes": r.free_bytes}


_HEADER_OF: dict[type, tuple[str, Callable[[Any], dict]]] = {
    Task: ("task", _task), Update: ("update", _update), Refusal: ("refusal", _refusal)}
# A frame less its body: msgpack packs an array item by item, and an empty body packs as one byte.
_ENVELOPE_BYTES = {kind: len(frame(kind, {})) - 1 for kind, _ in _HEADER_OF.values()}


def header(msg: Message) -> tuple[str, dict]:
    """The kind of ``msg``'s frame and the header of its body (see the module docstring)."""
    kind, fields = _header_of(msg)
    return kind, fields(msg)


def _header_of(msg: Message) -> tuple[str, Callable[[Any], dict]]:
    entry = _HEADER_OF.get(type(msg))
    if entry is None:
        raise TypeError(f"a {type(msg).__name__} does not travel: it has no frame")
    return entry


def encoded_size_bytes(msg: Message) -> int:
    """The length in bytes of the frame the bridge sends for ``msg``: its header packed for real, plus its
    ``payload_bytes`` (a refusal has none). Equal to ``len(frame(*header(msg)))`` plus the payload, without
    building the frame: it is called once per simulated message. A body's map header is one byte whatever
    its entries (``MAX_BODY_FIELDS``), so a frame is the frame without ``task_id`` plus that entry: the rest
    is packed once per distinct value (a round's tasks share it) and ``task_id``'s length follows msgpack's
    integer classes (``packed_int_bytes``)."""
    kind = type(msg)
    if kind is Update:
        task_id = msg.task_id  # packed_int_bytes, inline for the ids below 2**16 (every update)
        if 0 <= task_id < 65536:
            return _UPDATE_BYTES + (1 if task_id < 128 else 2 if task_id < 256 else 3) + msg.payload_bytes
        return _UPDATE_BYTES + packed_int_bytes(task_id) + msg.payload_bytes
    if kind is Task:
        key = (msg.round_index, msg.model_version, msg.phase, msg.local_steps, msg.batch_size,
               msg.peak_memory_bytes, msg.deadline_s is None, msg.mode, msg.architecture)
    elif kind is Refusal:
        key = (msg.cause, msg.free_bytes)
    else:
        _header_of(msg)  # raises: this message has no frame
    rest = _REST_BYTES.get((kind, key))
    if rest is None:
        name, fields = _header_of(msg)
        body = fields(msg)
        del body["task_id"]
        rest = _REST_BYTES[(kind, key)] = _ENVELOPE_BYTES[name] + len(_packer().pack(body)) + _TASK_ID_KEY_BYTES
        if len(_REST_BYTES) > 4096:  # distinct refusals' free bytes: keep the cache small
            _REST_BYTES.clear()
    return rest + packed_int_bytes(msg.task_id) + getattr(msg, "payload_bytes", 0)


def packed_int_bytes(value: int) -> int:
    """How many bytes msgpack packs the integer ``value`` into (its smallest integer class)."""
    if value >= 0:
        return 1 if value < 128 else 2 if value < 256 else 3 if value < 65536 else 5 if value < 2**32 else 9
    return 1 if value >= -32 else 2 if value >= -128 else 3 if value >= -32768 else 5 if value >= -2**31 else 9


_REST_BYTES: dict[tuple, int] = {}  # (kind, header values but task_id) -> frame bytes without task_id's entry
_TASK_ID_KEY_BYTES = len(msgpack.packb("task_id"))
_UPDATE_BYTES = _ENVELOPE_BYTES["update"] + 1 + _TASK_ID_KEY_BYTES + len(msgpack.packb("compute_s")) + 9
