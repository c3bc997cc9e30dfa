"""Batched local updates: many clients' ``local_update`` from one global state, computed together, fast.

``batched_local_updates(algorithm, state, config, datas, seeds)`` returns what
``[algorithm.local_update(state, config, datas[k], seeds[k]) for k in ...]`` returns (``local.py`` is the
reference) for FedAvg (backprop: SGD, momentum, Adam) and for ZerothOrder / FedFPZO in phase ``'train'``
(dense or masked, ``uplink`` delta or seeds). Anything else (phase ``'prune'``, other algorithm classes or
overridden ``local_update``, layers other than Conv2d/Linear/ReLU/MaxPool2d/Flatten in an nn.Sequential,
data of another dtype or shape) runs the sequential ``local_update``. Clients are grouped by batch size
(``min(batch_size, n)``), so small clients are batched too.

Shared with the reference, exactly: the batches (``batch_plan``); the ZO direction seeds (``derive_seed``,
vectorized here as ``derive_seeds``, checked against it on every call); the directions (``torch.randn``
per seed, in ``ZO_CHUNK`` pieces; whole chunks merged into one draw, which gives the same values, checked
once); the perturbed weights fl(w +- fl(mu u)), the values in-place ``perturb`` writes (computed out of
place for all 2q copies at once, with no fix-ups); the coefficient arithmetic (float64, then float32); the
update roundings (one FMA per query for a dense model, as ``add_(alpha=)``; multiply then add for a
masked one, as ``index_add_``); the optimizer formulas; the loss (``nll_loss``'s cascade sum, ``mean_nll``).

Layout, and what was measured on the 2-core development machine (one intra-op thread, CPU time, CNN
backprop at batch 32; the sequential loop does 35-40 GFLOP/s):

* A group of V models (clients, or a client's 2q perturbed copies) runs as ONE network. Convolutions are
  one grouped convolution (oneDNN) over ``(B, V*Cin, H, W)`` in channels-last memory: 64-77 GFLOP/s for
  the whole step. Tried and dropped: im2col (``F.unfold``) + ``torch.bmm``, 6-13 GFLOP/s (MKL runs the
  conv GEMMs (6272x144 @ 144x32) at 21-63 GFLOP/s where oneDNN's convolution runs at 136-149); im2col in
  channels-last + bmm, 28; grouped convolution in NCHW, 25 (ATen's NCHW ``max_pool2d`` takes 7 ms for
  (32, 64, 28, 28), channels-last 0.47 ms, and NCHW one-channel convolutions run at 4-6 GFLOP/s).
* Linear layers are ``torch.baddbmm`` over stacked ``(V, out, in)`` weights, with a backward in
  ``F.linear``'s orientation (``BatchedLinear``); they run at about 95 GFLOP/s (the MKL single-thread peak). A
  client's perturbed copies share its input: the first layer reads it once (grouped convolution with
  ``2q * Cout`` outputs per client, or one GEMM against ``(2q*out, in)``).
* ReLU then MaxPool runs as MaxPool then ReLU: the same values and gradients (max and relu commute; the
  first-max tie rule picks the same element) on a quarter of the elements (47 -> 64 GFLOP/s). Without
  autograd, a 2x2 pool is the max of four strided slices (0.20 ms for the shape above).
* Units of 2..32 clients whose working set fits ``_BUDGET_BYTES`` (units of 2-4 CNN clients: 64-77
  GFLOP/s; 8: 45; 16: 42) run on ``torch.get_num_threads()`` Python threads with one intra-op thread each
  (the kernels release the GIL). Two OpenMP threads per kernel ran 2-10x slower than one on this machine
  whenever another process held a core (they spin at every barrier).
* ZO is bound by ``torch.randn`` (2.7-3 ns per normal: 46 % of dense ZO time for mlp_small on 28x28), which
  is drawn once per direction here, five times in the reference. ``derive_seed`` costs 15-40 us a call;
  ``derive_seeds`` 0.1 us.

Why results are not always bit-identical (torch 2.13 CPU; 10 local steps, against the reference run
with one intra-op thread). Bit-identical: MLP backprop (SGD, momentum, Adam) and ZO (dense and masked, MLP
and CNN) whenever a client shares its unit with another. Not bit-identical: (1) CNN backprop: oneDNN's
grouped-convolution backward sums weight and input gradients over batch and positions in another order
than the per-client convolution backward (one step: conv gradients differ by up to 3e-6 of their largest
element), and the differences grow through the steps: max |delta - delta_ref| / ||delta_ref|| = 7.6e-6
(SGD), 4.1e-8 (momentum), 2.7e-5 (Adam). (2) A client alone in its batch-size group runs a one-group
channels-last first convolution, whose forward rounds differently from the reference's NCHW one: ZO
coefficients differ by up to 4.3e-4 of the largest coefficient, deltas by 2.5e-5 (CNN; MLPs stay exact).
With two or more clients per unit the bits do not depend on the unit size, so not on the thread count.
The reference itself moves by up to 4e-8 between one and two threads. ``tests/algorithms/test_batched.py``
asserts 1e-3 on deltas and 1e-2 on coefficients.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from algorithms import local
from algorithms.local import (
    _ADAM_BETAS,
    _ADAM_EPS,
    _MOMENTUM,
    ClientData,
    ClientResult,
    ModelState,
    batch_plan,
    kept_indices,
)
from algorithms.batched_layers import (
    Layer,
    batched_forward,
    channels_last_steps,
    layer_params,
    layer_spec,
    mean_nll,
    picked_log_probs,
)
from algorithms.params import FunctionalModel
from algorithms.seeds import derive_seeds

__all__ = ["batched_local_updates", "derive_seeds"]

_BUDGET_BYTES = 16 << 20  # working set of one unit of clients (activations, weights, directions)
_MAX_UNIT = 32  # clients per unit at most


# --- the local updates ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Net:
    fm: FunctionalModel
    spec: tuple[Layer, ...]
    offsets: tuple[int, ...]  # where each parameter tensor starts in the flat vector
    spatial: bool  # convolutional: inputs (B, n*Cin, H, W) channels-last
    act_sum: int  # activation elements per sample, all layers (what backprop keeps)
    act_max: int  # largest layer input + output per sample (what a forward needs at once)


def _net(fm: FunctionalModel) -> _Net | None:
    spec = layer_spec(fm)
    if spec is None:
        return None
    sizes = [math.prod(fm.input_shape)]
    with torch.no_grad():
        h = torch.zeros(1, *fm.input_shape)
        for m in fm.module:
            h = m(h)
            sizes.append(h.numel())
    offsets = tuple(sorted(p[0] for layer in spec for p in (layer.weight, layer.bias) if p))
    act_max = max(a + b for a, b in zip(sizes, sizes[1:]))
    return _Net(fm, spec, offsets, spec[0].kind == "conv", sum(sizes), act_max)


def _gather(net: _Net, datas, seeds, steps: int, batch: int):
    """Each client's batches (``batch_plan``): the step inputs ``inputs[t]`` (``(B, n*Cin, H, W)``
    channels-last for a convolutional model, ``(n, B, F)`` otherwise) and the labels ``(steps, n, B)``."""
    n, shape = len(datas), tuple(net.fm.input_shape)
    xs = torch.empty(n, steps * batch, *shape)
    ys = torch.empty(steps, n, batch, dtype=torch.int64)
    for k, (d, s) in enumerate(zip(datas, seeds)):
        idx = torch.cat(batch_plan(len(d), batch, steps, s))
        torch.index_select(d.x, 0, idx, out=xs[k])
        ys[:, k] = d.y[idx].view(steps, batch)
    xs = xs.view(n, steps, batch, *shape)
    if net.spatial:
        return channels_last_steps(xs), ys
    return xs.view(n, steps, batch, -1).transpose(0, 1), ys  # a client's step batch stays contiguous


def _optimizer_step(optimizer: str, lr: float, t: int, w, grad, mask, slot1, slot2) -> None:
    """``bp_update``'s step ``t`` on (views of) the stacked weights."""
    if mask is not None:
        grad.mul_(mask)
    if optimizer == "sgd":
        w.add_(grad, alpha=-lr)
    elif optimizer == "momentum":
        slot1.mul_(_MOMENTUM).add_(grad)
        w.add_(slot1, alpha=-lr)
    else:
        b1, b2 = _ADAM_BETAS
        slot1.mul_(b1).add_(grad, alpha=1 - b1)
        slot2.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        denom = (slot2 / (1 - b2 ** t)).sqrt_().add_(_ADAM_EPS)
        w.addcdiv_(slot1, denom, value=-lr / (1 - b1 ** t))


