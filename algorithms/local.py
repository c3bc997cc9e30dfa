"""Local updates, aggregation and evaluation on flat weight vectors: the reference (sequential) learning code.

Every executor (sequential, vectorized, process pool) must produce what these functions produce; the
vectorized kernels are checked against them.

Contracts
---------
* A client's randomness (batch order, ZO directions) comes only from its ``seed`` (derived by the caller from
  (run seed, device, round)), through local ``torch.Generator`` objects: never the global RNG.
* Batches: a fresh permutation of the client's samples per epoch (``torch.randperm`` from the seed's batch
  generator), consumed ``batch`` at a time; a client with fewer than ``batch`` samples uses all of them.
  What an epoch is (``EPOCHS``): ``one_pass``, one pass over the permutation whose last batch takes what is
  left (n = 61, batch 32: 32 then 29), the standard definition; ``full_batches``, every step a full batch,
  a new permutation drawn when fewer than a batch remain (32 then 32: the 29 left are never seen and a
  step trains more samples than the client holds). ``epoch_steps`` and ``plan_samples`` count them.
* Masks: pruned coordinates hold exactly 0 and never move: BP masks the gradient (so SGD, momentum and Adam
  steps are 0 there), ZO draws directions only over the kept coordinates.
* ``bp_update`` returns the weight delta; its optimizer step is ``optim.OptimizerStep``, the one the batched
  kernel applies too. ``zo_update`` returns the delta and the (seed, coefficient) pairs
  from which ``replay_seed_pairs`` rebuilds exactly the same delta (bit for bit): the seed-trick uplink.

The ZO seed trick (MeZO): a direction u ~ N(0, I) over the kept coordinates is never stored; it is
regenerated from its seed, ``ZO_CHUNK`` elements at a time, each time it is needed. Float addition is not
exactly reversible (fl(fl(w + z) - z) can differ from w in the last bit, mostly where |w| < |z|), so
``perturb`` records, per chunk, the few coordinates whose round trip would not restore them (index and old
value; typically a small percentage) and ``restore`` puts those back: the weights are bit-identical after
perturb/restore, at the cost of a sparse fix-up list instead of a stored direction.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from algorithms.optim import OptimizerStep
from algorithms.params import FunctionalModel

__all__ = [
    "ModelState", "ClientData", "ClientResult", "UPLINKS", "ZO_CHUNK", "EPOCHS",
    "derive_seed", "batch_plan", "batch_order", "epoch_steps", "plan_samples", "bp_update", "zo_update",
    "keep_uplink", "replay_seed_pairs",
    "kept_indices", "perturb", "restore", "fixup_fraction", "evaluate",
]

ZO_CHUNK = 1024  # direction elements generated at a time (the seed trick's only buffers: a few chunks)
UPLINKS = ("delta", "seeds")  # what a ZO client sends: the weight delta, or the seed pairs that rebuild it
EPOCHS = ("one_pass", "full_batches")  # what a local epoch is (module docstring); the first is the default


@dataclass(frozen=True)
class ModelState:
    """The global model: flat ``weights`` (float32, length P), an optional bool ``mask`` (None = dense),
    ``prune_step``, the algorithm's schedule counter (how many pruning steps have been applied; FedMef: how
    many rounds were aggregated), and ``architecture``, the widths of the prunable layers when the algorithm
    changes them (``()``: the model as registered; P then follows the architecture). Treated as immutable."""

    weights: torch.Tensor
    mask: torch.Tensor | None = None
    prune_step: int = 0
    architecture: tuple[int, ...] = ()

    @property
    def density(self) -> float:
        return 1.0 if self.mask is None else float(self.mask.float().mean())


@dataclass(frozen=True)
class ClientData:
    """One client's training samples: ``x`` (n, *input_shape) float32 and ``y`` (n,) int64."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class ClientResult:
    """What a client sends back. ``kind``: ``"delta"``, ``"seeds"`` (ZO seed trick), ``"scores"``, or
    ``"delta_grad"`` (a delta and a ``gradient`` of the prunable weights, flat length P, zero where not sent:
    FedMef's adjustment rounds)."""

    kind: str
    num_samples: int
    delta: torch.Tensor | None = None
    seeds: np.ndarray | None = None  # int64 direction seeds, one per (step, query)
    coefficients: np.ndarray | None = None  # float32 step coefficients -lr/q * g, same order
    scores: torch.Tensor | None = None
    gradient: torch.Tensor | None = None
    train_loss: float = float("nan")  # mean loss over the local steps (first forward of each step)


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (run seed, purpose, device, round, ...), via numpy's SeedSequence."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def batch_plan(n: int, batch: int, steps: int, seed: int, partial: bool = False) -> list[torch.Tensor]:
    """The sample indices of each local step: per-epoch permutations from ``seed``, ``min(batch, n)`` each.

    ``partial`` False (``full_batches``): a new permutation is drawn when fewer than a batch remain in the
    current one. ``partial`` True (``one_pass``): a batch never crosses the end of a permutation; the last
    batch of each pass takes what is left. The two plans agree whenever ``min(batch, n)`` divides n."""
    order, sizes = batch_order(n, batch, steps, seed, partial)
    return list(order.split(sizes))


