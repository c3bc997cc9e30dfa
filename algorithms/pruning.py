"""Pruning before training: saliency scores, global top-k masks, the iterative schedule, federated scores.

FedFPZO (arXiv 2405.04765) prunes with NTK-SAP saliency (Wang et al. 2023); random, magnitude and SNIP are the
baselines. Everything works on flat vectors (see ``algorithms.params``): weights and scores are float32 vectors
of length P, a mask is a bool vector of length P (``True`` keeps), and only prunable coordinates (conv/linear
weights) are ever pruned.

Saliency (``saliency(method, fm, weights, mask, ...)``), a score >= 0 per coordinate, exactly 0 on non-prunable
coordinates and on those the mask already pruned:

* ``"ntk"``: S_j = | d/dm_j  sum_r || f(x_r; theta_r * m) - f(x_r; (theta_r + eps z_r) * m) ||^2 |, r = 1..samples,
  z_r ~ N(0, I) over all P coordinates, the derivative taken at the current mask m. Since
  E_z ||f(theta + eps z) - f(theta)||^2 ~= eps^2 ||J||_F^2 = eps^2 tr(Theta), this is the mask-gradient of a
  one-sample-per-r estimate of the empirical NTK trace (``perturbation_energy`` is one term of the sum).

  - data-free (default, ``data=None``): x_r ~ N(0, I) shaped ``(batch_size, *input_shape)`` and theta_r a fresh
    ``fm.init_weights`` draw per r (NTK-SAP's multi-sampled weights); ``weights`` is then not used at all, so
    every client (or the server) estimates the same quantity whatever its data.
  - data mode (``data=(x, y)``): x_r = the given inputs (the whole batch; ``batch_size`` is not used) and
    theta_r = the given ``weights`` for every r, so only z_r varies: this scores the NTK of the model at hand
    on real inputs, and averages to its exact mask-gradient as ``samples`` grows.

  One caveat with ReLU networks: where a pre-activation lies within ~eps of 0, the perturbed pass flips the
  activation pattern, and the finite difference picks up a term the autograd gradient of the NTK trace does
  not have (it does not vanish as eps -> 0): it comes with the finite-difference estimator. The two agree
  away from kinks.

* ``"magnitude"``: |w|. ``"random"``: uniform [0, 1) draws from ``seed``.
* ``"snip"``: |w * dL/dw| at the masked weights w * m, L the mean cross-entropy on ``data`` (required); this is
  |dL/dm_j|, SNIP's connection sensitivity.

All randomness comes from ``seed``, through local ``torch.Generator`` objects seeded by
``numpy.random.SeedSequence`` streams (one per purpose, per iteration and per sample); the global RNGs are never
touched (``init_weights`` forks torch's).

``mask_from_scores`` keeps the top ``round(density * prunable_size)`` prunable coordinates under ONE threshold for
all layers (ties to the lower index), never reviving a pruned one. ``density_schedule`` is NTK-SAP's exponential
schedule d_t = d^(t/T). ``prune`` runs the schedule in one place (the server in data-free mode, or a centralised
baseline), re-scoring with the current mask after each step. Local scores federate by ``aggregate.score_sum``:
tr(Theta_fed) = sum_k tr(Theta_k), so the federated score is sum_k w_k S_k with w normalised to sum 1.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from algorithms import _checks
from algorithms.params import ParamLayout

__all__ = [
    "PRUNING_METHODS",
    "saliency",
    "perturbation_energy",
    "density_schedule",
    "mask_from_scores",
    "prune",
]

PRUNING_METHODS = ("ntk", "random", "magnitude", "snip")

# Purposes that key the seed streams, so no two uses of one seed share random numbers.
_NTK, _RANDOM, _ITERATION = 0, 1, 2


class _Model(Protocol):
    """What pruning needs of a model: ``algorithms.params.FunctionalModel`` is one."""

    layout: ParamLayout
    input_shape: tuple[int, ...]

    def init_weights(self, seed: int) -> torch.Tensor: ...

    def __call__(self, weights: torch.Tensor, x: torch.Tensor) -> torch.Tensor: ...


# --------------------------------------------------------------------------------------------- randomness

def _stream_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed for the stream ``(seed, *keys)``, independent of every other key tuple."""
    state = np.random.SeedSequence([seed, *keys]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def _generator(seed: int, *keys: int) -> torch.Generator:
    return torch.Generator().manual_seed(_stream_seed(seed, *keys))


# ------------------------------------------------------------------------------------------------- checks

def _check_model(fm: object) -> ParamLayout:
    layout = getattr(fm, "layout", None)
    if not isinstance(layout, ParamLayout) or not callable(fm):
        raise ValueError(f"fm must be a FunctionalModel (callable, with a ParamLayout), got {fm!r}")
    return layout


def _check_weights(weights: object, layout: ParamLayout) -> torch.Tensor:
    if (not isinstance(weights, torch.Tensor) or weights.shape != (layout.size,)
            or not weights.is_floating_point()):
        shape = tuple(weights.shape) if isinstance(weights, torch.Tensor) else type(weights).__name__
        raise ValueError(f"weights must be a float vector of length {layout.size}, got {shape}")
    return weights.detach()


def _check_mask(mask: object, layout: ParamLayout) -> torch.Tensor:
    """``mask`` as a bool vector; ``None`` keeps everything."""
    if mask is None:
        return torch.ones(layout.size, dtype=torch.bool)
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != (layout.size,):
        shape = (tuple(mask.shape), mask.dtype) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"mask must be a bool vector of length {layout.size}, got {shape}")
    if not bool(mask[~layout.prunable_mask].all()):
        raise ValueError("mask must keep every non-prunable coordinate (biases are never pruned)")
    return mask


