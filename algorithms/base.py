"""The two sides of a federated learning algorithm, as small abstract classes (torch-free).

**The cost side** (:class:`CostModel`), all the coordinator and timing mode ever see:

* ``phases``: the task phases the algorithm uses (a subset of ``PHASES``);
* ``task(round_index, state=None)`` -> :class:`TaskConfig`: what a client is asked to do in a round; in
  learning mode the current global ``state`` is given, and an algorithm whose phases follow its state
  (client-side pruning) decides from it; in timing mode ``state`` is None and the round index decides;
* ``demand(config)`` -> :class:`ResourceDemand`: what that task costs one client (peak memory in bytes,
  FLOPs, payload bytes each way), from the cost model of a real torch model. The coordinator compares it
  with a device's free memory, throughput and links (participation gates, compute and link time);
* ``server_demand()``: the server's own bill for work it does outside the rounds (None by default).

**The learning side** (:class:`Learner`), what the learning plane calls with real weights:
``init(seed)``, ``fit_config(config, num_samples)``, ``fit(state, config, data, seed)``,
``aggregate(state, results, weights)``, ``evaluate(state, x, y)``, ``update_shape(config)`` (what a fit's
result carries, for the bridge's checks) and the optional capability ``batched_kernel(config)``: a
:class:`BatchedKernel` that computes many clients' ``fit`` at once (``algorithms.batched`` builds them),
or None, and then the learning plane runs ``fit`` client by client.

An :class:`Algorithm` has both sides. An algorithm that only costs tasks subclasses ``CostModel`` alone
and runs in timing mode. Neither side ever sleeps, blocks or reads a clock: the coordinator owns time.
``docs/learning.md`` ("Adding an algorithm") is the recipe.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import ClassVar, Generic, Protocol, Sequence, TypeVar

from algorithms._checks import non_negative_int, positive_int

__all__ = ["PHASES", "UPDATE_KINDS", "MODE_MAX_CHARS", "check_mode", "check_architecture", "TaskConfig",
           "ResourceDemand", "UpdateShape", "CostModel", "Learner", "BatchedKernel", "Algorithm",
           "LEARNING_PLANE_MISSING"]

PHASES = ("train", "prune")
UPDATE_KINDS = ("delta", "seeds", "scores", "delta_grad")
LEARNING_PLANE_MISSING = "algorithm {name!r} has no learning plane (it only costs tasks); run with mode: timing"

State = TypeVar("State")
Data = TypeVar("Data")
Result = TypeVar("Result")


@dataclass(frozen=True)
class TaskConfig:
    """What a round asks of one client.

    ``phase``: ``'train'`` (local training steps) or ``'prune'`` (saliency scoring). ``local_steps``: local
    steps of ``batch_size`` samples each; in phase ``'prune'`` it counts the scoring draws (one batch each).

    Two optional fields, empty unless the algorithm uses them (and then carried on the wire):

    * ``mode``: the algorithm's own kind of round within a phase, when its rounds differ in what they cost
      or do (FedMef: ``'mask'``, ``'plain'``, ``'adjust'``); at most ``MODE_MAX_CHARS`` of ``[a-z0-9_]``;
    * ``architecture``: the widths (output filters or units) of the model's prunable layers when the
      algorithm changes the architecture during the run (structured pruning); ``()`` is the model as
      registered. A device rebuilds the network from it.

    And one for the cost side only, never sent: ``samples``, the samples the task trains in all when its
    steps are not all full batches (local epochs that end in a partial batch, ``epoch: one_pass``), so the
    demand charges what is computed; 0 (the default) means ``local_steps * batch_size``. A client derives
    its batches from its own data (``local.batch_plan``), so the field need not travel.
    """

    phase: str
    local_steps: int
    batch_size: int
    mode: str = ""
    architecture: tuple[int, ...] = ()
    samples: int = 0

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise ValueError(f"TaskConfig.phase must be one of {', '.join(PHASES)}, got {self.phase!r}")
        positive_int("TaskConfig.local_steps", self.local_steps)
        positive_int("TaskConfig.batch_size", self.batch_size)
        check_mode("TaskConfig.mode", self.mode)
        check_architecture("TaskConfig.architecture", self.architecture)
        non_negative_int("TaskConfig.samples", self.samples)
        if self.samples and not self.local_steps <= self.samples <= self.local_steps * self.batch_size:
            raise ValueError(f"TaskConfig.samples must be 0 or between local_steps ({self.local_steps}) and "
                             f"local_steps * batch_size ({self.local_steps * self.batch_size}), "
                             f"got {self.samples}")

    @property
    def trained_samples(self) -> int:
        """Samples the task trains in all (over every step): ``samples``, or ``local_steps * batch_size``."""
        return self.samples or self.local_steps * self.batch_size


MODE_MAX_CHARS = 16


def check_mode(field: str, mode: object) -> str:
    """``mode`` if it is a string of at most ``MODE_MAX_CHARS`` characters of ``[a-z0-9_]``; else ValueError."""
    if not isinstance(mode, str) or len(mode) > MODE_MAX_CHARS or not all(
            c.islower() or c.isdigit() or c == "_" for c in mode) or not mode.isascii():
        raise ValueError(f"{field} must be at most {MODE_MAX_CHARS} characters of [a-z0-9_], got {mode!r}")
    return mode


def check_architecture(field: str, architecture: object) -> tuple[int, ...]:
    """``architecture`` if it is a tuple of positive ints (possibly empty); else ValueError."""
    if not isinstance(architecture, tuple) or not all(
            isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in architecture):
        raise ValueError(f"{field} must be a tuple of positive ints, got {architecture!r}")
    return architecture


@dataclass(frozen=True)
class ResourceDemand:
    """What one whole client task costs: peak memory (bytes), compute (FLOPs) and payloads (bytes)."""

    peak_memory_bytes: int
    flops: int
    bytes_down: int  # server -> client payload (model, mask), not counting message framing
    bytes_up: int  # client -> server payload (update, seeds, scores)

    def __post_init__(self) -> None:
        for field in ("peak_memory_bytes", "flops", "bytes_down", "bytes_up"):
            non_negative_int(f"ResourceDemand.{field}", getattr(self, field))


@dataclass(frozen=True)
class UpdateShape:
    """What the result of one ``fit`` carries: ``kind`` (one of ``UPDATE_KINDS``: a weight ``delta``, ZO
    ``seeds`` pairs, saliency ``scores``, or a delta with a gradient, ``delta_grad``) and, for ``seeds``,
    how many (seed, coefficient) pairs."""

    kind: str
    seed_pairs: int = 0

    def __post_init__(self) -> None:
        if self.kind not in UPDATE_KINDS:
            raise ValueError(f"UpdateShape.kind must be one of {', '.join(UPDATE_KINDS)}, got {self.kind!r}")
        non_negative_int("UpdateShape.seed_pairs", self.seed_pairs)
        if (self.kind == "seeds") != (self.seed_pairs > 0):
            raise ValueError(f"UpdateShape: seed_pairs > 0 exactly for kind 'seeds', got {self!r}")


class CostModel(ABC, Generic[State]):
    """The cost side: which task a round asks for and what it costs. Subclasses set ``name`` (the registry
    key) and ``phases``, and implement ``task`` and ``demand``; both are pure (the same arguments give the
    same answer) and cheap after the first call."""

    name: ClassVar[str]
    phases: ClassVar[tuple[str, ...]] = ("train",)

    @abstractmethod
    def task(self, round_index: int, state: State | None = None) -> TaskConfig:
        """The task every selected client runs in round ``round_index`` (0-based), given the current global
        ``state`` in learning mode (None in timing mode). Its phase is one of ``phases``."""

    @abstractmethod
    def demand(self, config: TaskConfig) -> ResourceDemand:
        """The resources one client needs to run ``config`` to completion; ``ValueError`` if ``config`` is
        not a ``TaskConfig`` of one of ``phases``."""

    def server_demand(self) -> ResourceDemand | None:
        """The server's bill for work outside the rounds (e.g. pruning before round 0, no payloads), or
        None when it has none (the default)."""
        return None

    def check_config(self, config: object) -> TaskConfig:
        """``config`` if it is a ``TaskConfig`` of one of ``phases``; ``ValueError`` naming both otherwise
        (what ``demand`` implementations call first)."""
        if not isinstance(config, TaskConfig) or config.phase not in self.phases:
            raise ValueError(f"config must be a TaskConfig of phase {' or '.join(map(repr, self.phases))} for "
                             f"{self.name}, got {config!r}")
        return config


class BatchedKernel(Protocol[State, Data, Result]):
    """Many clients' ``fit`` from one global state, computed together (``algorithms.batched`` builds them).

    ``run`` returns one entry per client, in order: the result ``fit(state, config, datas[k], seeds[k])``
    would give (bit for bit, or within the bounds ``docs/learning.md`` states), or None for a client the
    kernel cannot compute (the caller then runs ``fit`` for it). It never mutates ``state``."""

    def run(self, state: State, config: TaskConfig, datas: Sequence[Data],
            seeds: Sequence[int]) -> list[Result | None]: ...


class Learner(ABC, Generic[State, Data, Result]):
    """The learning side: real weights, real data. All randomness of ``init`` and ``fit`` derives from their
    ``seed``; no method mutates its arguments."""

    @abstractmethod
    def init(self, seed: int) -> State:
        """The global state before round 0 (weights, and the mask if any), built from ``seed`` alone."""

    @abstractmethod
    def fit(self, state: State, config: TaskConfig, data: Data, seed: int) -> Result:
        """Run ``config`` on one client's ``data`` from the global ``state``; returns what the client sends
        (shaped as ``update_shape(config)`` says)."""

    @abstractmethod
    def aggregate(self, state: State, results: Sequence[Result], weights: Sequence[float]) -> State:
        """The next global state from client ``results`` with relative ``weights`` (1 in a synchronous
        round, the staleness discount in FedBuff), in the given order (callers fix it: task id)."""

    @abstractmethod
    def evaluate(self, state: State, x: object, y: object) -> dict[str, float]:
        """Metrics of the global ``state`` on a held-out set: ``{"accuracy": ..., "loss": ...}``."""

    @abstractmethod
    def update_shape(self, config: TaskConfig) -> UpdateShape:
        """What ``fit(..., config, ...)`` returns: its kind and, for seed pairs, how many."""

    def fit_config(self, config: TaskConfig, num_samples: int) -> TaskConfig:
        """``config`` fitted to a client holding ``num_samples`` training samples (its data size is part of
        its work): by default the batch shrinks to ``num_samples`` when the client has fewer."""
        if num_samples >= config.batch_size:
            return config
        return replace(config, batch_size=max(1, num_samples))

    def batched_kernel(self, config: TaskConfig) -> BatchedKernel[State, Data, Result] | None:
        """The capability to run many clients' ``fit(state, config, ...)`` at once, or None (the default):
        then every client runs ``fit``."""
        return None


class Algorithm(CostModel[State], Learner[State, Data, Result], ABC):
    """Both sides: what a registry entry is when it can also learn (every algorithm shipped here)."""
