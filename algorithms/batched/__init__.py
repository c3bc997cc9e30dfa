"""Batched local updates: many clients' ``fit`` from one global state, computed together, fast.

Batching is a capability an algorithm declares: ``Learner.batched_kernel(config)`` returns a kernel built
from this package's building blocks, or None. This package never names an algorithm (an import contract
holds it to that); it offers:

* ``BackpropKernel(model, step, sap_gamma, penalty, partial)`` (``bp.py``): ``local.bp_update`` with any
  ``optim.OptimizerStep``; optionally under SAP (linear layers) and with a ``MarkedPenalty`` (BaE's); epochs
  with a partial last batch (``partial``) padded, the padding weighed 0;
* ``ZerothOrderKernel(model, lr, queries, mu, clip, uplink, partial)`` (``zo.py``): ``local.zo_update`` and
  the uplink (a client whose epoch ends in a partial batch runs ``fit``);
* ``UnitKernel`` (``units.py``): the base to write another kernel on (grouping, units, threads);
* ``batched_local_updates(learner, state, config, datas, seeds)``: what
  ``[learner.fit(state, config, datas[k], seeds[k]) for k]`` returns, through the learner's kernel where it
  has one and can compute a client, through ``fit`` otherwise (phase ``'prune'``, an algorithm without a
  kernel, a layer the kernels do not support, data of another dtype or shape).

The layout and what was measured (why one grouped convolution, units of a few clients, one intra-op thread
per unit) and what is exact and what rounds differently: ``docs/learning.md``, "The batched kernels".
"""

from __future__ import annotations

from typing import Sequence

from algorithms.base import Learner, TaskConfig
from algorithms.batched.bp import BackpropKernel, MarkedPenalty
from algorithms.batched.units import UnitKernel
from algorithms.batched.zo import ZerothOrderKernel
from algorithms.seeds import derive_seeds

__all__ = ["batched_local_updates", "BackpropKernel", "MarkedPenalty", "ZerothOrderKernel", "UnitKernel",
           "derive_seeds"]


def batched_local_updates(learner: Learner, state, config: TaskConfig, datas: Sequence,
                          seeds: Sequence[int]) -> list:
    """``[learner.fit(state, config, datas[k], seeds[k]) for k]``, through ``learner.batched_kernel(config)``
    where it computes a client (see the module docstring); ``ValueError`` if the lengths differ."""
    datas, seeds = list(datas), [int(s) for s in seeds]
    if len(datas) != len(seeds):
        raise ValueError(f"datas and seeds differ in length: {len(datas)} != {len(seeds)}")
    kernel = learner.batched_kernel(config)
    results = kernel.run(state, config, datas, seeds) if kernel is not None and datas else [None] * len(datas)
    if len(results) != len(datas):
        raise ValueError(f"{type(kernel).__name__}.run returned {len(results)} results for {len(datas)} clients")
    return [learner.fit(state, config, d, s) if r is None else r for r, d, s in zip(results, datas, seeds)]
