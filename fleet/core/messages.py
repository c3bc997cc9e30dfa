"""The message vocabulary between the coordinator and a device, and its two closed lists of names.

The simulated network and the ZeroMQ bridge carry these same frozen dataclasses. How one travels, and
so its size, is ``fleet.core.wire``: the simulated network times a message by the length of the frame
the bridge sends for it (``fleet.core.wire.encoded_size_bytes``).

``CAUSES`` is the one list of why a task ends without an update, for the simulated devices, the
bridge's refusals and the study's tables alike; ``PHASES`` is ``algorithms.base.PHASES``, the one list
of what a task may ask.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from typing import Literal, get_args

from algorithms.base import PHASES, TaskConfig

__all__ = ["SERVER", "Cause", "CAUSES", "Phase", "PHASES", "Task", "Update", "Refusal", "Leave", "Message"]

SERVER = -1  # the node id of the coordinator

# Why a task ends without an update: not enough free memory, too slow for the deadline, offline
# (availability), battery too low, lost on the link (or a real device's liveness expired), a failure
# mid-task, or too few FLOP/s for the task at all.
Cause = Literal["memory", "deadline", "offline", "battery", "link", "failure", "flops"]
CAUSES: tuple[Cause, ...] = get_args(Cause)
Phase = Literal["train", "prune"]  # spells out PHASES for type checkers; a test holds the two equal


def _stored_through_slots(cls):
    """Give a frozen, slotted dataclass an ``__init__`` that stores each field through its slot's descriptor
    (the same values, defaults and keywords as the generated one, which calls ``object.__setattr__`` per
    field): a simulated task makes three of these messages, and this halves what each costs."""
    params, body, names = [], [], {}
    for f in fields(cls):
        names[f"_set_{f.name}"] = cls.__dict__[f.name].__set__
        if f.default is MISSING:
            params.append(f.name)
        else:
            names[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
        body.append(f"    _set_{f.name}(self, {f.name})")
    exec(f"def __init__(self, {', '.join(params)}):\n" + "\n".join(body), names)  # noqa: S102 (our own text)
    names["__init__"].__qualname__ = f"{cls.__qualname__}.__init__"
    cls.__init__ = names["__init__"]
    return cls


@_stored_through_slots
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
    mode: str = ""  # the algorithm's kind of round (``TaskConfig.mode``); "" when it has one kind
    architecture: tuple[int, ...] = ()  # the model's widths when they changed (``TaskConfig.architecture``)

    @property
    def config(self) -> TaskConfig:
        """The ``TaskConfig`` this task runs."""
        return TaskConfig(self.phase, self.local_steps, self.batch_size, self.mode, self.architecture)


@_stored_through_slots
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


@_stored_through_slots
@dataclass(frozen=True, slots=True)
class Refusal:
    """A task that will not produce an update, with the cause (one of ``CAUSES``)."""

    task_id: int
    device: int
    round_index: int
    cause: Cause
    demand_bytes: int
    free_bytes: int


@_stored_through_slots
@dataclass(frozen=True, slots=True)
class Leave:
    """A device left (went offline, failed) while it held ``task_id`` (-1 when it held none)."""

    device: int
    task_id: int
    round_index: int
    cause: Cause


Message = Task | Update | Refusal | Leave
