"""The bridge's wire protocol, version 1: what a hub and an agent put in one ZeroMQ frame.

docs/protocol.md is the specification (byte layouts, every field, limits, errors, an annotated frame);
this module implements it. A frame is the msgpack array ``[version, kind, body]``; ``body`` is a map
with string keys checked strictly against the kind's schema (a missing, extra or wrongly typed field is
an error); tensors travel as ``{"dtype", "shape", "data"}`` maps of raw little-endian bytes.

* ``decode(frame, max_bytes)`` never trusts the frame: it checks the size, walks the msgpack structure
  without building objects (``_scan``: object count, nesting depth, truncation, ext types), unpacks with
  msgpack's length limits, then checks the envelope, the schema and every tensor. Anything wrong raises
  ``ProtocolError`` with one of ``REASONS``; nothing else escapes for any input bytes.
* ``encode(kind, body)`` accepts numpy arrays or torch tensors in tensor fields, packs the fields in
  schema order (so equal bodies give equal bytes) and decodes its own output, so whatever it returns,
  ``decode`` accepts.

This module is the wire format alone: it imports no zmq, no simpy and no torch. What the learning plane
puts in a ``task`` and takes out of an ``update`` (``ModelState`` and ``ClientResult`` to and from bodies,
and the checks of a message against its task) is ``fleet.bridge.payloads``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from numbers import Real
from types import MappingProxyType
from typing import Any, Callable, Mapping

import msgpack
import numpy as np

__all__ = [
    "VERSION", "KINDS", "REASONS", "CAUSES", "PHASES", "UPDATE_KINDS", "DTYPES", "MAX_MESSAGE_BYTES",
    "MAX_STR_BYTES", "MAX_OBJECTS", "MAX_DEPTH", "MAX_TENSOR_RANK", "MAX_TENSOR_ELEMENTS", "MAX_UINT",
    "UPDATE_REASONS", "MAX_SCORE_NORM", "CURVE_OVERHEAD_BYTES", "UPDATE_TENSORS", "ProtocolError", "Message", "encode", "decode", "tensor",
]

VERSION = 1
MAX_MESSAGE_BYTES = 64 * 2**20  # default frame limit; the hub sets ZMQ_MAXMSGSIZE to the same value
CURVE_OVERHEAD_BYTES = 33  # a CURVE MESSAGE command is the frame plus 33 bytes (measured, libzmq 4.3.5)
MAX_STR_BYTES = 4096  # any msgpack str (keys included), in UTF-8 bytes
MAX_OBJECTS = 65536  # msgpack objects in one frame (every value, key and container counts one)
MAX_DEPTH = 16  # container nesting (the envelope is depth 1, the body depth 2)
MAX_TENSOR_RANK = 4
MAX_TENSOR_ELEMENTS = 2**32 - 1  # the product of a tensor's non-zero dimensions
MAX_UINT = 2**63 - 1  # every "uint" field fits a signed or unsigned 64-bit integer

KINDS = ("hello", "welcome", "task", "update", "refusal", "heartbeat", "bye")
REASONS = ("oversized", "malformed", "version", "kind", "schema", "tensor_dtype", "tensor_shape", "non_finite")
CAUSES = ("memory", "deadline", "offline", "battery", "link", "failure", "flops")
PHASES = ("train", "prune")
UPDATE_KINDS = ("delta", "seeds", "scores")
# Why a decodable update does not fit the task it answers (``fleet.bridge.payloads.validate_update``): the update
# kind is not the one the task named; ``num_samples`` is 0 or larger than the partition the device was given;
# the update is too large (``max_norm``, and ``MAX_SCORE_NORM`` for scores). Counted like the frame reasons.
UPDATE_REASONS = ("wrong_update_kind", "sample_count", "update_norm")
# float32's largest finite value over 2**32: the element-wise sum of up to 2**32 score vectors each of L2
# norm at most this (so every element at most this) stays finite, whatever weights in [0, 1] they carry.
MAX_SCORE_NORM = float(np.finfo(np.float32).max) / 2**32
DTYPES: Mapping[str, np.dtype] = MappingProxyType({
    "float32": np.dtype("<f4"), "int64": np.dtype("<i8"), "bool": np.dtype("bool"), "uint8": np.dtype("u1")})
_DTYPE_NAMES = {dt: name for name, dt in DTYPES.items()}
_TENSOR_KEYS = ("dtype", "shape", "data")
# The tensor fields each update kind carries (and no other kind may).
UPDATE_TENSORS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "delta": ("delta",), "seeds": ("seeds", "coefficients"), "scores": ("scores",)})


class ProtocolError(ValueError):
    """A frame (or a body given to ``encode``) that breaks the protocol; ``reason`` is one of ``REASONS``, or
    of ``UPDATE_REASONS`` for an update that does not fit its task (``fleet.bridge.payloads.validate_update``)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        assert reason in REASONS or reason in UPDATE_REASONS, reason
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


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


