"""Whom to ask and when: synchronous rounds and asynchronous buffers, over a ``Transport`` only."""

from fleet.coordinator.asynchronous import AsyncConfig, AsyncCoordinator, staleness_weight
from fleet.coordinator.base import CanEverComplete, Coordinator, RoundRecord, TaskPlan
from fleet.coordinator.sync import SyncConfig, SyncCoordinator

__all__ = ["AsyncConfig", "AsyncCoordinator", "CanEverComplete", "Coordinator", "RoundRecord",
           "SyncConfig", "SyncCoordinator", "TaskPlan", "staleness_weight"]
