"""The batched backprop kernel: ``local.bp_update`` for many clients at once, with any ``OptimizerStep``.

``BackpropKernel(model, step)`` computes, for every client of a unit, what
``bp_update(model, state, data, steps, batch, step, seed)`` computes: the same batches (``batch_plan``), the
same loss (``layers.mean_nll``: ``nll_loss``'s cascade sum), and ``step`` itself applied per parameter tensor
to the slice of every client's stacked weights (so an algorithm that changes the local objective through
``OptimizerStep.gradient``, as FedProx, is batched with no code here). How close the results are:
``docs/learning.md``.

Two options serve sparse training (FedMef's plain and mask rounds, ``fedmef_local.fedmef_update`` without an
upload):

* ``sap_gamma > 0``: the linear layers run under SAP (``layers.SapBatchedLinear``); a model with a
  convolution gets no result from the kernel (``layers.supports_sap``), so ``fit`` runs;
* ``penalty``: from the round's global state, a ``MarkedPenalty`` (or None), the same for every client; its
  gradient is added to the loss gradient of every step before ``step`` (so the mask still applies last).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from algorithms.bae import BAE_PENALTIES
from algorithms.base import TaskConfig
from algorithms.batched.layers import batched_forward, layer_params, mean_nll, picked_log_probs, supports_sap
from algorithms.batched.units import BUDGET_BYTES, MAX_UNIT, Net, UnitKernel, gather
from algorithms.local import ClientData, ClientResult, ModelState
from algorithms.optim import OptimizerStep
from algorithms.params import FunctionalModel

__all__ = ["BackpropKernel", "MarkedPenalty"]


@dataclass(frozen=True, eq=False)
class MarkedPenalty:
    """A penalty on fixed coordinates of some parameter tensors, the same for every client of a run, added to
    the loss: ``marked`` maps a parameter tensor's offset in the flat vector to the distinct int64 indices,
    within that tensor, it penalises. ``form`` ``"squared"``: ``lam * ||w_marked||_2^2`` (gradient
    ``2 lam w`` on the marked coordinates); ``"unsquared"``: the sum over tensors of ``||w_marked,l||_2``
    (gradient ``w / ||w_marked,l||_2``, none for a tensor whose marked weights are all 0; ``lam`` unused).
    The one-client reference is ``algorithms.bae.add_penalty_gradient`` (BaE's penalty); "squared" adds
    the same bits, "unsquared" may round its norm differently."""

    marked: dict[int, torch.Tensor]
    lam: float
    form: str = "squared"

    def __post_init__(self) -> None:
        if self.form not in BAE_PENALTIES:
            raise ValueError(f"MarkedPenalty.form must be one of {', '.join(BAE_PENALTIES)}, got {self.form!r}")

    @torch.no_grad()
    def add_gradient(self, offset: int, grad: torch.Tensor, w: torch.Tensor) -> None:
        """In place: ``grad`` ``(n, numel)`` (the loss gradients of the tensor at ``offset``, one row per
        client) += the penalty's gradient at the weights ``w`` ``(n, numel)``."""
        idx = self.marked.get(offset)
        if idx is None or idx.numel() == 0:
            return
        values = w.index_select(1, idx)
        if self.form == "squared":
            values.mul_(2.0 * self.lam)
        else:
            norm = torch.linalg.vector_norm(values, dim=1, keepdim=True)
            values = torch.where(norm == 0, torch.zeros_like(values), values / norm)
        grad.index_add_(1, idx, values)


@dataclass(frozen=True, eq=False)
class BackpropKernel(UnitKernel):
    """``bp_update`` with ``step`` on ``model``, batched, optionally under SAP at ``sap_gamma`` and with the
    penalty ``penalty(state)`` (see the module docstring)."""

    model: FunctionalModel
    step: OptimizerStep
    sap_gamma: float = 0.0
    penalty: Callable[[ModelState], MarkedPenalty | None] | None = None
    needs_grad = True

    def run(self, state: ModelState, config: TaskConfig, datas: Sequence[ClientData],
            seeds: Sequence[int]) -> list[ClientResult | None]:
        """``UnitKernel.run``; no result for any client (``fit`` runs) when SAP is asked of a model whose
        batched network cannot run it."""
        if self.sap_gamma > 0 and not supports_sap(self.model):
            return [None] * len(datas)
        return super().run(state, config, datas, seeds)

    def unit_plan(self, net: Net, state: ModelState, batch: int) -> tuple[int, dict]:
        """Clients per unit: weights, gradients, optimizer slots, the anchor and saved activations within the
        budget (two at least: see ``units.units``); the penalty of ``state`` as ``run_unit``'s option."""
        per_client = 4 * (net.fm.size * (3 + self.step.slot_count) + batch * net.act_sum)
        penalty = None if self.penalty is None else self.penalty(state)
        return max(2, min(MAX_UNIT, BUDGET_BYTES // per_client)), {"penalty": penalty}

    def run_unit(self, net: Net, state: ModelState, datas: list[ClientData], seeds: list[int], steps: int,
                 batch: int, penalty: MarkedPenalty | None = None, **options) -> list[ClientResult]:
        n, size = len(datas), state.weights.numel()
        inputs, ys = gather(net, datas, seeds, steps, batch)
        w = state.weights.expand(n, size).clone()
        mask, anchor = state.mask, state.weights
        slot1, slot2 = self.step.slots(w)
        picked = torch.empty(steps, n, batch)
        for t in range(1, steps + 1):
            leaves: dict[int, torch.Tensor] = {}  # one leaf per parameter tensor: no (n, P) slice backward

            def leaf(o: int, count: int) -> torch.Tensor:
                leaves[o] = w[:, o:o + count].detach().requires_grad_(True)
                return leaves[o].unsqueeze(1)

            params = layer_params(net.spec, leaf, n, 1)
            logp = F.log_softmax(batched_forward(net.spec, params, inputs[t - 1], n, 1, self.sap_gamma), -1)
            y = ys[t - 1]
            loss = F.nll_loss(logp.reshape(n * batch, -1), y.reshape(-1), reduction="sum") / batch
            offsets = sorted(leaves)
            grads = torch.autograd.grad(loss, [leaves[o] for o in offsets])
            with torch.no_grad():
                picked[t - 1] = picked_log_probs(logp.detach(), y)
                for o, grad in zip(offsets, grads):  # per parameter tensor, as the reference
                    part = slice(o, o + grad.shape[1])
                    if penalty is not None:
                        penalty.add_gradient(o, grad, w[:, part])
                    self.step(t, w[:, part], grad, anchor[part], None if mask is None else mask[part],
                              None if slot1 is None else slot1[:, part], None if slot2 is None else slot2[:, part])
        delta = w.sub_(state.weights)
        per_step = mean_nll(picked.view(steps * n, batch)).view(steps, n)
        per_client = np.ascontiguousarray(per_step.double().numpy().T)
        return [ClientResult("delta", len(d), delta=delta[k].clone(), train_loss=float(np.mean(per_client[k])))
                for k, d in enumerate(datas)]