class _BadMap:
    """What a msgpack map with a non-string or repeated key unpacks to: a schema error where it is used."""


def _pairs(pairs: list) -> dict | _BadMap:
    out: dict = {}
    for key, value in pairs:
        if type(key) is not str or key in out:
            return _BadMap()
        out[key] = value
    return out


# --- field checks: each takes (path, value) and returns the value as the Message holds it ---------------
def _schema(path: str, what: str) -> ProtocolError:
    return ProtocolError("schema", f"{path}: {what}")


def _int(path: str, v: Any, low: int = 0) -> int:
    if type(v) is not int:
        raise _schema(path, f"expected an integer, got {type(v).__name__}")
    if not low <= v <= MAX_UINT:
        raise _schema(path, f"{v} is outside [{low}, 2^63-1]")
    return v


def _float(path: str, v: Any, low: float = -math.inf, strict: bool = False) -> float:
    if type(v) is int:
        v = float(v)
    if type(v) is not float:
        raise _schema(path, f"expected a float, got {type(v).__name__}")
    if not math.isfinite(v):
        raise ProtocolError("non_finite", f"{path} is {v}")
    if v < low or (strict and v == low):
        raise _schema(path, f"{v} must be {'>' if strict else '>='} {low}")
    return v


_uint = _int
_positive = partial(_int, low=1)
_any_float = _float
_non_negative = partial(_float, low=0.0)
_interval = partial(_float, low=0.0, strict=True)


def _str(path: str, v: Any) -> str:
    if type(v) is not str:
        raise _schema(path, f"expected a string, got {type(v).__name__}")
    return v


def _one_of(choices: tuple[str, ...]) -> Callable[[str, Any], str]:
    def check(path: str, v: Any) -> str:
        if _str(path, v) not in choices:
            raise _schema(path, f"{v!r} is not one of {', '.join(choices)}")
        return v
    return check


def _plain(path: str, v: Any) -> Any:
    """Algorithm parameters: nil, bool, int, float, str, and arrays / string-keyed maps of them."""
    if v is None or type(v) in (bool, int, float, str):
        return v
    if type(v) is list:
        return [_plain(f"{path}[{i}]", x) for i, x in enumerate(v)]
    if type(v) is dict:
        return {k: _plain(f"{path}.{k}", x) for k, x in v.items()}
    raise _schema(path, f"{type(v).__name__} is not allowed in parameters")


def _params(path: str, v: Any) -> dict:
    if type(v) is not dict:
        raise _schema(path, "expected a map with string keys")
    return _plain(path, v)


def _read_tensor(path: str, v: Any) -> np.ndarray:
    """A wire tensor map as a read-only numpy array, with every generic tensor rule checked."""
    if type(v) is not dict:
        raise _schema(path, "a tensor must be a map with string keys")
    if set(v) != set(_TENSOR_KEYS):
        raise _schema(path, f"a tensor has exactly the keys dtype, shape, data; got {', '.join(sorted(v))}")
    name, shape, data = v["dtype"], v["shape"], v["data"]
    if type(name) is not str:
        raise _schema(f"{path}.dtype", "expected a string")
    if name not in DTYPES:
        raise ProtocolError("tensor_dtype", f"{path}: dtype {name!r} is not one of {', '.join(DTYPES)}")
    if type(shape) is not list:
        raise _schema(f"{path}.shape", "expected an array of uint")
    shape = [_uint(f"{path}.shape[{i}]", d) for i, d in enumerate(shape)]
    if len(shape) > MAX_TENSOR_RANK:
        raise ProtocolError("tensor_shape", f"{path}: rank {len(shape)} > {MAX_TENSOR_RANK}")
    if math.prod(d for d in shape if d) > MAX_TENSOR_ELEMENTS:
        raise ProtocolError("tensor_shape", f"{path}: shape {shape} is too large")
    if type(data) is not bytes:
        raise _schema(f"{path}.data", f"expected bin, got {type(data).__name__}")
    dtype = DTYPES[name]
    if len(data) != math.prod(shape) * dtype.itemsize:
        raise ProtocolError("tensor_shape", f"{path}: {len(data)} data bytes for shape {shape} of {name}")
    array = np.frombuffer(data, dtype=np.uint8 if name == "bool" else dtype)
    if name == "bool":
        if array.size and int(array.max()) > 1:
            raise ProtocolError("tensor_dtype", f"{path}: a bool byte other than 0 or 1")
        array = array.view(np.bool_)
    elif name == "float32" and not bool(np.isfinite(array).all()):
        raise ProtocolError("non_finite", f"{path} holds NaN or Inf")
    return array.reshape(shape)