def _bp_unit(net: _Net, state: ModelState, datas, seeds, steps: int, batch: int, lr: float,
             optimizer: str) -> list[ClientResult]:
    """``bp_update`` for every client of the unit, as one network."""
    n, size = len(datas), state.weights.numel()
    inputs, ys = _gather(net, datas, seeds, steps, batch)
    w = state.weights.expand(n, size).clone()
    mask = state.mask
    slot1 = torch.zeros_like(w) if optimizer != "sgd" else None
    slot2 = torch.zeros_like(w) if optimizer == "adam" else None
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
            for o, grad in zip(offsets, grads):  # per parameter tensor: the same elementwise formulas
                part = slice(o, o + grad.shape[1])
                _optimizer_step(optimizer, lr, t, w[:, part], grad, None if mask is None else mask[part],
                                None if slot1 is None else slot1[:, part],
                                None if slot2 is None else slot2[:, part])
    delta = w.sub_(state.weights)
    per_step = mean_nll(picked.view(steps * n, batch)).view(steps, n)
    per_client = np.ascontiguousarray(per_step.double().numpy().T)
    return [ClientResult("delta", len(d), delta=delta[k].clone(), train_loss=float(np.mean(per_client[k])))
            for k, d in enumerate(datas)]


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


def _zo_unit(net: _Net, state: ModelState, datas, seeds, steps: int, batch: int, lr: float, queries: int,
             mu: float, clip: float | None, per_forward: int) -> list[ClientResult]:
    """``zo_update`` for every client of the unit: the 2q perturbed models of all its clients run as one
    network, ``per_forward`` queries at a time."""
    n, size = len(datas), state.weights.numel()
    inputs, ys = _gather(net, datas, seeds, steps, batch)
    kept = kept_indices(state.mask)
    dim = size if kept is None else kept.numel()
    u_seeds = derive_seeds(np.asarray(seeds, dtype=np.int64)[:, None, None], np.arange(steps)[None, :, None],
                           np.arange(queries)[None, None, :]).reshape(n, steps, queries)
    w = state.weights.expand(n, size).clone()
    u = torch.empty(n, queries, dim)
    if kept is not None:  # each parameter tensor's kept coordinates: a range of the direction, and where
        bounds = torch.searchsorted(kept, torch.tensor(sorted(set(net.offsets)) + [size]))
        spans = {o: (int(a), int(b), kept[int(a):int(b)] - o)
                 for o, a, b in zip(sorted(set(net.offsets)), bounds[:-1].tolist(), bounds[1:].tolist())}
    gen = torch.Generator()
    coefficients = np.empty((n, steps, queries), dtype=np.float32)
    losses = np.empty((n, steps))
    cuts = _direction_cuts(dim, local.ZO_CHUNK)  # read now: the reference's chunk, whatever it is
    for s in range(steps):
        for k in range(n):
            for i in range(queries):
                gen.manual_seed(int(u_seeds[k, s, i]))
                row = u[k, i]
                for start, stop in cuts:
                    torch.randn(stop - start, generator=gen, out=row[start:stop])
        plus, minus = np.empty((n, queries)), np.empty((n, queries))
        for q0 in range(0, queries, per_forward):
            m = min(queries, q0 + per_forward) - q0
            z = u[:, q0:q0 + m] * mu

            def perturbed(o: int, count: int) -> torch.Tensor:  # fl(w + z), fl(w - z): what perturb writes
                buf = torch.empty(n, 2, m, count)
                part = w[:, None, o:o + count]
                if kept is None:
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
            logp = F.log_softmax(batched_forward(net.spec, params, inputs[s], n, 2 * m), -1)
            value = mean_nll(picked_log_probs(logp, ys[s].repeat_interleave(2 * m, 0))).view(n, 2, m).double().numpy()
            plus[:, q0:q0 + m], minus[:, q0:q0 + m] = value[:, 0], value[:, 1]
        c = (plus - minus) / (2.0 * mu)
        if clip is not None:  # max(-clip, min(clip, c)), NaN included
            c = np.where(c < clip, c, clip)
            c = np.where(c > -clip, c, -clip)
        coefficients[:, s] = (-lr * c / queries).astype(np.float32)
        losses[:, s] = 0.5 * (plus[:, 0] + minus[:, 0])
        coef = torch.from_numpy(coefficients[:, s])
        if kept is None:  # w.add_(u, alpha=c) per query: one FMA each, as the reference
            for i in range(queries):
                w.addcmul_(u[:, i], coef[:, i:i + 1])
        else:  # index_add_(alpha=c) rounds c*u, then the sum
            part = w[:, kept]
            for i in range(queries):
                part.add_(u[:, i] * coef[:, i:i + 1])
            w[:, kept] = part
    delta = w.sub_(state.weights)
    return [ClientResult("seeds", len(d), delta=delta[k].clone(), seeds=u_seeds[k].reshape(-1).copy(),
                         coefficients=coefficients[k].reshape(-1).copy(), train_loss=float(np.mean(losses[k])))
            for k, d in enumerate(datas)]


