"""Algorithm names, as scenarios spell them, mapped to lazily imported ``"module:Class"`` entry points.

Importing this module does not import torch: the algorithm's module (and torch with it) is imported only
when ``create_algorithm`` builds one, so ``python -m fleet.run --help`` stays fast. ``PARAMETERS`` declares
each algorithm's parameters with types and bounds, so ``check_params`` rejects bad values (every variant
of a scenario, at load time) before torch is imported or any data is loaded.
"""

from __future__ import annotations

import importlib
import inspect
import reprlib
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

from algorithms.base import CostModel

__all__ = ["ALGORITHMS", "DATASET_PARAMS", "PARAMETERS", "Param", "check_params", "create_algorithm",
           "load_algorithm_class"]

ALGORITHMS = MappingProxyType({
    "fedavg": "algorithms.fedavg:FedAvg",
    "fedprox": "algorithms.fedprox:FedProx",
    "zo": "algorithms.zo:ZerothOrder",
    "fedfpzo": "algorithms.zo:FedFPZO",
    "fedmef": "algorithms.fedmef:FedMef",
    "autoprune": "algorithms.autoprune:AutoPrune",
})


def load_algorithm_class(name: str) -> type[CostModel]:
    """Import and return the class registered as ``name``; ``ValueError`` listing valid names if unknown."""
    entry = ALGORITHMS.get(name) if isinstance(name, str) else None
    if entry is None:
        raise ValueError(f"algorithm {name!r} is unknown; valid names: {', '.join(sorted(ALGORITHMS))}")
    module_name, _, class_name = entry.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, CostModel)):
        raise TypeError(f"entry point {entry!r} is not a CostModel subclass")
    return cls


def create_algorithm(name: str, **params: Any) -> CostModel:
    """Build the algorithm ``name`` with ``params``.

    Raises ``ValueError`` for an unknown name (listing the valid ones), for parameters the algorithm does not
    take (naming them and listing the accepted ones), and for bad values (``check_params``, then the
    algorithm's own checks).
    """
    check_params(name, {k: v for k, v in params.items() if k not in DATASET_PARAMS})
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


# --- parameters, checked without importing the algorithms (or torch) ---------------------------------

DATASET_PARAMS = ("input_shape", "num_classes")  # set from the dataset by the simulation, never by a scenario
_MODELS = ("cnn", "cnn_large", "cnn_ns", "cnn_femnist", "cnn_femnist_ns", "resnet_small", "mlp",
           "mlp_small")  # algorithms.models.MODELS (a test keeps them equal)
_SPARSE_FORMATS = ("dense_bitmap", "dense_bool", "csr")  # algorithms.cost.SPARSE_FORMATS


@dataclass(frozen=True)
class Param:
    """One algorithm parameter: ``kind`` ``"int"``, ``"float"`` or ``"choice"``; numbers lie in
    ``[low, high]`` (``low`` excluded when ``open_low``); ``optional`` also admits None."""

    kind: str
    low: float = 0.0
    high: float = 0.0
    choices: tuple[str, ...] = ()
    open_low: bool = False
    optional: bool = False

    def check(self, field: str, value: object) -> None:
        """``ValueError`` naming ``field`` unless ``value`` fits (bools are not numbers)."""
        if value is None and self.optional:
            return
        if self.kind == "choice":
            if not isinstance(value, str) or value not in self.choices:
                hint = (" (YAML reads an unquoted on/off/yes/no as a boolean: write it quoted, 'off')"
                        if isinstance(value, bool) else "")
                raise ValueError(f"{field} must be one of {', '.join(self.choices)}, got {_show(value)}{hint}")
            return
        ok_type = int if self.kind == "int" else (int, float)
        low_ok = (lambda v: v > self.low) if self.open_low else (lambda v: v >= self.low)
        if isinstance(value, bool) or not isinstance(value, ok_type) or not (
                low_ok(value) and value <= self.high):
            bracket = "(" if self.open_low else "["
            what = "an int" if self.kind == "int" else "a number"
            raise ValueError(f"{field} must be {what} in {bracket}{self.low:g}, {self.high:g}]"
                             f"{' or null' if self.optional else ''}, got {_show(value)}")


_COMMON = {  # every flat-weight learner: bounds under which memory, FLOPs and bytes stay computable
    "model": Param("choice", choices=_MODELS),
    "batch_size": Param("int", 1, 65_536),  # samples per step; the batch is held in memory
    "local_steps": Param("int", 1, 1_000_000),
    "density": Param("float", 0.0, 1.0, open_low=True),  # kept share of the weights
    "sparse_format": Param("choice", choices=_SPARSE_FORMATS),
    "lr": Param("float", 0.0, 1e3, open_low=True),
    "local_epochs": Param("float", 0.0, 1e4, open_low=True, optional=True),
    # what a local epoch is: one pass with a partial last batch, or full batches only (algorithms.local)
    "epoch": Param("choice", choices=("one_pass", "full_batches")),
}
_ZO = {
    **_COMMON,
    "queries": Param("int", 1, 100_000),  # perturbation directions per step
    "uplink": Param("choice", choices=("delta", "seeds")),
    "mu": Param("float", 1e-12, 1.0),  # smoothing; float32 weights see nothing below ~1e-12
    "clip": Param("float", 0.0, 1e12, open_low=True, optional=True),
}

