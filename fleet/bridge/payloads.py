"""The learning plane's payloads on the bridge: ``ModelState`` and ``ClientResult`` to and from protocol bodies.

``fleet.bridge.protocol`` is the wire format (frames, schemas, ``decode``/``encode``, reasons, limits) and knows
nothing of models; this module says what the learning plane puts in a ``task`` and takes out of an
``update``, and checks a decoded message against what the other side expects of it:

* hub side: ``task_body`` (a ``Task`` and the global ``ModelState``), ``validate_update`` and
  ``result_from_update`` (an ``update`` as a ``ClientResult``, after checking it fits its task);
* agent side: ``validate_task``, ``state_from_task``, ``update_body`` and ``refusal_body``; ``to_torch``
  for both.

Every body is the header of its core message (``fleet.core.wire.HEADERS``) followed by its payload, the
entries this module adds, so the frame is as long as ``fleet.core.wire.encoded_size_bytes`` says of the
message with that payload.

Importing it imports neither torch nor zmq nor simpy: torch and ``algorithms.local`` are imported inside
the helpers that build or return torch objects. docs/protocol.md section 9 documents these helpers.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from fleet.bridge.protocol import MAX_SCORE_NORM, UPDATE_TENSORS, Message, ProtocolError, tensor
from fleet.core import wire

if TYPE_CHECKING:
    from algorithms.local import ClientResult, ModelState
    from fleet.core.messages import Task

__all__ = ["to_torch", "validate_task", "validate_update", "task_body", "state_from_task", "update_body",
           "refusal_body", "result_from_update"]


def to_torch(array: np.ndarray):
    """A decoded array as a writable torch tensor of its own (the Message keeps its read-only array)."""
    import torch

    return torch.from_numpy(np.array(array, dtype=array.dtype.newbyteorder("="), copy=True))


def validate_task(msg: Message, *, n_params: int | None = None) -> None:
    """Check a decoded ``task`` against the model the agent holds (``n_params`` weights)."""
    if msg.kind != "task":
        raise ProtocolError("schema", f"kind: expected a task, got {msg.kind}")
    if n_params is not None and len(msg["weights"]) != n_params:
        raise ProtocolError("tensor_shape", f"task.weights has {len(msg['weights'])} entries, expected {n_params}")


def validate_update(msg: Message, *, n_params: int | None = None, n_directions: int | None = None,
                    update_kind: str | None = None, max_samples: int | None = None,
                    max_norm: float | None = None) -> None:
    """Check a decoded ``update`` against what its task asked for; ``ProtocolError`` with the first fault.

    * ``update_kind`` (what the task's ``update_kind`` named: ``scores`` for phase ``prune``, the
      algorithm's uplink otherwise): any other kind is ``wrong_update_kind``.
    * ``n_params`` (the length of a delta or of scores, which cover every parameter) and ``n_directions``
      (seed pairs: local steps x queries): another length is ``tensor_shape``.
    * ``max_samples`` (the size of the partition the hub gave the device): ``num_samples`` outside
      ``[1, max_samples]`` is ``sample_count``, so no device can weigh more than the data it holds.
    * ``max_norm`` (the largest L2 norm of the delta the update stands for, computed in float64): a delta's
      norm, and for ``seeds`` the bound ``sum |coefficients| * sqrt(n_params)`` (each replayed direction
      is a standard normal vector of norm about ``sqrt(P)``), above it is ``update_norm``. With
      ``max_norm`` given, scores are held to ``MAX_SCORE_NORM`` instead, which keeps any sum of them finite.
    """
    if msg.kind != "update":
        raise ProtocolError("schema", f"kind: expected an update, got {msg.kind}")
    if update_kind is not None and msg["kind"] != update_kind:
        raise ProtocolError("wrong_update_kind", f"the task asked for {update_kind!r}, got {msg['kind']!r}")
    for name, want in (("delta", n_params), ("scores", n_params), ("gradient", n_params), ("seeds", n_directions),
                       ("coefficients", n_directions)):
        if want is not None and name in msg.body and len(msg[name]) != want:
            raise ProtocolError("tensor_shape", f"update.{name} has {len(msg[name])} entries, expected {want}")
    if max_samples is not None and not 1 <= msg["num_samples"] <= max_samples:
        raise ProtocolError("sample_count", f"update.num_samples is {msg['num_samples']}, the device holds "
                                            f"{max_samples} samples")
    norm, bound = None, max_norm
    if max_norm is not None and "scores" in msg.body:
        norm, bound = float(np.linalg.norm(msg["scores"].astype(np.float64))), MAX_SCORE_NORM
    elif max_norm is not None and "delta" in msg.body:
        norm = float(np.linalg.norm(msg["delta"].astype(np.float64)))
    elif max_norm is not None and "coefficients" in msg.body and n_params is not None:
        norm = float(np.abs(msg["coefficients"].astype(np.float64)).sum()) * math.sqrt(n_params)
    if norm is not None and norm > bound:
        raise ProtocolError("update_norm", f"update.{msg['kind']} has norm {norm:.3g} > {bound:.3g}")


def task_body(task: Task, seed: int, state: ModelState, *, update_kind: str,
              deadline_s: float | None = None) -> dict:
    """The body of a ``task`` frame: the header of ``task`` (a ``fleet.core.messages.Task``), then the payload:
    the local update's ``seed``, the global ``state`` and ``update_kind``, the one kind of update the hub
    accepts in answer. ``deadline_s`` is the time budget from dispatch in seconds, sent in place of
    ``Task.deadline_s`` (a virtual instant, which a physical device cannot use); None sends none."""
    _, body = wire.header(task)
    body.pop("deadline_s", None)
    if deadline_s is not None:
        body["deadline_s"] = float(deadline_s)
    body |= {"seed": seed, "prune_step": state.prune_step, "update_kind": update_kind,
             "weights": tensor(state.weights)}
    if state.mask is not None:
        body["mask"] = tensor(state.mask)
    return body


def state_from_task(msg: Message) -> ModelState:
    """The agent's side of ``task_body``: the global state the task starts from."""
    from algorithms.local import ModelState

    mask = to_torch(msg["mask"]) if "mask" in msg.body else None
    return ModelState(to_torch(msg["weights"]), mask, msg["prune_step"], tuple(msg.body.get("architecture", ())))


def update_body(task_id: int, result: ClientResult, compute_s: float, peak_memory_bytes: int) -> dict:
    """The body of an ``update`` frame for ``result``: the tensors its kind sends (a ``seeds`` result sends
    only its seed pairs, which rebuild the delta exactly); ``train_loss`` is left out when not finite."""
    body = {"task_id": task_id, "compute_s": float(compute_s),  # the header of a core Update
            "kind": result.kind, "num_samples": result.num_samples, "peak_memory_bytes": peak_memory_bytes}
    if math.isfinite(result.train_loss):
        body["train_loss"] = float(result.train_loss)
    for name in UPDATE_TENSORS.get(result.kind, ()):
        value = getattr(result, name)
        if value is None:
            raise ProtocolError("schema", f"a {result.kind!r} result without {name}")
        body[name] = tensor(value)
    return body


def refusal_body(task_id: int, cause: str, free_memory_bytes: int) -> dict:
    """The body of a ``refusal`` frame (the header of a core ``Refusal``; a refusal has no payload)."""
    return {"task_id": task_id, "cause": cause, "free_memory_bytes": free_memory_bytes}


def result_from_update(msg: Message, **expected: Any) -> ClientResult:
    """The ``ClientResult`` an ``update`` carries, after ``validate_update`` with the same expectations;
    tensors are copies (delta and scores as torch float32, seeds and coefficients as numpy), bit for bit."""
    validate_update(msg, **expected)  # first: a rejected update costs no torch import
    from algorithms.local import ClientResult

    body = msg.body
    return ClientResult(
        body["kind"], body["num_samples"],
        delta=to_torch(body["delta"]) if "delta" in body else None,
        seeds=np.array(body["seeds"], dtype=np.int64) if "seeds" in body else None,
        coefficients=np.array(body["coefficients"], dtype=np.float32) if "coefficients" in body else None,
        scores=to_torch(body["scores"]) if "scores" in body else None,
        gradient=to_torch(body["gradient"]) if "gradient" in body else None,
        train_loss=body.get("train_loss", float("nan")))
