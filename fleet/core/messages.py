"""The message vocabulary between the coordinator and a device, and its two closed lists of names.

The simulated network and the ZeroMQ bridge carry these same frozen dataclasses. A message's link
time is computed from its real msgpack-encoded size (``encoded_size_bytes``): the header fields are
packed for real, and the model payload counts at its real byte length (in timing-only mode no tensor
bytes exist, so ``payload_bytes`` states the size of the tensors the algorithm's cost model says
would travel).

``CAUSES`` is the one list of why a task ends without an update (the devices' gates, the network,
the bridge's refusals and the study's tables all use it); ``PHASES`` is ``algorithms.base.PHASES``,
the one list of what a task may ask.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter
from typing import Literal, get_args

import msgpack

from algorithms.base import PHASES

__all__ = ["SERVER", "Cause", "CAUSES", "Phase", "PHASES", "Task", "Update", "Refusal", "Leave", "Message",
           "encoded_size_bytes"]

SERVER = -1  # the node id of the coordinator

# Why a task ends without an update: not enough free memory, too slow for the deadline, offline
# (availability), battery too low, lost on the link (or a real device's liveness expired), a failure
# mid-task, or too few FLOP/s for the task at all.
Cause = Literal["memory", "deadline", "offline", "battery", "link", "failure", "flops"]
CAUSES: tuple[Cause, ...] = get_args(Cause)
Phase = Literal["train", "prune"]  # spells out PHASES for type checkers; a test holds the two equal


@dataclass(frozen=True, slots=True)
class Task:
    """The coordinator asks ``device`` to run one local update on ``model_version``."""

    task_id: int
    device: int
    round_index: int
    model_version: int
    phase: Phase
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
    """A task that will not produce an update, with the cause (one of ``CAUSES``)."""

    task_id: int
    device: int
    round_index: int
    cause: Cause
    demand_bytes: int
    free_bytes: int


@dataclass(frozen=True, slots=True)
class Leave:
    """A device left (went offline, failed) while it held ``task_id`` (-1 when it held none)."""

    device: int
    task_id: int
    round_index: int
    cause: Cause


Message = Task | Update | Refusal | Leave

_CODES: dict[type, int] = {Task: 1, Update: 2, Refusal: 3, Leave: 6}


def _bin_header_bytes(n: int) -> int:
    """msgpack's bin8/bin16/bin32 header length for an ``n``-byte payload."""
    if n == 0:
        return 0
    return 2 if n < 2**8 else 3 if n < 2**16 else 5


_FIELDS = {cls: attrgetter(*cls.__slots__) for cls in _CODES}
_PACKER = msgpack.Packer(use_bin_type=True)


def encoded_size_bytes(msg: Message) -> int:
    """Bytes on the wire for ``msg``: its msgpack-encoded header plus its payload as msgpack bin."""
    header = len(_PACKER.pack((_CODES[type(msg)], *_FIELDS[type(msg)](msg))))
    payload = getattr(msg, "payload_bytes", 0)
    return header + payload + _bin_header_bytes(payload)
