"""What a frame's body may hold: every kind's fields, their checks and the rules between them.

``fleet.bridge.protocol`` frames and unframes; this module says, for each of ``KINDS``, which fields a body
has, of what type and range, and how a tensor travels (a ``{"dtype", "shape", "data"}`` map of raw
little-endian bytes). ``check_body`` is the strict half (a missing, extra or wrongly typed field is a
``ProtocolError``); ``to_wire`` the lenient half ``encode`` applies first (numpy arrays and torch tensors
as tensor maps, numbers as plain Python numbers, fields in schema order).

The dropout causes and the phases are the core's (``fleet.core.messages.CAUSES`` and ``PHASES``), so the
bridge refuses for the same reasons the simulated devices do. Like the codec, this module imports no zmq,
no simpy and no torch.
"""

from __future__ import annotations

import math
from functools import partial
from numbers import Real
from types import MappingProxyType
from typing import Any, Callable, Mapping

import numpy as np

from fleet.core.messages import CAUSES, PHASES

__all__ = [
    "KINDS", "REASONS", "UPDATE_REASONS", "CAUSES", "PHASES", "UPDATE_KINDS", "DTYPES", "UPDATE_TENSORS",
    "MAX_TENSOR_RANK", "MAX_TENSOR_ELEMENTS", "MAX_UINT", "MAX_SCORE_NORM", "ProtocolError", "tensor",
    "check_body", "to_wire",
]

MAX_TENSOR_RANK = 4
MAX_TENSOR_ELEMENTS = 2**32 - 1  # the product of a tensor's non-zero dimensions
MAX_UINT = 2**63 - 1  # every "uint" field fits a signed or unsigned 64-bit integer

KINDS = ("hello", "welcome", "task", "update", "refusal", "heartbeat", "bye")
REASONS = ("oversized", "malformed", "version", "kind", "schema", "tensor_dtype", "tensor_shape", "non_finite")
UPDATE_KINDS = ("delta", "seeds", "scores", "delta_grad")
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
    "delta": ("delta",), "seeds": ("seeds", "coefficients"), "scores": ("scores",),
    "delta_grad": ("delta", "gradient")})


class ProtocolError(ValueError):
    """A frame (or a body given to ``encode``) that breaks the protocol; ``reason`` is one of ``REASONS``, or
    of ``UPDATE_REASONS`` for an update that does not fit its task (``fleet.bridge.payloads.validate_update``)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        assert reason in REASONS or reason in UPDATE_REASONS, reason
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


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


MAX_MODE_CHARS = 16  # algorithms.base.MODE_MAX_CHARS (a test keeps them equal)
MAX_ARCHITECTURE_LAYERS = 64


def _mode(path: str, v: Any) -> str:
    """A task's ``mode``: 1 to ``MAX_MODE_CHARS`` characters of ``[a-z0-9_]`` (an empty mode is not sent)."""
    if not 1 <= len(_str(path, v)) <= MAX_MODE_CHARS or not all(c in _MODE_CHARS for c in v):
        raise _schema(path, f"must be 1 to {MAX_MODE_CHARS} characters of [a-z0-9_], got {v!r}")
    return v


_MODE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")


def _widths(path: str, v: Any) -> list[int]:
    """A task's ``architecture``: 1 to ``MAX_ARCHITECTURE_LAYERS`` positive ints (an empty one is not sent)."""
    if type(v) is not list or not 1 <= len(v) <= MAX_ARCHITECTURE_LAYERS:
        raise _schema(path, f"expected an array of 1 to {MAX_ARCHITECTURE_LAYERS} positive ints")
    return [_positive(f"{path}[{i}]", w) for i, w in enumerate(v)]


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


# A schema: field name -> (check, required). Field order is the order ``encode`` writes: for the kinds a
# core message travels as, its header (``fleet.core.wire.HEADERS``) first, then its payload.
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
             "peak_memory_bytes": (_uint, False), "deadline_s": (_non_negative, False),
             "mode": (_mode, False), "architecture": (_widths, False),
             "seed": (_uint, True), "prune_step": (_uint, True), "update_kind": (_one_of(UPDATE_KINDS), True),
             "weights": (_vector("float32"), True), "mask": (_vector("bool"), False)},
    "update": {"task_id": (_uint, True), "compute_s": (_non_negative, True), "kind": (_one_of(UPDATE_KINDS), True),
               "num_samples": (_uint, True), "peak_memory_bytes": (_uint, True), "train_loss": (_any_float, False),
               "delta": (_vector("float32"), False), "seeds": (_vector("int64"), False),
               "coefficients": (_vector("float32"), False), "scores": (_vector("float32"), False),
               "gradient": (_vector("float32"), False)},
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
        for name in ("delta", "seeds", "coefficients", "scores", "gradient"):
            if (name in body) != (name in wanted):
                raise _schema(f"update.{name}", f"{'missing' if name in wanted else 'not allowed'} "
                                                f"in an update of kind {body['kind']!r}")
        if body["kind"] == "seeds" and len(body["seeds"]) != len(body["coefficients"]):
            raise ProtocolError("tensor_shape", "update.seeds and update.coefficients differ in length")
        if body["kind"] == "delta_grad" and len(body["delta"]) != len(body["gradient"]):
            raise ProtocolError("tensor_shape", "update.delta and update.gradient differ in length")



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



def check_body(kind: str, body: Any) -> dict:
    """The fields of an unpacked ``body`` of ``kind`` (one of ``KINDS``), each checked and as a decoded
    message holds it; ``ProtocolError`` for the first fault."""
    out = _fields(kind, _SCHEMAS[kind], body)
    _cross_checks(kind, out)
    return out


def to_wire(kind: str, body: Mapping) -> dict:
    """What ``encode`` packs for ``body`` of ``kind`` (one of ``KINDS``), before its checks."""
    if not isinstance(body, Mapping):
        raise _schema(kind, f"a body is a map, got {type(body).__name__}")
    return _to_wire(_SCHEMAS[kind], body)
