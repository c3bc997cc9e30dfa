"""BaE, FedMef's budget-aware extrusion: before a magnitude prune, push the weights about to be pruned
towards 0 so that their function moves into the kept weights (``shared/reference/seed-methods.md`` B.1).

* The marked set theta_low (``marked_indices``): per prunable tensor, the k_l active weights of smallest
  |theta| at the start of local training (k_l the coming prune's count), fixed for the whole local update.
* The penalty (``penalty_value`` / ``add_penalty_gradient``), added to the task loss:
  ``"squared"`` (reading P, the paper's Eq. 2): lambda * ||theta_low||_2^2, gradient 2 lambda theta on the
  marked weights; ``"unsquared"`` (reading C, FedPruning's code): sum over tensors of ||theta_low,l||_2, no
  lambda, gradient theta / ||theta_low,l||_2 (0 for a tensor whose marked weights are all 0).
* The budget-aware rate (``bae_rate``): beta_t = p(t) (2 sigmoid(||theta_low||) - 1) eta_0 with the REX
  factor p(t) = (2T - 2t) / (2T - t) over the round's T local steps, t = 0 .. T-1 the steps done before the
  current one (p = 1 at the first step, 2 / (T + 1) at the last). ||theta_low|| is the norm of the whole
  marked set (all tensors together): L2 (reading P) or L1 (reading C). The marked weights step at
  max(eta_t, beta_t) (``marked_rate``), every other weight at eta_t.

Since p(t) <= 1 and 2 sigmoid(x) - 1 < 1, beta_t < eta_0: with a constant local learning rate
(eta_t = eta_0, what ``algorithms.optim`` runs) the max is always eta_t and only the penalty acts. The rate
matters only under a decaying local schedule; ``marked_rate`` is written for that general case.
"""

from __future__ import annotations

import math

import torch

__all__ = ["BAE_NORMS", "BAE_PENALTIES", "rex_factor", "bae_rate", "marked_rate", "marked_indices",
           "marked_norm", "penalty_value", "add_penalty_gradient"]

BAE_NORMS = ("l2", "l1")
BAE_PENALTIES = ("squared", "unsquared")


def rex_factor(step: int, total: int) -> float:
    """p(t) = (2T - 2t) / (2T - t) for step t (0-based steps already done) of T."""
    if total < 1 or not 0 <= step <= total:
        raise ValueError(f"rex_factor needs 0 <= step <= total and total >= 1, got {step}, {total}")
    return (2 * total - 2 * step) / (2 * total - step)


def bae_rate(step: int, total: int, low_norm: float, lr0: float) -> float:
    """beta_t = p(t) (2 sigmoid(low_norm) - 1) lr0 (see the module docstring)."""
    return rex_factor(step, total) * (2.0 / (1.0 + math.exp(-low_norm)) - 1.0) * lr0


def marked_rate(lr: float, beta: float) -> float:
    """The marked weights' rate: max(eta_t, beta_t)."""
    return max(lr, beta)


def marked_indices(weights: torch.Tensor, mask: torch.Tensor, spans: list[tuple[int, int, tuple[int, ...]]],
                   counts: list[int]) -> list[torch.Tensor]:
    """Per prunable tensor (``spans``: offset, numel, shape), the int64 indices within the tensor of its
    ``counts[l]`` smallest |theta| among active positions (fewer when it has fewer active weights)."""
    out = []
    for (offset, n, _), k in zip(spans, counts):
        active = mask[offset:offset + n]
        k = min(k, int(torch.count_nonzero(active)))
        if k <= 0:
            out.append(torch.zeros(0, dtype=torch.int64))
            continue
        score = weights[offset:offset + n].abs().masked_fill_(~active, math.inf)
        out.append(torch.topk(score, k, largest=False, sorted=False).indices)
    return out


def marked_norm(tensors: list[torch.Tensor], marked: list[torch.Tensor], norm: str = "l2") -> float:
    """||theta_low|| over all marked weights: L2 or L1 (``tensors[l]`` is tensor l, any shape)."""
    if norm not in BAE_NORMS:
        raise ValueError(f"bae_norm must be one of {', '.join(BAE_NORMS)}, got {norm!r}")
    total = 0.0
    for w, idx in zip(tensors, marked):
        values = w.reshape(-1)[idx]
        total += float(values.abs().sum()) if norm == "l1" else float(values.square().sum())
    return total if norm == "l1" else math.sqrt(total)


def penalty_value(tensors: list[torch.Tensor], marked: list[torch.Tensor], lam: float,
                  penalty: str = "squared") -> float:
    """The penalty term of the loss: lam ||theta_low||_2^2, or sum_l ||theta_low,l||_2 (``"unsquared"``)."""
    if penalty == "squared":
        return lam * sum(float(w.reshape(-1)[idx].square().sum()) for w, idx in zip(tensors, marked))
    if penalty == "unsquared":
        return sum(float(w.reshape(-1)[idx].norm()) for w, idx in zip(tensors, marked))
    raise ValueError(f"bae_penalty must be one of {', '.join(BAE_PENALTIES)}, got {penalty!r}")


@torch.no_grad()
def add_penalty_gradient(grad: torch.Tensor, w: torch.Tensor, idx: torch.Tensor, lam: float,
                         penalty: str = "squared") -> None:
    """In place: ``grad`` += the penalty's gradient for one tensor ``w`` with marked indices ``idx``
    (a temporary of len(idx) floats)."""
    if idx.numel() == 0:
        return
    values = w.reshape(-1)[idx]
    if penalty == "squared":
        values.mul_(2.0 * lam)
    elif penalty == "unsquared":
        norm = float(values.norm())
        if norm == 0.0:
            return
        values.div_(norm)
    else:
        raise ValueError(f"bae_penalty must be one of {', '.join(BAE_PENALTIES)}, got {penalty!r}")
    grad.reshape(-1).index_add_(0, idx, values)
