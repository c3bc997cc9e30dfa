"""Algorithm names, as scenarios spell them, mapped to lazily imported ``"module:Class"`` entry points.

Importing this module does not import torch: the algorithm's module (and torch with it) is imported only
when ``create_algorithm`` builds one, so ``python -m fleet.run --help`` stays fast.
"""

from __future__ import annotations

import importlib
import inspect
from types import MappingProxyType
from typing import Any

from algorithms.base import Algorithm

__all__ = ["ALGORITHMS", "create_algorithm", "load_algorithm_class"]

ALGORITHMS = MappingProxyType({
    "fedavg": "algorithms.fedavg:FedAvg",
    "zo": "algorithms.zo:ZerothOrder",
    "fedfpzo": "algorithms.zo:FedFPZO",
})


def load_algorithm_class(name: str) -> type[Algorithm]:
    """Import and return the class registered as ``name``; ``ValueError`` listing valid names if unknown."""
    entry = ALGORITHMS.get(name) if isinstance(name, str) else None
    if entry is None:
        raise ValueError(f"algorithm {name!r} is unknown; valid names: {', '.join(sorted(ALGORITHMS))}")
    module_name, _, class_name = entry.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, Algorithm)):
        raise TypeError(f"entry point {entry!r} is not an Algorithm subclass")
    return cls


def create_algorithm(name: str, **params: Any) -> Algorithm:
    """Build the algorithm ``name`` with ``params``.

    Raises ``ValueError`` for an unknown name (listing the valid ones), for parameters the algorithm does not
    take (naming them and listing the accepted ones), and for bad values (from the algorithm's own checks).
    """
    cls = load_algorithm_class(name)
    accepted = [p for p in inspect.signature(cls).parameters.values()
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = sorted(set(params) - {p.name for p in accepted})
    if unknown:
        raise ValueError(f"algorithm {name!r} takes no parameter {', '.join(map(repr, unknown))}; "
                         f"valid parameters: {', '.join(p.name for p in accepted)}")
    try:
        return cls(**params)
    except TypeError as error:  # e.g. a missing required parameter of a future algorithm
        raise ValueError(f"algorithm {name!r}: {error}") from error
