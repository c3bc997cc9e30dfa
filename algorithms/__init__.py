"""Learning algorithms, their models and their cost models.

This package root is torch-free on purpose: it re-exports only the interface (``algorithms.base``) and the
lazy registry (``algorithms.registry``). Torch-backed modules are imported by name when needed:
``algorithms.models``, ``algorithms.profiling``, ``algorithms.cost``, ``algorithms.fedavg``, ``algorithms.fedprox``,
``algorithms.zo``.
"""

from algorithms.base import PHASES, Algorithm, CostModel, Learner, ResourceDemand, TaskConfig, UpdateShape
from algorithms.registry import ALGORITHMS, create_algorithm, load_algorithm_class

__all__ = [
    "ALGORITHMS",
    "PHASES",
    "Algorithm",
    "CostModel",
    "Learner",
    "ResourceDemand",
    "TaskConfig",
    "UpdateShape",
    "create_algorithm",
    "load_algorithm_class",
]
