"""The narrow interface every federated learning algorithm offers the coordinator (torch-free).

A coordinator round asks the algorithm two questions before dispatching work:

* ``configure_task(round_index)`` -> :class:`TaskConfig`: what a client is asked to do this round.
* ``demand(config)`` -> :class:`ResourceDemand`: what that task costs one client (peak memory in bytes,
  FLOPs, payload bytes each way), from the cost model of a real torch model. The coordinator compares it
  with a device's free memory, throughput and links (participation gates, compute and link time).

The learning-plane hooks (``initial_state``, ``local_update``, ``aggregate``, ``evaluate``) carry real
weights; in timing mode they are never called. The base class raises ``NotImplementedError`` for them, so an
algorithm that only costs tasks still runs in timing mode. An algorithm
never sleeps, blocks, or reads a clock: the coordinator owns time.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

from algorithms._checks import non_negative_int, positive_int

__all__ = ["PHASES", "TaskConfig", "ResourceDemand", "Algorithm", "LEARNING_PLANE_MISSING"]

PHASES = ("train", "prune")
LEARNING_PLANE_MISSING = "algorithm {name!r} has no learning plane (it only costs tasks); run with mode: timing"


@dataclass(frozen=True)
class TaskConfig:
    """What a round asks of one client.

    ``phase``: ``'train'`` (local training steps) or ``'prune'`` (saliency scoring). ``local_steps``: local
    steps of ``batch_size`` samples each; in phase ``'prune'`` it counts the scoring draws (one batch each).
    """

    phase: str
    local_steps: int
    batch_size: int

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise ValueError(f"TaskConfig.phase must be one of {', '.join(PHASES)}, got {self.phase!r}")
        positive_int("TaskConfig.local_steps", self.local_steps)
        positive_int("TaskConfig.batch_size", self.batch_size)


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


class Algorithm(ABC):
    """A federated learning algorithm, seen from the coordinator.

    Subclasses set ``name`` (the registry key) and implement ``configure_task`` and ``demand``; both are
    pure (the same arguments give the same answer) and cheap after the first call.
    """

    name: ClassVar[str]

    @abstractmethod
    def configure_task(self, round_index: int) -> TaskConfig:
        """The task every selected client runs in round ``round_index`` (0-based)."""

    @abstractmethod
    def demand(self, config: TaskConfig) -> ResourceDemand:
        """The resources one client needs to run ``config`` to completion; ``ValueError`` if the phase does
        not belong to this algorithm."""

    # Learning plane. Algorithms that only cost tasks (timing mode) may leave these unimplemented.

    def client_task(self, config: TaskConfig, num_samples: int) -> TaskConfig:
        """``config`` fitted to a client holding ``num_samples`` training samples (its data size is part of
        its work): by default the batch shrinks to ``num_samples`` when the client has fewer."""
        if num_samples >= config.batch_size:
            return config
        return TaskConfig(config.phase, config.local_steps, max(1, num_samples))

    def state_task(self, round_index: int, state: Any) -> TaskConfig:
        """In learning mode, the task for round ``round_index`` given the current global ``state`` (an
        algorithm whose phases follow its state, like client-side pruning, overrides this); by default
        ``configure_task(round_index)``."""
        return self.configure_task(round_index)

    def initial_state(self, seed: int) -> Any:
        """The global state before round 0 (weights, and the mask if any), built from ``seed`` alone."""
        raise NotImplementedError(LEARNING_PLANE_MISSING.format(name=self.name))

    def local_update(self, state: Any, config: TaskConfig, data: Any, seed: int) -> Any:
        """Run ``config`` on one client's ``data`` from the global ``state``; all randomness derives from
        ``seed``; returns the update to send (must not mutate ``state``)."""
        raise NotImplementedError(LEARNING_PLANE_MISSING.format(name=self.name))

    def aggregate(self, state: Any, updates: Sequence[Any], weights: Sequence[float]) -> Any:
        """Combine client ``updates`` (with relative ``weights``, e.g. staleness discounts) into the next
        global state (pure: ``state`` is not mutated)."""
        raise NotImplementedError(LEARNING_PLANE_MISSING.format(name=self.name))

    def evaluate(self, state: Any, x: Any, y: Any) -> dict[str, float]:
        """Metrics of the global ``state`` on a held-out set: ``{"accuracy": ..., "loss": ...}``."""
        raise NotImplementedError(LEARNING_PLANE_MISSING.format(name=self.name))
