"""The message vocabulary between the coordinator and a device.

The simulated network and the ZeroMQ bridge carry these same frozen dataclasses. A message's
link time is computed from its real msgpack-encoded size (``encoded_size_bytes``): the header
fields are packed for real, and the model payload counts at its real byte length (in timing-only
mode no tensor bytes exist, so ``payload_bytes`` states the size of the tensors the algorithm's
cost model says would travel).
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter

import msgpack

SERVER = -1  # the node id of the coordinator


@dataclass(frozen=True, slots=True)
class Task:
    """The coordinator asks ``device`` to run one local update on ``model_version``."""

    task_id: int
    device: int
    round_index: int
    model_version: int
    phase: str
    local_steps: int
    batch_size: int
    peak_memory_bytes: int  # the cost model's demand, so the device can gate itself
    flops: int
    bytes_up: int  # size of the update the device will send
    deadline_s: float | None  # absolute virtual time the coordinator stops waiting, or None
    payload_bytes: int  # the model download


@dataclass(frozen=True, slots=True)
class Update:
    """A finished local update, with what the device measured of its own work."""

    task_id: int
    device: int
    round_index: int
    model_version: int  # the version the device downloaded (staleness is measured from it)
    compute_s: float
    download_link_s: float
    download_queue_s: float
    payload_bytes: int


@dataclass(frozen=True, slots=True)
class Refusal:
    """A task that will not produce an update, with the cause (``memory``, ``deadline``, ...)."""

    task_id: int
    device: int
    round_index: int
    cause: str
    demand_bytes: int
    free_bytes: int


@dataclass(frozen=True, slots=True)
class Heartbeat:
    device: int
    sent_s: float


@dataclass(frozen=True, slots=True)
class Join:
    device: int
    device_class: str
    free_memory_bytes: int
    flops_per_s: float


@dataclass(frozen=True, slots=True)
class Leave:
    """A device left (went offline, failed) while it held ``task_id`` (-1 when it held none)."""

    device: int
    task_id: int
    round_index: int
    cause: str


Message = Task | Update | Refusal | Heartbeat | Join | Leave

KINDS: dict[type, int] = {Task: 1, Update: 2, Refusal: 3, Heartbeat: 4, Join: 5, Leave: 6}


def _bin_header_bytes(n: int) -> int:
    """msgpack's bin8/bin16/bin32 header length for an ``n``-byte payload."""
    if n == 0:
        return 0
    return 2 if n < 2**8 else 3 if n < 2**16 else 5


_FIELDS = {cls: attrgetter(*cls.__slots__) for cls in KINDS}
_PACKER = msgpack.Packer(use_bin_type=True)


def header_fields(msg: Message) -> tuple:
    """The message as a msgpack-ready tuple: its kind code, then its fields in declaration order."""
    return (KINDS[type(msg)], *_FIELDS[type(msg)](msg))


def encoded_size_bytes(msg: Message) -> int:
    """Bytes on the wire for ``msg``: its msgpack-encoded header plus its payload as msgpack bin."""
    header = len(_PACKER.pack(header_fields(msg)))
    payload = getattr(msg, "payload_bytes", 0)
    return header + payload + _bin_header_bytes(payload)