def _check_data(data: object, fm: _Model) -> tuple[torch.Tensor, torch.Tensor]:
    ok = isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data)
    if ok:
        x, y = data
        ok = (x.dim() >= 2 and x.shape[0] >= 1 and tuple(x.shape[1:]) == tuple(fm.input_shape)
              and x.is_floating_point() and y.shape == (x.shape[0],) and not y.is_floating_point())
    if not ok:
        raise ValueError(f"data must be a tuple (x, y): x of shape (n, *{tuple(fm.input_shape)}) float, "
                         f"y of shape (n,) integer labels, got {data!r:.200}")
    return data  # type: ignore[return-value]


def _check_eps(eps: object) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0.0 < eps < math.inf:
        raise ValueError(f"eps must be a positive finite float, got {eps!r}")
    return float(eps)


# ----------------------------------------------------------------------------------------------- saliency

def perturbation_energy(fm: _Model, theta: torch.Tensor, mask: torch.Tensor, x: torch.Tensor,
                        z: torch.Tensor, eps: float) -> torch.Tensor:
    """|| f(x; theta * m) - f(x; (theta + eps z) * m) ||^2 summed over the batch: a scalar, differentiable in
    ``mask`` (a float vector). Its mean over z ~ N(0, I), divided by eps^2, approaches tr(Theta) as eps -> 0."""
    clean = fm(theta * mask, x)
    noisy = fm((theta + eps * z) * mask, x)
    return (clean - noisy).square().sum()