def batch_order(n: int, batch: int, steps: int, seed: int, partial: bool = False,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, list[int]]:
    """``batch_plan``'s batches as one index tensor (their concatenation) and each step's sample count: the
    same permutations drawn in the same order from a generator seeded with ``seed`` (``generator``, reseeded,
    when given: a caller planning many clients reuses one). A pass of ``per`` steps uses one permutation, so
    the plan needs ``ceil(steps / per)`` of them: ``per`` is ``ceil(n / b)`` with ``partial`` (the last batch
    of a pass takes the rest), ``floor(n / b)`` without (the rest of each permutation is never used)."""
    if n < 1:
        raise ValueError("a client needs at least one sample")
    batch = min(batch, n)
    gen = torch.Generator() if generator is None else generator
    gen.manual_seed(seed)
    per = -(-n // batch) if partial else n // batch
    used = n if partial else per * batch  # samples of a permutation the plan uses
    sizes = [batch] * (per - 1) + [used - (per - 1) * batch]
    passes, rest = divmod(steps, per)
    sizes = sizes * passes + sizes[:rest]
    total, count = sum(sizes), passes + (rest > 0)
    if count == 1:  # W's case: one permutation, used whole (one_pass) or in part
        order = torch.randperm(n, generator=gen)
        return (order if total == n else order[:total]), sizes
    perms = [torch.randperm(n, generator=gen) for _ in range(count)]
    return torch.cat([p if used == n else p[:used] for p in perms])[:total], sizes


def epoch_steps(n: int, batch: int, epochs: float, partial: bool) -> int:
    """Local steps of ``epochs`` epochs over n samples in batches of ``min(batch, n)``: with ``partial``
    (``one_pass``), ``ceil(n / batch)`` per whole epoch and, for a fraction f of one, ``ceil(f * n / batch)``
    more batches (rounded up to whole batches); otherwise ``ceil(epochs * n / batch)``. At least 1."""
    batch = max(1, min(batch, n))
    if not partial:
        return max(1, math.ceil(epochs * n / batch))
    whole = math.floor(epochs)
    return max(1, whole * -(-n // batch) + math.ceil((epochs - whole) * n / batch))


def plan_samples(n: int, batch: int, steps: int, partial: bool) -> int:
    """Samples ``batch_plan(n, batch, steps, seed, partial)`` trains in all (whatever the seed)."""
    batch = max(1, min(batch, n))
    if not partial:
        return steps * batch
    passes, rest = divmod(steps, -(-n // batch))
    return passes * n + rest * batch


def bp_update(fm: FunctionalModel, state: ModelState, data: ClientData, steps: int, batch: int,
              step: OptimizerStep, seed: int, partial: bool = False) -> ClientResult:
    """``steps`` backprop steps of cross-entropy, each applied by ``step`` (SGD, momentum or Adam, and the
    local objective's extra gradient terms, anchored at ``state.weights``), on the batches of
    ``batch_plan(..., partial)``; returns the delta.

    Memory, as a device would hold it: the weights, one gradient per parameter tensor (autograd's own
    leaves are views of the flat weights, so no flat P-sized gradient is ever assembled), the optimizer
    slots, and one batch with its activations; a step's gradients and temporaries are released before the
    next forward.
    """
    if not isinstance(step, OptimizerStep):
        raise ValueError(f"step must be an algorithms.optim.OptimizerStep, got {step!r:.80}")
    w = state.weights.clone()
    views = list(fm.layout.views(w).values())
    anchors = list(fm.layout.views(state.weights).values())
    masks = list(fm.layout.views(state.mask).values()) if state.mask is not None else [None] * len(views)
    slots = [step.slots(v) for v in views]
    losses = []
    for t, idx in enumerate(batch_plan(len(data), batch, steps, seed, partial), start=1):
        leaves = [v.detach().requires_grad_(True) for v in views]
        loss = F.cross_entropy(fm.call_with(leaves, data.x[idx]), data.y[idx])
        grads = torch.autograd.grad(loss, leaves)
        del leaves
        losses.append(loss.item())
        with torch.no_grad():
            for v, g, anchor, mask, (slot1, slot2) in zip(views, grads, anchors, masks, slots):
                step(t, v, g, anchor, mask, slot1, slot2)
        del grads, loss
    del slots, views
    return ClientResult("delta", len(data), delta=w.sub_(state.weights), train_loss=float(np.mean(losses)))


def kept_indices(mask: torch.Tensor | None) -> torch.Tensor | None:
    """Flat indices of kept coordinates (the ZO dimension D), or None when dense (all P)."""
    return None if mask is None else mask.nonzero().squeeze(1)


def _chunks(w: torch.Tensor, kept: torch.Tensor | None):
    """Yield (slice or index tensor, chunk length) over the coordinates a direction covers."""
    total = w.numel() if kept is None else kept.numel()
    for start in range(0, total, ZO_CHUNK):
        stop = min(start + ZO_CHUNK, total)
        yield (slice(start, stop) if kept is None else kept[start:stop]), stop - start


def perturb(w: torch.Tensor, kept: torch.Tensor | None, seed: int, scale: float) -> list:
    """In place ``w += scale * u`` (u ~ N(0, I) over ``kept``, regenerated from ``seed``); returns the
    fix-ups ``restore`` needs to undo it bit for bit."""
    gen = torch.Generator().manual_seed(seed)
    fixups = []
    for where, n in _chunks(w, kept):
        z = torch.randn(n, generator=gen).mul_(scale)
        old = w[where]
        new = old + z
        bad = (new - z) != old
        fixups.append((bad.nonzero().squeeze(1), old[bad]) if bool(bad.any()) else None)
        w[where] = new
    return fixups


def fixup_fraction(weights: torch.Tensor, mu: float, seed: int = 0) -> float:
    """The fraction of coordinates whose round trip fl(fl(w + mu u) - mu u) is not exact, i.e. that
    ``perturb`` must record: what the cost model charges for the seed trick's exact restore."""
    fixups = perturb(weights.clone(), None, seed, mu)
    return sum(len(f[0]) for f in fixups if f is not None) / max(1, weights.numel())


def restore(w: torch.Tensor, kept: torch.Tensor | None, seed: int, scale: float, fixups: list) -> None:
    """Undo ``perturb(w, kept, seed, scale)`` exactly."""
    gen = torch.Generator().manual_seed(seed)
    for (where, n), fix in zip(_chunks(w, kept), fixups):
        z = torch.randn(n, generator=gen).mul_(scale)
        chunk = w[where] - z
        if fix is not None:
            chunk[fix[0]] = fix[1]
        w[where] = chunk


def _axpy_direction(w: torch.Tensor, kept: torch.Tensor | None, seed: int, coefficient: float) -> None:
    """``w += coefficient * u`` with u regenerated from ``seed`` (the update and the server's replay)."""
    gen = torch.Generator().manual_seed(seed)
    for where, n in _chunks(w, kept):
        z = torch.randn(n, generator=gen)
        if kept is None:
            w[where].add_(z, alpha=coefficient)
        else:
            w.index_add_(0, where, z, alpha=coefficient)


@torch.inference_mode()
def _loss(fm: FunctionalModel, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    return F.cross_entropy(fm(w, x), y).item()


def zo_update(fm: FunctionalModel, state: ModelState, data: ClientData, steps: int, batch: int, lr: float,
              queries: int, mu: float, clip: float | None, seed: int, partial: bool = False) -> ClientResult:
    """``steps`` central-difference ZO-SGD steps with ``queries`` directions each (the RGE):

        g = (1/q) sum_i c_i u_i,   c_i = (L(w + mu u_i) - L(w - mu u_i)) / (2 mu),   w <- w - lr g

    All q losses of a step are taken at the same w; then the q directions are applied. ``clip`` bounds
    each |c_i| (per-direction clipping: the norm of g cannot be computed without storing the directions).
    Returns the delta and the (seed, -lr c_i / q) pairs that rebuild it.
    """
    w = state.weights.clone()
    kept = kept_indices(state.mask)
    seeds = np.empty(steps * queries, dtype=np.int64)
    coefficients = np.empty(steps * queries, dtype=np.float32)
    losses = []
    for s, idx in enumerate(batch_plan(len(data), batch, steps, seed, partial)):
        x, y = data.x[idx], data.y[idx]
        for i in range(queries):
            u_seed = derive_seed(seed, s, i)
            fix = perturb(w, kept, u_seed, mu)
            plus = _loss(fm, w, x, y)
            restore(w, kept, u_seed, mu, fix)
            fix = None  # released before the next perturbation records its own
            fix = perturb(w, kept, u_seed, -mu)
            minus = _loss(fm, w, x, y)
            restore(w, kept, u_seed, -mu, fix)
            fix = None
            c = (plus - minus) / (2.0 * mu)
            if clip is not None:
                c = max(-clip, min(clip, c))
            seeds[s * queries + i] = u_seed
            coefficients[s * queries + i] = -lr * c / queries
            if i == 0:
                losses.append(0.5 * (plus + minus))
        for j in range(s * queries, (s + 1) * queries):
            _axpy_direction(w, kept, int(seeds[j]), float(coefficients[j]))
        del x, y  # the next batch is loaded after this one is released
    return ClientResult("seeds", len(data), delta=w.sub_(state.weights), seeds=seeds, coefficients=coefficients,
                        train_loss=float(np.mean(losses)))


def replay_seed_pairs(state: ModelState, seeds: np.ndarray, coefficients: np.ndarray) -> torch.Tensor:
    """The delta a client's (seed, coefficient) pairs encode: the server's side of the seed trick. Applies
    them in order to a copy of the weights, as the client did, so the result is bit-identical."""
    w = state.weights.clone()
    kept = kept_indices(state.mask)
    for u_seed, c in zip(seeds.tolist(), coefficients.tolist()):
        _axpy_direction(w, kept, int(u_seed), float(np.float32(c)))
    return w.sub_(state.weights)


def keep_uplink(result: ClientResult, uplink: str) -> ClientResult:
    """``result`` (a ZO result holding both its delta and its seed pairs) reduced in place to what the
    ``uplink`` sends: a ``"delta"`` result, or a ``"seeds"`` result with only the pairs (the server replays
    them). The one place the uplink choice is applied, by the sequential and the batched path alike."""
    if uplink == "seeds":
        result.delta = None
    elif uplink == "delta":
        result.kind = "delta"
        result.seeds = result.coefficients = None
    else:
        raise ValueError(f"uplink must be one of {', '.join(UPLINKS)}, got {uplink!r}")
    return result


def evaluate(fm: FunctionalModel, state: ModelState, x: torch.Tensor, y: torch.Tensor,
             batch: int = 500) -> dict[str, float]:
    """Accuracy and mean cross-entropy of the global model on a held-out set.

    Batches of ``batch`` run on ``torch.get_num_threads()`` Python threads with one intra-op thread each
    (torch releases the GIL), and the per-batch sums are added in batch order: the result does not depend on
    the thread count, and no OpenMP thread spins at a barrier on a busy machine."""
    starts = range(0, len(y), batch)

    def part(start: int) -> tuple[float, int]:
        torch.set_num_threads(1)
        with torch.inference_mode():
            logits = fm(state.weights, x[start:start + batch])
            target = y[start:start + batch]
            return F.cross_entropy(logits, target, reduction="sum").item(), int((logits.argmax(1) == target).sum())

    threads = torch.get_num_threads()
    try:
        if threads == 1 or len(starts) == 1:
            parts = [part(s) for s in starts]
        else:
            with ThreadPoolExecutor(min(threads, len(starts))) as pool:
                parts = list(pool.map(part, starts))
    finally:
        torch.set_num_threads(threads)
    return {"accuracy": sum(c for _, c in parts) / len(y), "loss": math.fsum(s for s, _ in parts) / len(y)}
