"""Dynamic sparse training on flat weight vectors (RigL-style, as FedMef runs it): layer densities, the
initial mask, the cosine swap schedule, prune-and-grow, and the clients' top-k gradient filter.

All functions work per prunable tensor of a ``params.ParamLayout`` (conv/linear weights); biases, NSConv
gains and any other parameter are always dense (mask ``True``). Masks are flat bool vectors of length P,
weights and gradients flat float32 vectors of length P.

* ``layer_densities(layout, density, kind)``: ``"uniform"`` gives every prunable tensor ``density``;
  ``"erk"`` (Erdos-Renyi-Kernel, Evci et al. 2020) gives tensor l a density proportional to
  sum(shape_l) / prod(shape_l), scaled so that the kept count over all prunable tensors is
  ``density * Pp``; a tensor whose density would exceed 1 is made dense and the scale is recomputed over
  the others (repeated until none exceeds 1).
* ``kept_counts``: per prunable tensor, ``round(density_l * n_l)`` kept weights (at least 1).
* ``initial_mask``: per tensor, the ``kept_counts`` largest |w| of the weights at random initialisation
  (FedPruning's ``ERK_magnitude``).
* ``f_decay(t, alpha, t_end) = alpha/2 * (1 + cos(pi * t / t_end))`` for 0 <= t <= t_end, 0 after t_end.
* ``swap_counts(mask, layout, fraction)``: k_l = int(fraction * N_active_l) per prunable tensor.
* ``prune_and_grow``: per tensor, drop the k_l smallest |theta| among the active weights, then grow the k_l
  largest |gradient| among the inactive positions computed AFTER the drop (a just-dropped weight can be
  regrown); grown weights are 0. The number of active weights per tensor is unchanged.
* ``topk_inactive``: a client's gradient reduced to the k_l largest |g| among the currently inactive
  positions of each prunable tensor (zeros elsewhere, dense parameters included).

Ties in |theta| or |g| are broken by ``torch.topk`` (deterministic on CPU for a given input).
"""

from __future__ import annotations

import math

import torch

from algorithms import _checks
from algorithms.params import ParamLayout

__all__ = ["LAYER_DENSITIES", "layer_densities", "kept_counts", "initial_mask", "f_decay", "swap_counts",
           "prune_and_grow", "topk_inactive", "prunable_spans"]

LAYER_DENSITIES = ("erk", "uniform")


def prunable_spans(layout: ParamLayout) -> list[tuple[int, int, tuple[int, ...]]]:
    """(offset, numel, shape) of each prunable tensor, in layout order."""
    return [(layout.offsets[i], layout.numel(i), layout.shapes[i])
            for i, keep in enumerate(layout.prunable) if keep]


def layer_densities(layout: ParamLayout, density: float, kind: str = "erk") -> list[float]:
    """The density of each prunable tensor (layout order) for an overall prunable density ``density``."""
    density = _checks.density("density", density)
    _checks.choice("layer_density", kind, LAYER_DENSITIES)
    spans = prunable_spans(layout)
    if kind == "uniform" or density == 1.0:
        return [density] * len(spans)
    dense: set[int] = set()
    while True:
        budget = density * sum(n for _, n, _ in spans) - sum(spans[i][1] for i in dense)
        raw = {i: sum(shape) / n for i, (_, n, shape) in enumerate(spans) if i not in dense}
        scale = budget / sum(raw[i] * spans[i][1] for i in raw)
        over = [i for i in raw if raw[i] * scale > 1.0]
        if not over:
            return [1.0 if i in dense else raw[i] * scale for i in range(len(spans))]
        top = max(raw[i] for i in over)
        dense.update(i for i in over if raw[i] == top)


def kept_counts(layout: ParamLayout, density: float, kind: str = "erk") -> list[int]:
    """Kept weights per prunable tensor: ``round(density_l * n_l)``, between 1 and n_l."""
    return [min(n, max(1, round(d * n)))
            for d, (_, n, _) in zip(layer_densities(layout, density, kind), prunable_spans(layout))]


def initial_mask(layout: ParamLayout, weights: torch.Tensor, density: float, kind: str = "erk") -> torch.Tensor:
    """The flat bool mask keeping, per prunable tensor, its ``kept_counts`` largest |w| (others dense)."""
    mask = torch.ones(layout.size, dtype=torch.bool)
    for (offset, n, _), keep in zip(prunable_spans(layout), kept_counts(layout, density, kind)):
        part = mask[offset:offset + n]
        part.zero_()
        part[torch.topk(weights[offset:offset + n].abs(), keep, sorted=False).indices] = True
    return mask


def f_decay(t: int | float, alpha: float, t_end: int) -> float:
    """The share of active weights swapped at adjustment round ``t``: alpha/2 (1 + cos(pi t / t_end)) for
    0 <= t <= t_end, 0 after (and 0 when ``t_end`` is 0)."""
    if t_end <= 0 or t > t_end:
        return 0.0
    return alpha / 2.0 * (1.0 + math.cos(math.pi * t / t_end))


def swap_counts(mask: torch.Tensor, layout: ParamLayout, fraction: float) -> list[int]:
    """k_l = int(fraction * N_active_l) for each prunable tensor (layout order)."""
    return [int(fraction * int(torch.count_nonzero(mask[o:o + n]))) for o, n, _ in prunable_spans(layout)]


def prune_and_grow(weights: torch.Tensor, mask: torch.Tensor, gradient: torch.Tensor, layout: ParamLayout,
                   counts: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """New (weights, mask): per prunable tensor l, drop the ``counts[l]`` smallest |weights| among active
    positions, then grow the ``counts[l]`` largest |gradient| among the positions inactive after the drop;
    dropped and grown weights are 0 (every inactive weight is 0). Inputs are not modified."""
    new_w, new_mask = weights.clone(), mask.clone()
    for (offset, n, _), k in zip(prunable_spans(layout), counts):
        if k <= 0:
            continue
        m, w = new_mask[offset:offset + n], new_w[offset:offset + n]
        drop_score = w.abs().masked_fill_(~m, math.inf)
        m[torch.topk(drop_score, k, largest=False, sorted=False).indices] = False
        w.mul_(m)  # dropped weights are 0, also when they are regrown below
        grow_score = gradient[offset:offset + n].abs().masked_fill_(m, -math.inf)
        m[torch.topk(grow_score, k, sorted=False).indices] = True
    return new_w, new_mask


def topk_inactive(gradient: torch.Tensor, mask: torch.Tensor, layout: ParamLayout, counts: list[int]) -> None:
    """In place: keep, per prunable tensor l, the ``counts[l]`` largest |gradient| among inactive positions
    (``mask`` False) and zero everything else, dense parameters included. Works one tensor at a time: its
    temporaries are one |g| of that tensor and the k_l kept values and indices."""
    counts = iter(counts)
    for i, prunable in enumerate(layout.prunable):
        offset, n = layout.offsets[i], layout.numel(i)
        g = gradient[offset:offset + n]
        k = min(next(counts), n - int(torch.count_nonzero(mask[offset:offset + n]))) if prunable else 0
        if k <= 0:
            g.zero_()
            continue
        score = g.abs().masked_fill_(mask[offset:offset + n], -1.0)
        idx = torch.topk(score, k, sorted=False).indices
        del score
        values = g[idx]
        g.zero_()
        g[idx] = values
