"""One optimizer step, shared by the sequential reference (``local.bp_update``) and the batched kernel
(``algorithms.batched.BackpropKernel``), so the two apply the same elementwise formulas in the same order.

``OptimizerStep(kind, lr)`` is called once per parameter tensor per local step with tensors of one shape
(the sequential path: one parameter's view; the batched path: that parameter's slice of every client's
stacked weights, with ``anchor`` and ``mask`` broadcasting over the clients):

1. ``grad = self.gradient(w, grad, anchor)``: the loss gradient plus any term of the local objective that
   depends on the weights (the hook a variant overrides; ``anchor`` is the global weights the local update
   started from: FedProx's proximal term reads it); by default ``grad`` itself;
2. ``grad *= mask`` when a mask is given: pruned coordinates never move, whatever the hook added;
3. SGD ``w -= lr g``; momentum 0.9 ``m = 0.9 m + g; w -= lr m``; Adam (0.9, 0.999, eps 1e-8, bias-corrected)
   with ``denom`` written into ``grad``'s storage, so the step allocates no parameter-sized buffer (what the
   memory model in ``docs/memory.md`` assumes).

``t`` counts the local steps from 1 (Adam's bias correction). ``grad`` is used as scratch.

``step_all`` applies the step to every parameter tensor at once, each formula one ``torch._foreach_*`` call
over the tensors (on CPU, ATen runs the per-tensor operator for each: the same bits as one tensor at a time);
``__call__`` is ``step_all`` on one tensor, so the formulas are written once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from algorithms import _checks

__all__ = ["OPTIMIZERS", "OptimizerStep", "ADAM_BETAS", "ADAM_EPS", "MOMENTUM"]

OPTIMIZERS = ("sgd", "momentum", "adam")
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
MOMENTUM = 0.9
_SLOTS = {"sgd": 0, "momentum": 1, "adam": 2}


@dataclass(frozen=True)
class OptimizerStep:
    """SGD, momentum or Adam at learning rate ``lr`` (see the module docstring for the formulas)."""

    kind: str
    lr: float

    def __post_init__(self) -> None:
        _checks.choice("optimizer", self.kind, OPTIMIZERS)
        _checks.positive_float("lr", self.lr)

    @property
    def slot_count(self) -> int:
        """Parameter-sized buffers the optimizer keeps: 0 (SGD), 1 (momentum), 2 (Adam)."""
        return _SLOTS[self.kind]

    def slots(self, like: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Fresh zero slots shaped like ``like`` (None where the optimizer keeps none)."""
        count = self.slot_count
        return (torch.zeros_like(like) if count >= 1 else None, torch.zeros_like(like) if count >= 2 else None)

    def gradient(self, w: torch.Tensor, grad: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
        """The gradient of the local objective from the loss gradient ``grad`` (may update it in place);
        plain empirical risk: ``grad``."""
        return grad

    def __call__(self, t: int, w: torch.Tensor, grad: torch.Tensor, anchor: torch.Tensor,
                 mask: torch.Tensor | None, slot1: torch.Tensor | None, slot2: torch.Tensor | None) -> None:
        """Step ``t`` (from 1) on ``w`` in place; the slots are updated in place too. Runs without autograd
        (entered here only when the caller has not: both callers have, and the check is cheaper)."""
        if torch.is_grad_enabled():
            with torch.no_grad():
                return self(t, w, grad, anchor, mask, slot1, slot2)
        self.step_all(t, [w], [grad], [anchor], None if mask is None else [mask],
                      None if slot1 is None else [slot1], None if slot2 is None else [slot2])

    def step_all(self, t: int, ws: Sequence[torch.Tensor], grads: Sequence[torch.Tensor],
                 anchors: Sequence[torch.Tensor], masks: Sequence[torch.Tensor] | None,
                 slots1: Sequence[torch.Tensor] | None, slots2: Sequence[torch.Tensor] | None) -> None:
        """``self(t, ws[i], grads[i], anchors[i], masks[i], slots1[i], slots2[i])`` for every i, the same
        results; ``masks`` None when dense, a slot list None when the optimizer keeps no such slot. Call it
        without autograd. A subclass that overrides ``gradient`` gets it called per tensor first."""
        ws, grads = list(ws), list(grads)
        if type(self).gradient is not OptimizerStep.gradient:
            grads = [self.gradient(w, g, a) for w, g, a in zip(ws, grads, anchors)]
        if masks is not None:
            torch._foreach_mul_(grads, list(masks))
        lr = self.lr
        if self.kind == "sgd":
            torch._foreach_add_(ws, grads, alpha=-lr)
        elif self.kind == "momentum":
            slots1 = list(slots1)
            torch._foreach_mul_(slots1, MOMENTUM)
            torch._foreach_add_(slots1, grads)
            torch._foreach_add_(ws, slots1, alpha=-lr)
        else:
            b1, b2 = ADAM_BETAS
            slots1, slots2 = list(slots1), list(slots2)
            torch._foreach_mul_(slots1, b1)
            torch._foreach_add_(slots1, grads, alpha=1 - b1)
            torch._foreach_mul_(slots2, b2)
            torch._foreach_addcmul_(slots2, grads, grads, value=1 - b2)
            torch._foreach_copy_(grads, slots2)  # denom in grad's storage, as __call__
            torch._foreach_div_(grads, 1 - b2 ** t)
            torch._foreach_sqrt_(grads)
            torch._foreach_add_(grads, ADAM_EPS)
            torch._foreach_addcdiv_(ws, slots1, grads, value=-lr / (1 - b1 ** t))