def _vector(dtype: str) -> Callable[[str, Any], np.ndarray]:
    """A field holding a 1-D tensor of ``dtype``."""
    def check(path: str, v: Any) -> np.ndarray:
        array = _read_tensor(path, v)
        if array.dtype != DTYPES[dtype]:
            raise ProtocolError("tensor_dtype", f"{path}: expected {dtype}, got {_DTYPE_NAMES[array.dtype]}")
        if array.ndim != 1:
            raise ProtocolError("tensor_shape", f"{path}: expected a 1-D tensor, got shape {list(array.shape)}")
        return array
    check.dtype = dtype  # for encode's normalisation
    return check


def _map(fields: dict) -> Callable[[str, Any], dict]:
    def check(path: str, v: Any) -> dict:
        return _fields(path, fields, v)
    check.fields = fields  # for encode's normalisation
    return check


# A schema: field name -> (check, required). Field order is the order ``encode`` writes.
_ALGORITHM = {"name": (_str, True), "params": (_params, True)}
_DATASET = {"name": (_str, True), "partition": (_vector("int64"), True)}
_SCHEMAS: dict[str, dict[str, tuple[Callable, bool]]] = {
    "hello": {"device_class": (_str, True), "free_memory_bytes": (_uint, True),
              "flops_per_s": (_non_negative, True), "agent_version": (_str, True), "device_name": (_str, False)},
    "welcome": {"device": (_uint, True), "heartbeat_interval_s": (_interval, True),
                "algorithm": (_map(_ALGORITHM), True), "dataset": (_map(_DATASET), True),
                "liveness": (_positive, False)},
    "task": {"task_id": (_uint, True), "round_index": (_uint, True), "model_version": (_uint, True),
             "phase": (_one_of(PHASES), True), "local_steps": (_positive, True), "batch_size": (_positive, True),
             "seed": (_uint, True), "weights": (_vector("float32"), True), "mask": (_vector("bool"), False),
             "prune_step": (_uint, True), "deadline_s": (_non_negative, False),
             "peak_memory_bytes": (_uint, False), "update_kind": (_one_of(UPDATE_KINDS), True)},
    "update": {"task_id": (_uint, True), "kind": (_one_of(UPDATE_KINDS), True), "num_samples": (_uint, True),
               "compute_s": (_non_negative, True), "peak_memory_bytes": (_uint, True),
               "train_loss": (_any_float, False), "delta": (_vector("float32"), False),
               "seeds": (_vector("int64"), False), "coefficients": (_vector("float32"), False),
               "scores": (_vector("float32"), False)},
    "refusal": {"task_id": (_uint, True), "cause": (_one_of(CAUSES), True), "free_memory_bytes": (_uint, True)},
    "heartbeat": {"sent_s": (_any_float, True)},
    "bye": {"reason": (_str, False)},
}


def _fields(path: str, schema: dict, body: Any) -> dict:
    if isinstance(body, _BadMap):
        raise _schema(path, "map keys must be distinct strings")
    if type(body) is not dict:
        raise _schema(path, f"expected a map, got {type(body).__name__}")
    extra = [k for k in body if k not in schema]
    if extra:
        raise _schema(path, f"unknown field(s) {', '.join(sorted(extra))}")
    out = {}
    for name, (check, required) in schema.items():
        if name in body:
            out[name] = check(f"{path}.{name}", body[name])
        elif required:
            raise _schema(path, f"missing field {name}")
    return out