#: Each algorithm's parameters by name (the class's keyword arguments less ``DATASET_PARAMS``).
_BP = {**_COMMON, "optimizer": Param("choice", choices=("sgd", "momentum", "adam"))}
_NO_PRUNER = ("fedavg", "fedprox", "zo")  # learning mode needs density 1

PARAMETERS = MappingProxyType({
    "fedavg": MappingProxyType(_BP),
    "fedprox": MappingProxyType({**_BP, "mu": Param("float", 0.0, 1e3)}),  # proximal weight; 0 is FedAvg
    "zo": MappingProxyType(_ZO),
    "fedfpzo": MappingProxyType({
        **_ZO,
        "prune_on": Param("choice", choices=("server", "clients")),
        "prune_samples": Param("int", 1, 100_000),  # scoring draws, one batch each
        "prune_iters": Param("int", 1, 10_000),  # iterative pruning steps
        "pruner": Param("choice", choices=("ntk", "random", "magnitude", "snip")),
        "prune_data": Param("choice", choices=("free", "local")),
        "ntk_eps": Param("float", 0.0, 1.0, open_low=True),
    }),
    "fedmef": MappingProxyType({
        **{k: v for k, v in _BP.items() if k != "sparse_format"},  # FedMef holds dense weights and a mask
        "layer_density": Param("choice", choices=("erk", "uniform")),  # how density is spread over layers
        "adjust_every": Param("int", 1, 1_000_000),  # Delta T: rounds between mask adjustments
        "adjust_until": Param("int", 0, 1_000_000),  # T_end: no adjustment after this round
        "adjust_alpha": Param("float", 0.0, 1.0),  # f_decay's alpha: share of active weights swapped at t=0
        "grad_upload": Param("choice", choices=("topk", "dense")),  # an adjustment round's gradient
        "bae": Param("choice", choices=("on", "off")),  # budget-aware extrusion
        "bae_lambda": Param("float", 0.0, 1e3),  # weight of the penalty on the marked weights
        "bae_norm": Param("choice", choices=("l2", "l1")),  # the norm inside the sigmoid (code: l1)
        "bae_penalty": Param("choice", choices=("squared", "unsquared")),  # code: unsquared, no lambda
        "bae_rounds": Param("choice", choices=("adjust", "every")),  # code: every round
        "sap_gamma": Param("float", 0.0, 0.999),  # share of each saved input dropped; 0 turns SAP off
        "sap_index": Param("choice", choices=("int32", "bitmap")),  # how SAP stores the kept positions
    }),
    "autoprune": MappingProxyType({
        **{k: v for k, v in _BP.items() if k not in ("sparse_format", "density")},  # dense, only narrower
        "band": Param("float", 0.0, 100.0, open_low=True),  # lambda: keep filters within mu +- band*sigma
        "prune_until": Param("int", 0, 1_000_000),  # the last round that may prune
        "patience": Param("int", 1, 1_000_000),  # stop after this many prunes without a parameter decrease
        "after_prune": Param("choice", choices=("copy", "reinit")),  # the authors' code re-initialises
    }),
})


def check_params(name: str, params: Mapping[str, Any], learning: bool = False) -> None:
    """Check ``params`` of algorithm ``name`` against ``PARAMETERS`` without importing it.

    ``ValueError`` (one line naming the parameter) for an unknown name or parameter, a value of the wrong
    type or out of bounds, a combination the algorithm refuses, and with ``learning`` a setting that only
    timing mode can cost (density < 1 without a pruner).
    """
    if name not in PARAMETERS:
        raise ValueError(f"algorithm {_show(name)} is unknown; valid names: {', '.join(sorted(ALGORITHMS))}")
    spec = PARAMETERS[name]
    for key, value in params.items():
        if key in DATASET_PARAMS:
            raise ValueError(f"{key} is set by the dataset, not by the scenario")
        if key not in spec:
            raise ValueError(f"algorithm {name!r} takes no parameter {_show(key)}; valid parameters: "
                             f"{', '.join(spec)}")
        spec[key].check(key, value)
    if name == "fedfpzo" and params.get("prune_on", "server") == "server" and (
            params.get("pruner") == "snip" or params.get("prune_data") == "local"):
        raise ValueError("prune_on 'server' has no training data: snip and prune_data 'local' need "
                         "prune_on 'clients'")
    if learning and name in _NO_PRUNER and params.get("density", 1.0) != 1.0:
        raise ValueError(f"density: learning mode needs density 1 ({name} has no pruner); use fedfpzo "
                         "for a sparse model")


def _show(value: object) -> str:
    """A short ``repr`` (at most ~100 characters) for messages."""
    return _SHOW.repr(value)


_SHOW = reprlib.Repr()
_SHOW.maxstring, _SHOW.maxother, _SHOW.maxlevel = 60, 60, 2
