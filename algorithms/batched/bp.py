"""The batched backprop kernel: ``local.bp_update`` for many clients at once, with any ``OptimizerStep``.

``BackpropKernel(model, step)`` computes, for every client of a unit, what
``bp_update(model, state, data, steps, batch, step, seed)`` computes: the same batches (``batch_plan``), the
same loss (``nll_loss``'s cascade sum over each client's picked log-probabilities), and ``step`` itself applied
per parameter tensor to the slice of every client's stacked weights (so an algorithm that changes the local
objective through ``OptimizerStep.gradient``, as FedProx, is batched with no code here). How close the results
are: ``docs/learning.md``.

Two options serve sparse training (FedMef's plain and mask rounds, ``fedmef_local.fedmef_update`` without an
upload):

* ``sap_gamma > 0``: the linear layers run under SAP (``layers.SapBatchedLinear``); a model with a
  convolution gets no result from the kernel (``layers.supports_sap``), so ``fit`` runs;
* ``penalty``: from the round's global state, a ``MarkedPenalty`` (or None), the same for every client; its
  gradient is added to the loss gradient of every step before ``step`` (so the mask still applies last).

``partial``: epochs whose last batch is partial (``local.batch_plan``). A step where some client's batch is
partial runs at the largest batch of the unit's clients in that step (``UnitKernel`` puts clients of similar
last batches together), the others padded and the padding weighed 0: each client's loss is the sum of its
samples' losses times 1/b (b its samples in the step), so every sample's gradient is the reference's
``-1/b``. Not under SAP (its kept set would see the padding): those clients run ``fit``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from algorithms.bae import BAE_PENALTIES
from algorithms.base import TaskConfig
from algorithms.batched.layers import batched_forward, layer_params, picked_log_probs, supports_sap
from algorithms.batched.units import BUDGET_BYTES, MAX_UNIT, Net, UnitKernel, gather
from algorithms.local import ClientData, ClientResult, ModelState
from algorithms.optim import OptimizerStep
from algorithms.params import FunctionalModel

__all__ = ["BackpropKernel", "MarkedPenalty"]

# autograd's engine, called as torch.autograd.grad calls it, without that function's argument handling (a
# tenth of a millisecond a step, measured); torch.autograd.grad where a torch release no longer has it
_ENGINE = getattr(getattr(torch.autograd, "Variable", None), "_execution_engine", None)


def _gradients(loss: torch.Tensor, leaves: tuple[torch.Tensor, ...], one: torch.Tensor) -> tuple:
    """``torch.autograd.grad(loss, leaves)`` for a scalar ``loss``, ``one`` being ``torch.ones(())``: the
    same engine call with the same seed gradient, so the same bits."""
    if _ENGINE is None:
        return torch.autograd.grad(loss, leaves)
    return _ENGINE.run_backward((loss,), (one,), False, False, leaves, False, False)


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
    partial: bool = False
    needs_grad = True

    def computes_partial(self) -> bool:
        return self.sap_gamma == 0

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
        inputs, ys, counts = gather(net, datas, seeds, steps, batch, self.partial)
        mask, anchor = state.mask, state.weights
        # Per parameter tensor, once for the unit: every client's weights as one contiguous (n, numel) tensor,
        # and that tensor in its layer's batched shape as an autograd leaf sharing its memory: the steps update
        # the weights in place, so a step builds no leaf, slice or reshape (what each step cost in Python).
        lengths = dict(zip(net.offsets, np.diff([*net.offsets, size]).tolist()))
        flat = {o: anchor[o:o + m].expand(n, m).clone() for o, m in lengths.items()}
        leaves: dict[int, torch.Tensor] = {}

        def leaf(o: int, count: int) -> torch.Tensor:
            return flat[o].unsqueeze(1)

        params = [None if p is None else tuple(t.detach().requires_grad_(True) for t in p)
                  for p in layer_params(net.spec, leaf, n, 1)]
        for layer, p in zip(net.spec, params):
            if p is not None:
                leaves[layer.weight[0]], leaves[layer.bias[0]] = p
        offsets = sorted(leaves)
        order = tuple(leaves[o] for o in offsets)
        # per parameter tensor, in offset order: its weights (n, numel), anchor and mask (numel,), slots
        ws = [flat[o] for o in offsets]
        anchors = [anchor[o:o + lengths[o]] for o in offsets]
        masks = None if mask is None else [mask[o:o + lengths[o]] for o in offsets]
        slots = [self.step.slots(w) for w in ws]
        slots1 = None if self.step.slot_count < 1 else [s[0] for s in slots]
        slots2 = None if self.step.slot_count < 2 else [s[1] for s in slots]
        shapes = [(n, lengths[o]) for o in offsets]
        one = torch.ones(())  # d loss / d loss, what torch.autograd.grad would make
        mosts = [batch] * steps if counts is None else counts.max(1).values.tolist()  # padding trimmed
        padded = [False] * steps if counts is None else (counts.min(1).values < counts.max(1).values).tolist()
        picked = []  # per step: each client's log-probabilities of its labels, (n, most)
        step_inputs, step_labels = inputs.unbind(0), ys.unbind(0)
        for t in range(1, steps + 1):
            most = mosts[t - 1]
            x, y = step_inputs[t - 1], step_labels[t - 1]
            if most < batch:
                x, y = x[:most] if net.spatial else x[:, :most], y[:, :most]
            logp = F.log_softmax(batched_forward(net.spec, params, x, n, 1, self.sap_gamma), -1)
            if not padded[t - 1]:
                loss = F.nll_loss(logp.reshape(n * most, -1), y.reshape(-1), reduction="sum") / most
            else:  # padded: a sample weighs 1/b in its client's loss, the padding 0
                b = counts[t - 1, :, None]
                scale = (torch.arange(most) < b).float() / b.float()
                loss = (F.nll_loss(logp.reshape(n * most, -1), y.reshape(-1), reduction="none").view(n, most)
                        * scale).sum()
            grads = _gradients(loss, order, one)
            with torch.no_grad():
                picked.append(picked_log_probs(logp.detach(), y))
                grads = [g.reshape(shape) for g, shape in zip(grads, shapes)]  # per parameter tensor, as the reference
                if penalty is not None:
                    for o, grad, w in zip(offsets, grads, ws):
                        penalty.add_gradient(o, grad, w)
                self.step.step_all(t, ws, grads, anchors, masks, slots1, slots2)
        delta = torch.cat([flat[o] for o in offsets], 1).sub_(state.weights)
        # each step's mean loss over the client's own samples, by nll_loss itself on the picked log-probs: its
        # cascade sum, so the reference's bits (layers.mean_nll emulates it; a few calls are cheaper here)
        sizes = [[batch] * n] * steps if counts is None else counts.tolist()
        zeros = torch.zeros(batch, dtype=torch.int64)
        losses = []
        for t in range(steps):
            for row, b in zip(picked[t].unbind(0), sizes[t]):
                losses.append(F.nll_loss((row if b == row.shape[0] else row[:b]).unsqueeze(1), zeros[:b]))
        per_client = np.ascontiguousarray(torch.stack(losses).view(steps, n).double().numpy().T)
        means = per_client.mean(axis=1)  # row by row as np.mean of each client's list of step losses
        return [ClientResult("delta", len(d), delta=delta[k].clone(), train_loss=float(means[k]))
                for k, d in enumerate(datas)]