def _cross_checks(kind: str, body: dict) -> None:
    """Rules between fields of one message."""
    if kind == "task" and "mask" in body and len(body["mask"]) != len(body["weights"]):
        raise ProtocolError("tensor_shape", f"task.mask has {len(body['mask'])} entries, "
                                            f"task.weights {len(body['weights'])}")
    elif kind == "welcome" and len(body["dataset"]["partition"]) and body["dataset"]["partition"].min() < 0:
        raise _schema("welcome.dataset.partition", "sample indices must be >= 0")
    elif kind == "update":
        wanted = UPDATE_TENSORS[body["kind"]]
        for name in ("delta", "seeds", "coefficients", "scores"):
            if (name in body) != (name in wanted):
                raise _schema(f"update.{name}", f"{'missing' if name in wanted else 'not allowed'} "
                                                f"in an update of kind {body['kind']!r}")
        if body["kind"] == "seeds" and len(body["seeds"]) != len(body["coefficients"]):
            raise ProtocolError("tensor_shape", "update.seeds and update.coefficients differ in length")


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
    if kind not in _SCHEMAS:
        raise ProtocolError("kind", f"unknown kind {kind!r}")
    out = _fields(kind, _SCHEMAS[kind], body)
    _cross_checks(kind, out)
    return Message(kind, MappingProxyType(out), len(buf))


def tensor(array: Any) -> dict:
    """A numpy array or torch tensor as a wire tensor map (little-endian, C order); its dtype must be one
    of ``DTYPES`` (no silent casts: convert first)."""
    if not isinstance(array, np.ndarray):
        if not (hasattr(array, "detach") and hasattr(array, "numpy")):
            raise TypeError(f"tensor() takes a numpy array or a torch tensor, got {type(array).__name__}")
        array = array.detach().cpu().numpy()
    name = _DTYPE_NAMES.get(array.dtype.newbyteorder("<"))  # the type, whatever its byte order
    if name is None:
        raise ProtocolError("tensor_dtype", f"dtype {array.dtype} is not one of {', '.join(DTYPES)}")
    if array.ndim > MAX_TENSOR_RANK:
        raise ProtocolError("tensor_shape", f"rank {array.ndim} > {MAX_TENSOR_RANK}")
    data = np.ascontiguousarray(array, dtype=DTYPES[name]).tobytes()
    return {"dtype": name, "shape": list(array.shape), "data": data}


_FLOAT_CHECKS = (_non_negative, _interval, _any_float)


def _is_array(v: Any) -> bool:
    return isinstance(v, np.ndarray) or (hasattr(v, "detach") and hasattr(v, "numpy"))  # numpy or torch


def _to_wire(schema: dict, body: Mapping) -> dict:
    """``body`` with arrays (and lists in tensor fields, as the field's dtype) as tensor maps and numbers
    as plain Python ints (floats in float fields), in schema order; unknown keys go last, as they are,
    for ``decode`` to reject."""
    out = {}
    for name in [*[k for k in schema if k in body], *[k for k in body if k not in schema]]:
        v, check = body[name], schema.get(name, (None,))[0]
        if _is_array(v):
            v = tensor(v)
        elif hasattr(check, "dtype") and isinstance(v, (list, tuple)):
            try:
                v = tensor(np.asarray(v, dtype=DTYPES[check.dtype]))
            except (TypeError, ValueError, OverflowError) as error:
                raise _schema(name, f"cannot make a {check.dtype} tensor: {error}") from None
        elif hasattr(check, "fields") and isinstance(v, Mapping):
            v = _to_wire(check.fields, v)
        elif check in _FLOAT_CHECKS and isinstance(v, Real) and not isinstance(v, (bool, np.bool_)):
            v = float(v)
        elif isinstance(v, np.integer):
            v = int(v)
        out[name] = v
    return out


def encode(kind: str, body: Mapping[str, Any], max_bytes: int = MAX_MESSAGE_BYTES, *,
           self_check: bool = True) -> bytes:
    """One frame for ``kind`` and ``body``; raises ``ProtocolError`` for what ``decode`` would reject.

    With ``self_check`` (the default) the frame is decoded once before it is returned, so whatever
    ``encode`` gives is guaranteed to decode. The hub and the agent pass ``self_check=False`` for the
    frames they build themselves on the hot path (about 25 us a round trip): the receiving side decodes
    and checks every frame anyway."""
    if kind not in _SCHEMAS:
        raise ProtocolError("kind", f"unknown kind {kind!r}")
    if not isinstance(body, Mapping):
        raise _schema(kind, f"a body is a map, got {type(body).__name__}")
    wire = _to_wire(_SCHEMAS[kind], body)
    try:
        frame = msgpack.packb([VERSION, kind, wire], use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as error:
        raise ProtocolError("schema", f"{kind}: cannot pack: {error}") from None
    if self_check:
        decode(frame, max_bytes)
    elif len(frame) > max_bytes:
        raise ProtocolError("oversized", f"{len(frame)} bytes > {max_bytes}")
    return frame
