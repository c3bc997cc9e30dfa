"""The aggregation maths, as pure functions of tensors and numbers (as Flower's ``aggregate.py``).

No function here knows an algorithm, a client or a round: the learners (``algorithms.learner``,
``algorithms.zo``) call them, and ``tests/algorithms/test_aggregate.py`` checks each on toy inputs.

* ``weighted_sum(tensors, weights)``: sum_k w_k t_k, accumulated in float32 in the given order (one
  ``add_(alpha=w_k)`` per term: callers fix the order, the learning plane by task id);
* ``sample_shares(num_samples, weights)``: FedAvg's coefficients a_k = w_k n_k / sum_j n_j, where w_k is
  1 in a synchronous round and the staleness discount in FedBuff (so they need not sum to 1);
* ``mean_delta(deltas, num_samples, weights)``: the sample-weighted mean of the deltas,
  ``weighted_sum(deltas, sample_shares(num_samples, weights))``;
* ``apply_delta(weights, delta, mask)``: the next global weights w + delta, pruned coordinates held at 0;
* ``score_sum(scores, weights)``: the federated saliency sum_k w_k S_k with the weights normalised to sum 1,
  accumulated in float64 (tr(Theta_fed) = sum_k tr(Theta_k): see ``algorithms.pruning``).
"""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["weighted_sum", "sample_shares", "mean_delta", "apply_delta", "score_sum"]


def weighted_sum(tensors: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """sum_k weights[k] * tensors[k], in the dtype of ``tensors[0]``, accumulated term by term in the given
    order; ``ValueError`` for no tensors or a length mismatch."""
    tensors, weights = list(tensors), [float(w) for w in weights]
    if not tensors or len(tensors) != len(weights):
        raise ValueError(f"weighted_sum needs as many weights as tensors (at least one), got "
                         f"{len(tensors)} tensors and {len(weights)} weights")
    out = torch.zeros_like(tensors[0])
    for t, w in zip(tensors, weights):
        out.add_(t, alpha=w)
    return out


def sample_shares(num_samples: Sequence[int], weights: Sequence[float]) -> list[float]:
    """a_k = weights[k] * num_samples[k] / sum_j num_samples[j], in Python floats (w_k n_k first, then the
    division); ``ValueError`` for a length mismatch or a total of samples that is not positive."""
    num_samples, weights = list(num_samples), list(weights)
    if len(num_samples) != len(weights):
        raise ValueError(f"sample_shares: {len(num_samples)} sample counts but {len(weights)} weights")
    total = sum(num_samples)
    if total <= 0:
        raise ValueError(f"sample_shares needs a positive total of samples, got {num_samples!r:.80}")
    return [w * n / total for n, w in zip(num_samples, weights)]


def mean_delta(deltas: Sequence[torch.Tensor], num_samples: Sequence[int],
               weights: Sequence[float]) -> torch.Tensor:
    """The sample-weighted mean of ``deltas``: ``weighted_sum(deltas, sample_shares(num_samples, weights))``."""
    return weighted_sum(deltas, sample_shares(num_samples, weights))


def apply_delta(weights: torch.Tensor, delta: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """A new tensor ``weights + delta``, multiplied by ``mask`` when one is given (pruned coordinates stay
    exactly 0); neither input is modified."""
    new = weights + delta
    if mask is not None:
        new.mul_(mask)
    return new


def score_sum(scores: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """The federated score sum_k w_k S_k with ``weights`` (>= 0, e.g. sample counts) normalised to sum 1.
    Accumulated in float64, returned as float32. ``ValueError`` for no scores, vectors of different shapes,
    or weights that are negative, not finite, of the wrong count or sum to 0."""
    scores = list(scores) if isinstance(scores, (list, tuple)) else None
    if not scores:
        raise ValueError("scores must be a non-empty list of score vectors")
    first = scores[0]
    if not isinstance(first, torch.Tensor) or first.dim() != 1 or not first.is_floating_point():
        raise ValueError(f"scores must hold float vectors, got {first!r:.80}")
    if any(not isinstance(s, torch.Tensor) or s.shape != first.shape or not s.is_floating_point() for s in scores):
        raise ValueError(f"scores must hold float vectors all of shape {tuple(first.shape)}")
    w = torch.as_tensor(list(weights) if isinstance(weights, (list, tuple)) else weights, dtype=torch.float64)
    if (w.shape != (len(scores),) or not bool(torch.isfinite(w).all()) or bool((w < 0).any())
            or float(w.sum()) <= 0.0):
        raise ValueError(f"weights must be {len(scores)} finite numbers >= 0 with a positive sum, "
                         f"got {weights!r:.80}")
    w = w / w.sum()
    total = torch.zeros(first.shape, dtype=torch.float64)
    for share, s in zip(w, scores):
        total += share * s.double()
    return total.to(torch.float32)
