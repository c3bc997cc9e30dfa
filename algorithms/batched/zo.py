"""The batched zeroth-order kernel: ``local.zo_update`` for many clients at once, seed trick included.

``ZerothOrderKernel(model, lr, queries, mu, clip, uplink, partial)`` computes, for every client of a unit,
what ``keep_uplink(zo_update(model, state, data, steps, batch, lr, queries, mu, clip, seed, partial), uplink)``
computes; a client whose plan has a partial batch gets None (``fit`` runs it).
Shared with the reference, exactly: the batches (``batch_plan``); the direction seeds (``derive_seed``,
vectorized as ``seeds.derive_seeds``, checked against it on every call); the directions (``torch.randn`` per
seed, in ``ZO_CHUNK`` pieces; whole chunks merged into one draw when that gives the same values, checked
once); the perturbed weights fl(w +- fl(mu u)), the values in-place ``perturb`` writes (computed out of place
for all 2q copies at once, so no fix-ups); the coefficient arithmetic (float64, then float32); the update
roundings (one FMA per query for a dense model, as ``add_(alpha=)``; multiply then add for a masked one, as
``index_add_``); the loss (``layers.mean_nll``). The 2q perturbed models of all the unit's clients run as one
network, ``per_forward`` queries at a time. How close the results are: ``docs/learning.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from algorithms import local
from algorithms.batched.layers import batched_forward, layer_params, mean_nll, picked_log_probs
from algorithms.batched.units import BUDGET_BYTES, MAX_UNIT, Net, UnitKernel, gather
from algorithms.local import ClientData, ClientResult, ModelState, keep_uplink, kept_indices
from algorithms.params import FunctionalModel
from algorithms.seeds import derive_seeds

__all__ = ["ZerothOrderKernel"]


@lru_cache(maxsize=None)
def _direction_cuts(dim: int, chunk: int) -> tuple[tuple[int, int], ...]:
    """The pieces in which a direction is drawn: the reference's ``chunk``-sized pieces, or its whole
    chunks in one piece and the rest in another when that gives the same values (torch's CPU ``randn``
    draws all uniforms in order, then transforms them 16 at a time, so whole-16 pieces merge: checked)."""
    whole = dim // chunk * chunk
    if whole > 0 and _merged_draws_agree(chunk):
        return ((0, whole),) + (((whole, dim),) if dim > whole else ())
    return tuple((a, min(dim, a + chunk)) for a in range(0, dim, chunk))


@lru_cache(maxsize=None)
def _merged_draws_agree(chunk: int) -> bool:
    if chunk % 16:
        return False
    size, gen = 3 * chunk + 37, torch.Generator()
    gen.manual_seed(1)
    chunked = torch.cat([torch.randn(min(chunk, size - a), generator=gen) for a in range(0, size, chunk)])
    gen.manual_seed(1)
    merged = torch.cat([torch.randn(3 * chunk, generator=gen), torch.randn(37, generator=gen)])
    return torch.equal(chunked, merged)


def _draw(u: torch.Tensor, u_seeds: np.ndarray, s: int, cuts) -> None:
    """Step ``s``'s directions into ``u`` ``(n, q, D)``: client k's i-th from seed ``u_seeds[k, s, i]``."""
    gen = torch.Generator()
    n, queries = u.shape[0], u.shape[1]
    for k in range(n):
        for i in range(queries):
            gen.manual_seed(int(u_seeds[k, s, i]))
            row = u[k, i]
            for start, stop in cuts:
                torch.randn(stop - start, generator=gen, out=row[start:stop])


def _spans(net: Net, kept: torch.Tensor, size: int) -> dict[int, tuple[int, int, torch.Tensor]]:
    """Per parameter tensor (by offset): the range of the direction its kept coordinates occupy, and where
    they lie inside the tensor."""
    starts = sorted(set(net.offsets))
    bounds = torch.searchsorted(kept, torch.tensor(starts + [size]))
    return {o: (int(a), int(b), kept[int(a):int(b)] - o)
            for o, a, b in zip(starts, bounds[:-1].tolist(), bounds[1:].tolist())}


def _losses(net: Net, w: torch.Tensor, u: torch.Tensor, mu: float, spans, x: torch.Tensor, y: torch.Tensor,
            per_forward: int) -> tuple[np.ndarray, np.ndarray]:
    """L(w + mu u_i) and L(w - mu u_i) for every client and query, ``(n, q)`` each, in float64."""
    n, queries = u.shape[0], u.shape[1]
    plus, minus = np.empty((n, queries)), np.empty((n, queries))
    for q0 in range(0, queries, per_forward):
        m = min(queries, q0 + per_forward) - q0
        z = u[:, q0:q0 + m] * mu

        def perturbed(o: int, count: int) -> torch.Tensor:  # fl(w + z), fl(w - z): what perturb writes
            buf = torch.empty(n, 2, m, count)
            part = w[:, None, o:o + count]
            if spans is None:
                torch.add(part, z[..., o:o + count], out=buf[:, 0])
                torch.sub(part, z[..., o:o + count], out=buf[:, 1])
            else:  # pruned coordinates keep w; only the kept ones move
                a, b, where = spans[o]
                buf.copy_(part.unsqueeze(1))
                base = part[..., where]
                buf[:, 0, :, where] = base + z[..., a:b]
                buf[:, 1, :, where] = base - z[..., a:b]
            return buf.view(n, 2 * m, count)

        params = layer_params(net.spec, perturbed, n, 2 * m)
        logp = F.log_softmax(batched_forward(net.spec, params, x, n, 2 * m), -1)
        value = mean_nll(picked_log_probs(logp, y.repeat_interleave(2 * m, 0))).view(n, 2, m).double().numpy()
        plus[:, q0:q0 + m], minus[:, q0:q0 + m] = value[:, 0], value[:, 1]
    return plus, minus


def _apply(w: torch.Tensor, u: torch.Tensor, coef: torch.Tensor, kept: torch.Tensor | None) -> None:
    """w += sum_i coef_i u_i, query by query, rounding as the reference does."""
    queries = u.shape[1]
    if kept is None:  # w.add_(u, alpha=c) per query: one FMA each
        for i in range(queries):
            w.addcmul_(u[:, i], coef[:, i:i + 1])
    else:  # index_add_(alpha=c) rounds c*u, then the sum
        part = w[:, kept]
        for i in range(queries):
            part.add_(u[:, i] * coef[:, i:i + 1])
        w[:, kept] = part


@dataclass(frozen=True, eq=False)
class ZerothOrderKernel(UnitKernel):
    """``keep_uplink(zo_update(...), uplink)`` on ``model``, batched (see the module docstring)."""

    model: FunctionalModel
    lr: float
    queries: int
    mu: float
    clip: float | None
    uplink: str
    partial: bool = False  # a client whose plan has a partial batch gets None (``fit`` runs it)
    needs_grad = False

    def unit_plan(self, net: Net, state: ModelState, batch: int) -> tuple[int, dict]:
        """(clients per unit, queries per forward): a client's q directions, plus the perturbed weights and
        the activations of the models one forward runs, within the budget."""
        dim = net.fm.size if state.mask is None else int(state.mask.sum())
        per_model = 4 * (2 * net.fm.size + 2 * batch * net.act_max)
        per_forward = max(1, min(self.queries, BUDGET_BYTES // (2 * per_model)))
        per_client = 4 * self.queries * dim + 2 * per_forward * per_model
        return max(2, min(MAX_UNIT, BUDGET_BYTES // per_client)), {"per_forward": per_forward}

    def run_unit(self, net: Net, state: ModelState, datas: list[ClientData], seeds: list[int], steps: int,
                 batch: int, per_forward: int = 1) -> list[ClientResult]:
        n, size, queries = len(datas), state.weights.numel(), self.queries
        inputs, ys, _ = gather(net, datas, seeds, steps, batch, self.partial)  # no partial batch here
        kept = kept_indices(state.mask)
        dim = size if kept is None else kept.numel()
        u_seeds = derive_seeds(np.asarray(seeds, dtype=np.int64)[:, None, None], np.arange(steps)[None, :, None],
                               np.arange(queries)[None, None, :]).reshape(n, steps, queries)
        w = state.weights.expand(n, size).clone()
        u = torch.empty(n, queries, dim)
        spans = None if kept is None else _spans(net, kept, size)
        coefficients = np.empty((n, steps, queries), dtype=np.float32)
        losses = np.empty((n, steps))
        cuts = _direction_cuts(dim, local.ZO_CHUNK)  # read now: the reference's chunk, whatever it is
        for s in range(steps):
            _draw(u, u_seeds, s, cuts)
            plus, minus = _losses(net, w, u, self.mu, spans, inputs[s], ys[s], per_forward)
            c = (plus - minus) / (2.0 * self.mu)
            if self.clip is not None:  # max(-clip, min(clip, c)), NaN included
                c = np.where(c < self.clip, c, self.clip)
                c = np.where(c > -self.clip, c, -self.clip)
            coefficients[:, s] = (-self.lr * c / queries).astype(np.float32)
            losses[:, s] = 0.5 * (plus[:, 0] + minus[:, 0])
            _apply(w, u, torch.from_numpy(coefficients[:, s]), kept)
        delta = w.sub_(state.weights)
        return [keep_uplink(ClientResult("seeds", len(d), delta=delta[k].clone(),
                                         seeds=u_seeds[k].reshape(-1).copy(),
                                         coefficients=coefficients[k].reshape(-1).copy(),
                                         train_loss=float(np.mean(losses[k]))), self.uplink)
                for k, d in enumerate(datas)]
