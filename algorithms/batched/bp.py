"""The batched backprop kernel: ``local.bp_update`` for many clients at once, with any ``OptimizerStep``.

``BackpropKernel(model, step)`` computes, for every client of a unit, what
``bp_update(model, state, data, steps, batch, step, seed)`` computes: the same batches (``batch_plan``), the
same loss (``layers.mean_nll``: ``nll_loss``'s cascade sum), and ``step`` itself applied per parameter tensor
to the slice of every client's stacked weights (so an algorithm that changes the local objective through
``OptimizerStep.gradient``, as FedProx, is batched with no code here). How close the results are:
``docs/learning.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from algorithms.batched.layers import batched_forward, layer_params, mean_nll, picked_log_probs
from algorithms.batched.units import BUDGET_BYTES, MAX_UNIT, Net, UnitKernel, gather
from algorithms.local import ClientData, ClientResult, ModelState
from algorithms.optim import OptimizerStep
from algorithms.params import FunctionalModel

__all__ = ["BackpropKernel"]


@dataclass(frozen=True, eq=False)
class BackpropKernel(UnitKernel):
    """``bp_update`` with ``step`` on ``model``, batched (see the module docstring)."""

    model: FunctionalModel
    step: OptimizerStep
    needs_grad = True

    def unit_plan(self, net: Net, state: ModelState, batch: int) -> tuple[int, dict]:
        """Clients per unit: weights, gradients, optimizer slots, the anchor and saved activations within the
        budget (two at least: see ``units.units``)."""
        per_client = 4 * (net.fm.size * (3 + self.step.slot_count) + batch * net.act_sum)
        return max(2, min(MAX_UNIT, BUDGET_BYTES // per_client)), {}

    def run_unit(self, net: Net, state: ModelState, datas: list[ClientData], seeds: list[int], steps: int,
                 batch: int, **options) -> list[ClientResult]:
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
            logp = F.log_softmax(batched_forward(net.spec, params, inputs[t - 1], n, 1), -1)
            y = ys[t - 1]
            loss = F.nll_loss(logp.reshape(n * batch, -1), y.reshape(-1), reduction="sum") / batch
            offsets = sorted(leaves)
            grads = torch.autograd.grad(loss, [leaves[o] for o in offsets])
            with torch.no_grad():
                picked[t - 1] = picked_log_probs(logp.detach(), y)
                for o, grad in zip(offsets, grads):  # per parameter tensor, as the reference
                    part = slice(o, o + grad.shape[1])
                    self.step(t, w[:, part], grad, anchor[part], None if mask is None else mask[part],
                              None if slot1 is None else slot1[:, part], None if slot2 is None else slot2[:, part])
        delta = w.sub_(state.weights)
        per_step = mean_nll(picked.view(steps * n, batch)).view(steps, n)
        per_client = np.ascontiguousarray(per_step.double().numpy().T)
        return [ClientResult("delta", len(d), delta=delta[k].clone(), train_loss=float(np.mean(per_client[k])))
                for k, d in enumerate(datas)]