def _ntk_scores(fm: _Model, weights: torch.Tensor, mask: torch.Tensor, seed: int, batch_size: int,
                samples: int, eps: float, data: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    layout = fm.layout
    m = mask.to(weights.dtype).requires_grad_(True)
    total = torch.zeros(layout.size, dtype=weights.dtype)
    for r in range(samples):
        gen = _generator(seed, _NTK, r)
        if data is None:
            x = torch.randn((batch_size, *fm.input_shape), generator=gen, dtype=weights.dtype)
            theta = fm.init_weights(_stream_seed(seed, _NTK, r, 1)).to(weights.dtype)
        else:
            x, theta = data[0].to(weights.dtype), weights
        z = torch.randn(layout.size, generator=gen, dtype=weights.dtype)
        with torch.enable_grad():
            energy = perturbation_energy(fm, theta, m, x, z, eps)
            del z  # the graph keeps theta + eps z, not z: free it before the backward
            (grad,) = torch.autograd.grad(energy, m)
        total += grad
    return total.abs()


def _snip_scores(fm: _Model, weights: torch.Tensor, mask: torch.Tensor,
                 data: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = data
    effective = (weights * mask).requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(fm(effective, x.to(weights.dtype)), y.long())
        (grad,) = torch.autograd.grad(loss, effective)
    return (weights * grad).abs()


def saliency(method: str, fm: _Model, weights: torch.Tensor, mask: torch.Tensor | None, *, seed: int,
             batch_size: int, samples: int = 1, eps: float = 0.01,
             data: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Score every coordinate for pruning (higher = more worth keeping): a float32 vector of length P, >= 0,
    exactly 0 on non-prunable coordinates and on those ``mask`` already pruned (``None``: nothing pruned).

    ``method`` is one of ``PRUNING_METHODS`` (see the module docstring for each). ``seed`` (an int >= 0) is the
    only source of randomness; ``batch_size`` sizes the Gaussian inputs of data-free NTK scoring, ``samples``
    is R (weight/perturbation draws), ``eps`` the NTK perturbation scale; ``data=(x, y)`` switches NTK scoring to
    data mode and is required by SNIP.
    """
    _checks.choice("method", method, PRUNING_METHODS)
    layout = _check_model(fm)
    weights = _check_weights(weights, layout)
    mask = _check_mask(mask, layout)
    _checks.non_negative_int("seed", seed)
    _checks.positive_int("batch_size", batch_size)
    _checks.positive_int("samples", samples)
    eps = _check_eps(eps)
    if data is not None:
        data = _check_data(data, fm)
    if method == "ntk":
        scores = _ntk_scores(fm, weights, mask, seed, batch_size, samples, eps, data)
    elif method == "magnitude":
        scores = weights.abs()
    elif method == "random":
        scores = torch.rand(layout.size, generator=_generator(seed, _RANDOM))
    else:
        if data is None:
            raise ValueError("data is required by method 'snip' (a labelled batch (x, y))")
        scores = _snip_scores(fm, weights, mask, data)
    scores = scores.detach().to(torch.float32)
    if not bool(torch.isfinite(scores).all()):
        raise ValueError(f"{method} saliency is not finite (eps={eps}, weights or data out of range?)")
    return torch.where(mask & layout.prunable_mask, scores, torch.zeros((), dtype=torch.float32))


# ------------------------------------------------------------------------------------------------ masking

def density_schedule(target_density: float, iters: int) -> list[float]:
    """NTK-SAP's exponential schedule: d_t = target^(t/T) for t = 1..T; the last is ``target`` exactly."""
    target = _checks.density("target_density", target_density)
    iters = _checks.positive_int("iters", iters)
    return [target ** (t / iters) for t in range(1, iters)] + [target]


def mask_from_scores(scores: torch.Tensor, layout: ParamLayout, density: float,
                     mask: torch.Tensor | None = None) -> torch.Tensor:
    """Keep the ``round(density * prunable_size)`` prunable coordinates with the highest scores, under one
    threshold for all layers, among those ``mask`` still keeps (a pruned coordinate never comes back; ValueError
    if too few are left). Equal scores go to the lower index. Non-prunable coordinates are always kept."""
    if not isinstance(layout, ParamLayout):
        raise ValueError(f"layout must be a ParamLayout, got {layout!r}")
    density = _checks.density("density", density)
    if (not isinstance(scores, torch.Tensor) or scores.shape != (layout.size,)
            or not scores.is_floating_point()):
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise ValueError(f"scores must be a float vector of length {layout.size}, got {shape}")
    if bool(scores.isnan().any()):
        raise ValueError("scores must not contain NaN")
    mask = _check_mask(mask, layout)
    candidates = mask & layout.prunable_mask
    keep = round(density * layout.prunable_size)
    alive = int(candidates.sum())
    if keep > alive:
        raise ValueError(f"density {density} keeps {keep} weights but mask keeps only {alive} prunable ones "
                         "(pruned weights are never revived)")
    index = torch.nonzero(candidates).squeeze(1)
    # A stable descending sort keeps equal scores in index order, so ties go to the lower index.
    order = torch.argsort(scores[index].double(), descending=True, stable=True)
    result = ~layout.prunable_mask.clone()
    result[index[order[:keep]]] = True
    return result


def prune(method: str, fm: _Model, weights: torch.Tensor, target_density: float, iters: int, *, seed: int,
          batch_size: int, samples: int = 1, eps: float = 0.01,
          data: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """The mask (bool, length P) after ``iters`` steps of ``density_schedule(target_density, iters)``, each
    re-scoring with ``saliency`` at the current mask (its own seed stream per step); ``iters=1`` is one-shot.
    It keeps exactly ``round(target_density * prunable_size)`` prunable coordinates."""
    _checks.choice("method", method, PRUNING_METHODS)
    layout = _check_model(fm)
    _checks.non_negative_int("seed", seed)
    mask = torch.ones(layout.size, dtype=torch.bool)
    for t, density in enumerate(density_schedule(target_density, iters)):
        scores = saliency(method, fm, weights, mask, seed=_stream_seed(seed, _ITERATION, t),
                          batch_size=batch_size, samples=samples, eps=eps, data=data)
        mask = mask_from_scores(scores, layout, density, mask)
    return mask
