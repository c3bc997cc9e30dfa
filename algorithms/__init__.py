"""Learning algorithms, their models and their cost models.

This package root is torch-free on purpose: it re-exports only the interface (``algorithms.base``) and the
lazy registry (``algorithms.registry``). Torch-backed modules are imported by name when needed:
``algorithms.models``, ``algorithms.profiling``, ``algorithms.cost``, ``algorithms.fedavg``, ``algorithms.zo``.
"""

from algorithms.base import PHASES, Algorithm, ResourceDemand, TaskConfig
from algorithms.registry import ALGORITHMS, create_algorithm, load_algorithm_class

__all__ = [
    "ALGORITHMS",
    "PHASES",
    "Algorithm",
    "ResourceDemand",
    "TaskConfig",
    "create_algorithm",
    "load_algorithm_class",
]
