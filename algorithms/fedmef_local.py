"""FedMef's local update: masked backprop with BaE and SAP, and an adjustment round's dense gradient.

``fedmef_update(fm, state, data, steps, batch, step, seed, ...)`` is ``local.bp_update`` with three
additions, each optional:

* **SAP** (``sap_gamma > 0``): the forward runs through ``algorithms.sap.sap_call``, which keeps for the
  backward only the top (1 - gamma) of each Conv2d / Linear input by magnitude (the forward stays exact);
  with ``sap_gamma == 0`` it is ``FunctionalModel.call_with``.
* **BaE** (``bae`` given): the marked set theta_low is fixed from the starting weights (``bae.counts``
  smallest |theta| among the active weights of each prunable tensor); every step adds the penalty's gradient
  to theta_low (``algorithms.bae``). The marked weights' rate max(eta, beta_t) is eta itself here, because
  beta_t < eta_0 and the local rate is constant (``algorithms.bae``'s docstring), so the step is the
  optimizer's own.
* **The adjustment gradient** (``upload`` ``"topk"`` or ``"dense"``): after training, the dense gradient of
  the loss at the trained weights on one more batch of the client's data (the batch that ``batch_plan``
  draws after the training batches), flat, zero on the non-prunable parameters; with ``"topk"`` only the
  ``upload_counts[l]`` largest |g| among the inactive positions of each prunable tensor are kept.

Masked BP: the mask multiplies every gradient (``OptimizerStep``), so inactive weights stay exactly 0. The
optimizer's slots are released before the gradient pass. Returns a ``ClientResult`` of kind ``"delta"``, or
``"delta_grad"`` with ``gradient`` when a gradient was asked for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from algorithms.bae import BAE_NORMS, BAE_PENALTIES, add_penalty_gradient, marked_indices
from algorithms.dynamic_sparse import prunable_spans, topk_inactive
from algorithms.local import ClientData, ClientResult, ModelState, batch_plan
from algorithms.optim import OptimizerStep
from algorithms.params import FunctionalModel

__all__ = ["BaeSettings", "GRADIENT_UPLOADS", "forward", "fedmef_update"]

GRADIENT_UPLOADS = ("topk", "dense")


@dataclass(frozen=True)
class BaeSettings:
    """BaE for one local update: ``counts`` marked weights per prunable tensor (layout order), the penalty
    weight ``lam``, the norm in the sigmoid (``"l2"`` / ``"l1"``) and the penalty form."""

    counts: tuple[int, ...]
    lam: float = 1e-4
    norm: str = "l2"
    penalty: str = "squared"

    def __post_init__(self) -> None:
        if self.norm not in BAE_NORMS or self.penalty not in BAE_PENALTIES:
            raise ValueError(f"BaeSettings: bad norm {self.norm!r} or penalty {self.penalty!r}")


def forward(fm: FunctionalModel, params: list[torch.Tensor], x: torch.Tensor, sap_gamma: float,
            sap_index: str) -> torch.Tensor:
    """The logits of ``x``: through SAP when ``sap_gamma > 0``, else ``fm.call_with``."""
    if sap_gamma > 0.0:
        from algorithms.sap import sap_call  # SAP's module is imported only when SAP runs

        return sap_call(fm, params, x, sap_gamma, sap_index)
    return fm.call_with(params, x)


def _grads(fm, views, data, idx, sap_gamma, sap_index):
    """(loss, gradient per tensor) on the batch ``idx``; the batch is released after the forward (what the
    backward needs of it, its first layer saved)."""
    leaves = [v.detach().requires_grad_(True) for v in views]
    x = data.x[idx]
    logits = forward(fm, leaves, x, sap_gamma, sap_index)
    del x
    loss = F.cross_entropy(logits, data.y[idx])
    del logits
    grads = torch.autograd.grad(loss, leaves)
    return loss.item(), list(grads)


def _train(fm, w, state, data, plan, step, bae, sap_gamma, sap_index) -> list[float]:
    """The local steps, in place on ``w``; returns the task losses."""
    layout = fm.layout
    views = list(layout.views(w).values())
    anchors = list(layout.views(state.weights).values())
    masks = list(layout.views(state.mask).values()) if state.mask is not None else [None] * len(views)
    slots = [step.slots(v) for v in views]
    prunable = [i for i, p in enumerate(layout.prunable) if p]
    marked: dict[int, torch.Tensor] = {}
    if bae is not None:
        mask = state.mask if state.mask is not None else torch.ones(layout.size, dtype=torch.bool)
        marked = dict(zip(prunable, marked_indices(w, mask, prunable_spans(layout), list(bae.counts))))
    losses = []
    for t, idx in enumerate(plan, start=1):
        loss, grads = _grads(fm, views, data, idx, sap_gamma, sap_index)
        losses.append(loss)
        with torch.no_grad():
            for i, (v, g, anchor, mask, (slot1, slot2)) in enumerate(zip(views, grads, anchors, masks, slots)):
                if i in marked:
                    add_penalty_gradient(g, v, marked[i], bae.lam, bae.penalty)
                step(t, v, g, anchor, mask, slot1, slot2)
        del grads
    return losses


def fedmef_update(fm: FunctionalModel, state: ModelState, data: ClientData, steps: int, batch: int,
                  step: OptimizerStep, seed: int, *, bae: BaeSettings | None = None, sap_gamma: float = 0.0,
                  sap_index: str = "bitmap", upload: str | None = None,
                  upload_counts: list[int] | None = None, partial: bool = False) -> ClientResult:
    """``steps`` masked backprop steps of ``batch`` samples (``local.batch_plan(..., partial)``: with
    ``partial`` an epoch's last batch takes what is left; see the module docstring), then, with ``upload``,
    the adjustment gradient. ``state`` is never modified; all randomness comes from ``seed``."""
    if not isinstance(step, OptimizerStep):
        raise ValueError(f"step must be an algorithms.optim.OptimizerStep, got {step!r:.80}")
    if upload is not None and upload not in GRADIENT_UPLOADS:
        raise ValueError(f"upload must be None or one of {', '.join(GRADIENT_UPLOADS)}, got {upload!r}")
    plan = batch_plan(len(data), batch, steps + (upload is not None), seed, partial)
    w = state.weights.clone()
    losses = _train(fm, w, state, data, plan[:steps], step, bae, sap_gamma, sap_index)
    gradient = None
    if upload is not None:
        gradient = _adjustment_gradient(fm, w, state, data, plan[-1], sap_gamma, sap_index, upload,
                                        upload_counts)
    kind = "delta" if gradient is None else "delta_grad"
    return ClientResult(kind, len(data), delta=w.sub_(state.weights), gradient=gradient,
                        train_loss=float(np.mean(losses)))


def _adjustment_gradient(fm, w, state, data, idx, sap_gamma, sap_index, upload, upload_counts) -> torch.Tensor:
    """The flat gradient an adjustment round uploads (zero on the non-prunable parameters)."""
    layout = fm.layout
    gradient = torch.zeros(layout.size, dtype=w.dtype)
    _, grads = _grads(fm, list(layout.views(w).values()), data, idx, sap_gamma, sap_index)
    for k, (part, g) in enumerate(zip(layout.views(gradient).values(), grads)):
        if layout.prunable[k]:
            part.copy_(g)
        grads[k] = None  # released one by one
    del grads
    if upload == "topk":
        mask = state.mask if state.mask is not None else torch.ones(layout.size, dtype=torch.bool)
        if upload_counts is None:
            raise ValueError("upload 'topk' needs upload_counts")
        topk_inactive(gradient, mask, layout, upload_counts)
    return gradient
