"""What every batched kernel shares: the model as a batched network, the clients' batches, units of clients,
and the threads that run the units. A kernel (``bp.BackpropKernel``, ``zo.ZerothOrderKernel``) subclasses
``UnitKernel`` and writes two methods: how many clients fit in a unit, and one unit's computation.

``UnitKernel.run(state, config, datas, seeds)`` (the ``base.BatchedKernel`` protocol):

1. the model as a batched network (``layers.layer_spec``); None for every client if a layer is not
   supported (Conv2d, Linear, ReLU, MaxPool2d and Flatten in an ``nn.Sequential`` are);
2. clients whose data or state does not fit the network (dtype, shape) get None (the caller runs ``fit``);
3. the others are grouped by batch size ``min(config.batch_size, n)`` (small clients are batched too), and
   each group is cut into units (``units``) that run on ``torch.get_num_threads()`` Python threads with one
   intra-op thread each (the kernels release the GIL).

Epochs with a partial last batch (a kernel's ``partial``, ``local.batch_plan``): ``gather`` pads a partial
batch to the unit's batch size with copies of one of its samples and says how many samples each step holds;
a kernel whose ``computes_partial()`` is True weighs the padding 0 in the loss, the others get None for a
client whose plan has a partial batch (``fit`` runs it).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import ClassVar, Sequence

import numpy as np
import torch

from algorithms.base import TaskConfig
from algorithms.batched.layers import Layer, channels_last_steps, layer_spec
from algorithms.local import ClientData, ClientResult, ModelState, batch_order, plan_samples
from algorithms.params import FunctionalModel

__all__ = ["BUDGET_BYTES", "MAX_UNIT", "Net", "network", "gather", "fits", "units", "UnitKernel"]

BUDGET_BYTES = 16 << 20  # working set of one unit of clients (activations, weights, directions)
MAX_UNIT = 32  # clients per unit at most


@dataclass(frozen=True)
class Net:
    """A model in batched form: its layers, where its parameter tensors start, and activation sizes."""

    fm: FunctionalModel
    spec: tuple[Layer, ...]
    offsets: tuple[int, ...]  # where each parameter tensor starts in the flat vector
    spatial: bool  # convolutional: inputs (B, n*Cin, H, W) channels-last
    act_sum: int  # activation elements per sample, all layers (what backprop keeps)
    act_max: int  # largest layer input + output per sample (what a forward needs at once)


def network(fm: FunctionalModel) -> Net | None:
    """``fm`` as a batched network, or None if one of its layers is not supported."""
    spec = layer_spec(fm)
    if spec is None:
        return None
    sizes = [math.prod(fm.input_shape)]
    with torch.no_grad():
        h = torch.zeros(1, *fm.input_shape)
        for m in fm.module:
            h = m(h)
            sizes.append(h.numel())
    offsets = tuple(sorted(p[0] for layer in spec for p in (layer.weight, layer.bias) if p))
    act_max = max(a + b for a, b in zip(sizes, sizes[1:]))
    return Net(fm, spec, offsets, spec[0].kind == "conv", sum(sizes), act_max)


def gather(net: Net, datas: Sequence[ClientData], seeds: Sequence[int], steps: int, batch: int,
           partial: bool = False):
    """Each client's batches (``batch_plan(..., partial)``): the step inputs ``inputs[t]`` (``(B, n*Cin, H, W)``
    channels-last for a convolutional model, ``(n, B, F)`` otherwise), the labels ``(steps, n, B)``, and
    ``counts``: None when every batch is full, else the samples of each client's step ``(steps, n)``, a
    partial batch being padded to B with copies of its first sample (and label)."""
    n, shape = len(datas), tuple(net.fm.input_shape)
    xs = torch.empty(n, steps * batch, *shape)
    ys = torch.empty(n, steps * batch, dtype=torch.int64)
    taken = []  # each client's samples per step
    gen = torch.Generator()  # reseeded per client: the plans of batch_plan, one generator for the unit
    for k, (d, s) in enumerate(zip(datas, seeds)):
        idx, sizes = batch_order(len(d), batch, steps, s, partial, gen)
        taken.append(sizes)
        if len(idx) < steps * batch:
            idx = _padded(idx, sizes, batch)
        torch.index_select(d.x, 0, idx, out=xs[k])
        torch.index_select(d.y, 0, idx, out=ys[k])
    ys = ys.view(n, steps, batch).transpose(0, 1).contiguous()
    counts = None
    if any(m < batch for sizes in taken for m in sizes):
        counts = torch.tensor(taken, dtype=torch.int64).T.contiguous()
    xs = xs.view(n, steps, batch, *shape)
    if net.spatial:
        return channels_last_steps(xs), ys, counts
    return xs.view(n, steps, batch, -1).transpose(0, 1), ys, counts  # a client's step batch stays contiguous


def _padded(order: torch.Tensor, sizes: list[int], batch: int) -> torch.Tensor:
    """``order`` (steps of ``sizes`` samples, concatenated) with each partial step padded to ``batch`` by
    copies of its first sample."""
    if all(m == batch for m in sizes[:-1]):  # only the last step is partial (one pass): one copy
        last = order[len(order) - sizes[-1]:][:1]
        return torch.cat([order, last.expand(batch - sizes[-1])])
    parts = order.split(sizes)
    return torch.cat([p if m == batch else torch.cat([p, p[:1].expand(batch - m)]) for p, m in zip(parts, sizes)])


def fits(net: Net, state: ModelState, data: ClientData) -> bool:
    """Whether ``state`` and ``data`` have the dtypes and shapes the batched network computes with."""
    w, mask = state.weights, state.mask
    return (w.dtype == torch.float32 and w.dim() == 1 and w.numel() == net.fm.size
            and (mask is None or (mask.dtype == torch.bool and mask.shape == w.shape))
            and data.x.dtype == torch.float32 and data.y.dtype == torch.int64
            and tuple(data.x.shape[1:]) == tuple(net.fm.input_shape) and data.x.shape[0] == data.y.shape[0])


def units(members: list[int], per_unit: int, workers: int) -> list[list[int]]:
    """``members`` cut into even units of at most ``per_unit`` clients, at least one per worker, and never
    a lone client when it can have company: a one-model grouped convolution is another oneDNN kernel (it
    rounds differently), while any two or more models give the same bits whatever the unit size
    (measured), so units may follow the thread count without changing results."""
    n = len(members)
    count = max(-(-n // per_unit), min(workers, n))
    if n >= 2:
        count = min(count, n // 2)
    base, extra = divmod(n, count)
    cuts = np.cumsum([0] + [base + (i < extra) for i in range(count)])
    return [members[a:b] for a, b in zip(cuts[:-1], cuts[1:])]


class UnitKernel(ABC):
    """A ``base.BatchedKernel`` that computes clients in units; subclasses set ``model`` and ``needs_grad``
    and write ``unit_plan`` and ``run_unit``."""

    model: FunctionalModel
    needs_grad: ClassVar[bool]  # whether a unit runs under autograd
    partial: bool = False  # whether epochs end in a partial batch (``local.batch_plan``); a field of subclasses

    def computes_partial(self) -> bool:
        """Whether ``run_unit`` computes clients whose plan has a partial batch (False: they get None)."""
        return False

    @abstractmethod
    def unit_plan(self, net: Net, state: ModelState, batch: int) -> tuple[int, dict]:
        """(clients per unit, keyword options for ``run_unit``) for clients of batch size ``batch``."""

    @abstractmethod
    def run_unit(self, net: Net, state: ModelState, datas: list[ClientData], seeds: list[int], steps: int,
                 batch: int, **options) -> list[ClientResult]:
        """``fit`` for every client of one unit (all of batch size ``batch``), as one network."""

    def run(self, state: ModelState, config: TaskConfig, datas: Sequence[ClientData],
            seeds: Sequence[int]) -> list[ClientResult | None]:
        datas, seeds = list(datas), [int(s) for s in seeds]
        if len(datas) != len(seeds):
            raise ValueError(f"datas and seeds differ in length: {len(datas)} != {len(seeds)}")
        results: list[ClientResult | None] = [None] * len(datas)
        net = network(self.model)
        if net is None:
            return results
        by_batch: dict[int, list[int]] = {}
        steps, partial = config.local_steps, self.partial
        sizes = [len(d) for d in datas]
        for k, d in enumerate(datas):
            batch = min(config.batch_size, sizes[k])
            if fits(net, state, d) and (not partial or self.computes_partial()
                                        or plan_samples(sizes[k], batch, steps, True) == steps * batch):
                by_batch.setdefault(batch, []).append(k)
        threads = torch.get_num_threads()
        jobs = []
        for batch, members in by_batch.items():
            if partial:  # clients whose last batches are alike share units: less padding (bp.BackpropKernel)
                members.sort(key=lambda k: sizes[k] % batch or batch)
            per_unit, options = self.unit_plan(net, state, batch)
            jobs += [(unit, batch, options) for unit in units(members, per_unit, threads)]

        def compute(job):
            unit, batch, options = job
            torch.set_num_threads(1)
            with torch.enable_grad() if self.needs_grad else torch.no_grad():
                return unit, self.run_unit(net, state, [datas[k] for k in unit], [seeds[k] for k in unit],
                                           config.local_steps, batch, **options)

        workers = max(1, min(threads, len(jobs)))
        try:
            if workers == 1:
                done = [compute(job) for job in jobs]
            else:
                with ThreadPoolExecutor(workers) as pool:
                    done = list(pool.map(compute, jobs))
        finally:
            torch.set_num_threads(threads)
        for unit, out in done:
            for k, r in zip(unit, out):
                results[k] = r
        return results