# --- dispatch ------------------------------------------------------------------------------------------
def _plan(algorithm, config):
    """("bp", kwargs) / ("zo", kwargs) when this module reproduces ``algorithm.local_update``, else None."""
    from algorithms.fedavg import FedAvg
    from algorithms.zo import FedFPZO, ZerothOrder

    if config.phase != "train":
        return None
    update = type(algorithm).local_update
    if update is FedAvg.local_update:
        return "bp", {"lr": algorithm.lr, "optimizer": algorithm.optimizer}
    if update in (ZerothOrder.local_update, FedFPZO.local_update):
        return "zo", {"lr": algorithm.lr, "queries": algorithm.queries, "mu": algorithm.mu,
                      "clip": algorithm.clip}
    return None


def _fits(net: _Net, state: ModelState, data: ClientData) -> bool:
    w, mask = state.weights, state.mask
    return (w.dtype == torch.float32 and w.dim() == 1 and w.numel() == net.fm.size
            and (mask is None or (mask.dtype == torch.bool and mask.shape == w.shape))
            and data.x.dtype == torch.float32 and data.y.dtype == torch.int64
            and tuple(data.x.shape[1:]) == tuple(net.fm.input_shape) and data.x.shape[0] == data.y.shape[0])


def _bp_sizes(net: _Net, batch: int, optimizer: str) -> int:
    """Clients per unit: weights, gradients, optimizer slots and saved activations within the budget
    (two at least: see ``_units``)."""
    slots = {"sgd": 0, "momentum": 1, "adam": 2}[optimizer]
    per_client = 4 * (net.fm.size * (3 + slots) + batch * net.act_sum)
    return max(2, min(_MAX_UNIT, _BUDGET_BYTES // per_client))


def _zo_sizes(net: _Net, batch: int, queries: int, dim: int) -> tuple[int, int]:
    """(clients per unit, queries per forward): a client's q directions, plus the perturbed weights and
    the activations of the models one forward runs, within the budget."""
    per_model = 4 * (2 * net.fm.size + 2 * batch * net.act_max)
    per_forward = max(1, min(queries, _BUDGET_BYTES // (2 * per_model)))
    per_client = 4 * queries * dim + 2 * per_forward * per_model
    return max(2, min(_MAX_UNIT, _BUDGET_BYTES // per_client)), per_forward


def _units(members: list[int], per_unit: int, workers: int) -> list[list[int]]:
    """``members`` cut into even units of at most ``per_unit`` clients, at least one per worker, and never
    a lone client when it can have company: a one-model grouped convolution is another oneDNN kernel (it
    rounds differently), while any two or more models give the same bits whatever the unit size
    (measured), so units may follow the thread count without changing results."""
    n = len(members)
    count = max(-(-n // per_unit), min(workers, n))
    if n >= 2:
        count = min(count, n // 2)
    base, extra = divmod(n, count)
    cuts = np.cumsum([0] + [base + (i < extra) for i in range(count)])
    return [members[a:b] for a, b in zip(cuts[:-1], cuts[1:])]


def batched_local_updates(algorithm, state: ModelState, config, datas: list[ClientData],
                          seeds: list[int]) -> list[ClientResult]:
    """``[algorithm.local_update(state, config, datas[k], seeds[k]) for k]``, computed in batches (see the
    module docstring for what is exact and what is rounded differently)."""
    datas, seeds = list(datas), [int(s) for s in seeds]
    if len(datas) != len(seeds):
        raise ValueError(f"datas and seeds differ in length: {len(datas)} != {len(seeds)}")
    plan = _plan(algorithm, config)
    net = _net(algorithm.functional_model) if plan is not None else None
    direct = {k for k, d in enumerate(datas) if net is None or not _fits(net, state, d)}
    results: list[ClientResult | None] = [None] * len(datas)
    for k in direct:
        results[k] = algorithm.local_update(state, config, datas[k], seeds[k])
    if len(direct) == len(datas):
        return results  # type: ignore[return-value]
    kind, hyper = plan
    steps = config.local_steps
    by_batch: dict[int, list[int]] = {}
    for k, d in enumerate(datas):
        if k not in direct:
            by_batch.setdefault(min(config.batch_size, len(d)), []).append(k)
    threads = torch.get_num_threads()
    jobs = []
    for batch, members in by_batch.items():
        if kind == "bp":
            per_unit, extra = _bp_sizes(net, batch, hyper["optimizer"]), {}
        else:
            dim = net.fm.size if state.mask is None else int(state.mask.sum())
            per_unit, per_forward = _zo_sizes(net, batch, hyper["queries"], dim)
            extra = {"per_forward": per_forward}
        for unit in _units(members, per_unit, threads):
            jobs.append((unit, _bp_unit if kind == "bp" else _zo_unit, batch, extra))

    def run(job):
        unit, fn, batch, extra = job
        torch.set_num_threads(1)
        with torch.no_grad() if fn is _zo_unit else torch.enable_grad():
            return unit, fn(net, state, [datas[k] for k in unit], [seeds[k] for k in unit], steps, batch,
                            **hyper, **extra)

    workers = max(1, min(threads, len(jobs)))
    try:
        if workers == 1:
            done = [run(job) for job in jobs]
        else:
            with ThreadPoolExecutor(workers) as pool:
                done = list(pool.map(run, jobs))
    finally:
        torch.set_num_threads(threads)
    for unit, out in done:
        for k, r in zip(unit, out):
            results[k] = r
    if kind == "zo":  # what ZerothOrder.local_update keeps of zo_update's result
        for unit, out in done:
            for r in out:
                if algorithm.uplink == "seeds":
                    r.delta = None
                else:
                    r.seeds = r.coefficients = None
    return results  # type: ignore[return-value]
