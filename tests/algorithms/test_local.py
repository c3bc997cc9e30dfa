"""The reference local updates: ZO estimate against autograd, the exact seed trick, replay, BP optimizers."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from algorithms.local import (
    ClientData,
    ModelState,
    batch_order,
    batch_plan,
    bp_update,
    derive_seed,
    evaluate,
    perturb,
    replay_seed_pairs,
    restore,
    zo_update,
)
from algorithms.optim import OptimizerStep
from algorithms.params import FunctionalModel

TINY = (1, 2, 2)  # mlp_small on 4 inputs: 4 -> 64 -> 10, P = 970


def _data(n, shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ClientData(torch.randn(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g))


def _cosine(a, b):
    return float(torch.dot(a, b) / (a.norm() * b.norm()))


@pytest.mark.slow  # 4000 queries: ~6 s on 2 quiet cores
def test_zo_estimate_converges_to_the_true_gradient():
    """One ZO step with lr = 1 on the full batch moves the weights by -g_hat, the mean of q central-
    difference estimates; E[g_hat] = grad L for Gaussian directions (up to O(mu^2)), and the cosine with
    autograd's gradient grows towards 1 like sqrt(q / (q + P))."""
    fm = FunctionalModel("mlp_small", TINY, 10)
    state = ModelState(fm.init_weights(1))
    data = _data(16, TINY)
    leaf = state.weights.clone().requires_grad_(True)
    (true_grad,) = torch.autograd.grad(F.cross_entropy(fm(leaf, data.x), data.y), leaf)
    cosines = {}
    for q in (50, 4000):
        result = zo_update(fm, state, data, 1, 16, 1.0, q, 1e-3, None, seed=5)
        cosines[q] = _cosine(-result.delta, true_grad)
    p = state.weights.numel()
    for q, cosine in cosines.items():
        assert cosine == pytest.approx(np.sqrt(q / (q + p)), abs=0.1)  # 0.22 and 0.90
    assert cosines[50] < cosines[4000]


@pytest.mark.parametrize("scale", [1e-3, -1e-3, 0.5, 1e-8])
@pytest.mark.parametrize("masked", [False, True])
def test_seed_trick_restores_the_weights_bit_for_bit(scale, masked):
    fm = FunctionalModel("cnn")
    w0 = fm.init_weights(3)
    w0[::7] = 0.0  # exact zeros and tiny weights are where a plain w + z - z round trip fails
    w0[1::11] *= 1e-6
    mask = None
    if masked:
        mask = torch.rand(w0.numel(), generator=torch.Generator().manual_seed(0)) < 0.3
        mask |= ~fm.layout.prunable_mask
    kept = None if mask is None else mask.nonzero().squeeze(1)
    w = w0.clone()
    fixups = perturb(w, kept, seed=11, scale=scale)
    assert not torch.equal(w, w0)
    if masked:
        assert torch.equal(w[~mask], w0[~mask])  # pruned coordinates never move
    restore(w, kept, seed=11, scale=scale, fixups=fixups)
    assert torch.equal(w.view(torch.int32), w0.view(torch.int32))


def test_naive_round_trip_would_not_be_exact():
    """Why the fix-ups exist: without them some coordinates come back one ulp off."""
    fm = FunctionalModel("cnn")
    w0 = fm.init_weights(3)
    z = torch.randn(w0.numel(), generator=torch.Generator().manual_seed(11)) * 1e-3
    assert not torch.equal((w0 + z) - z, w0)


@pytest.mark.parametrize("masked", [False, True])
def test_seed_pairs_replay_to_the_clients_delta_exactly(masked):
    fm = FunctionalModel("mlp_small", (1, 8, 8), 10)
    w = fm.init_weights(0)
    mask = None
    if masked:
        mask = (torch.rand(w.numel(), generator=torch.Generator().manual_seed(1)) < 0.1) | ~fm.layout.prunable_mask
        w = w * mask
    state = ModelState(w, mask)
    result = zo_update(fm, state, _data(50, (1, 8, 8)), 3, 16, 0.05, 4, 1e-3, 0.5, seed=9)
    assert result.seeds.shape == result.coefficients.shape == (12,)
    assert result.coefficients.dtype == np.float32
    assert np.abs(result.coefficients).max() <= 0.05 * 0.5 / 4 + 1e-9  # clipped |c| <= clip
    replayed = replay_seed_pairs(state, result.seeds, result.coefficients)
    assert torch.equal(replayed, result.delta)
    if masked:
        assert torch.count_nonzero(result.delta[~mask]) == 0


def test_local_updates_depend_only_on_their_seed():
    fm = FunctionalModel("mlp_small", (1, 8, 8), 10)
    state = ModelState(fm.init_weights(0))
    data = _data(70, (1, 8, 8))
    torch.manual_seed(123)
    a = bp_update(fm, state, data, 5, 16, OptimizerStep("adam", 0.1), seed=4)
    torch.manual_seed(999)  # the global generator plays no part
    b = bp_update(fm, state, data, 5, 16, OptimizerStep("adam", 0.1), seed=4)
    c = bp_update(fm, state, data, 5, 16, OptimizerStep("adam", 0.1), seed=5)
    assert torch.equal(a.delta, b.delta)
    assert not torch.equal(a.delta, c.delta)
    assert torch.equal(state.weights, fm.init_weights(0))  # the global state is not mutated


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_bp_update_matches_torch_optimizers(optimizer):
    """The flat-vector optimizers equal torch.optim's SGD / SGD(momentum=0.9) / Adam on the module."""
    fm = FunctionalModel("mlp_small", (1, 8, 8), 10)
    state = ModelState(fm.init_weights(0))
    data = _data(40, (1, 8, 8))
    ours = bp_update(fm, state, data, 4, 8, OptimizerStep(optimizer, 0.05), seed=2)
    module = fm.module
    module.requires_grad_(True)
    torch.nn.utils.vector_to_parameters(state.weights.clone(), module.parameters())
    opt = {"sgd": lambda p: torch.optim.SGD(p, lr=0.05),
           "momentum": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
           "adam": lambda p: torch.optim.Adam(p, lr=0.05)}[optimizer](module.parameters())
    for idx in batch_plan(len(data), 8, 4, seed=2):
        opt.zero_grad()
        F.cross_entropy(module(data.x[idx]), data.y[idx]).backward()
        opt.step()
    theirs = torch.nn.utils.parameters_to_vector(module.parameters()).detach() - state.weights
    module.requires_grad_(False)
    torch.testing.assert_close(ours.delta, theirs, rtol=1e-5, atol=1e-6)


def test_masked_bp_keeps_pruned_weights_at_zero():
    fm = FunctionalModel("mlp_small", (1, 8, 8), 10)
    mask = (torch.rand(fm.size, generator=torch.Generator().manual_seed(3)) < 0.2) | ~fm.layout.prunable_mask
    state = ModelState(fm.init_weights(0) * mask, mask)
    result = bp_update(fm, state, _data(40, (1, 8, 8)), 5, 8, OptimizerStep("adam", 0.1), seed=1)
    assert torch.count_nonzero(result.delta[~mask]) == 0
    assert torch.count_nonzero(result.delta[mask]) > 0


def test_batch_plan_walks_permutations_and_shrinks_to_the_data():
    plan = batch_plan(10, 4, 5, seed=0)
    assert [len(b) for b in plan] == [4, 4, 4, 4, 4]
    first_epoch = torch.cat(plan[:2])
    assert len(set(first_epoch.tolist())) == 8  # no repeats inside an epoch
    assert [len(b) for b in batch_plan(3, 32, 2, seed=0)] == [3, 3]
    with pytest.raises(ValueError):
        batch_plan(0, 4, 1, seed=0)


def _walked_plan(n, batch, steps, seed, partial):
    """batch_plan's contract, step by step: a permutation drawn at the start and whenever the current one
    cannot give the next batch (with ``partial``: only once it is used up)."""
    batch = min(batch, n)
    gen = torch.Generator().manual_seed(seed)
    out, perm, pos = [], torch.randperm(n, generator=gen), 0
    for _ in range(steps):
        if pos + batch > n and (pos == n or not partial):
            perm, pos = torch.randperm(n, generator=gen), 0
        take = min(batch, n - pos)
        out.append(perm[pos:pos + take])
        pos += take
    return out


@pytest.mark.parametrize("partial", [False, True])
def test_batch_order_draws_the_walked_plan_with_one_reused_generator(partial):
    gen = torch.Generator()
    gen.manual_seed(123)  # a used generator: batch_order reseeds it
    torch.randperm(5, generator=gen)
    for n in (1, 2, 7, 8, 31, 32, 33, 61, 64, 150):
        for batch in (1, 3, 32, 200):
            for steps in (1, 2, 3, 5, 13):
                seed = derive_seed(n, batch, steps)
                want = _walked_plan(n, batch, steps, seed, partial)
                order, sizes = batch_order(n, batch, steps, seed, partial, gen)
                assert sizes == [len(b) for b in want]
                assert torch.equal(order, torch.cat(want))
                assert all(torch.equal(a, b) for a, b in zip(batch_plan(n, batch, steps, seed, partial), want))
    order, sizes = batch_order(61, 32, 3, seed=0, partial=True)
    assert sizes == [32, 29, 32] and len(set(order[:61].tolist())) == 61  # a pass, then a new permutation


def test_derive_seed_is_stable_and_distinct():
    assert derive_seed(1, 2, 3) == derive_seed(1, 2, 3)
    assert len({derive_seed(1, d, r) for d in range(50) for r in range(50)}) == 2500
    assert 0 <= derive_seed(7) < 2**63


def test_evaluate_is_accuracy_and_mean_cross_entropy():
    fm = FunctionalModel("mlp_small", (1, 8, 8), 10)
    state = ModelState(fm.init_weights(0))
    data = _data(30, (1, 8, 8))
    metrics = evaluate(fm, state, data.x, data.y, batch=7)
    logits = fm(state.weights, data.x)
    assert metrics["accuracy"] == pytest.approx(float((logits.argmax(1) == data.y).float().mean()))
    assert metrics["loss"] == pytest.approx(float(F.cross_entropy(logits, data.y)), rel=1e-6)


class _Pulled(OptimizerStep):
    """A step whose local objective adds 0.3 (w - anchor): the hook ``step_all`` must call per tensor."""

    def gradient(self, w, grad, anchor):
        return grad.add_(torch.sub(w, anchor), alpha=0.3)


@pytest.mark.parametrize("step", [OptimizerStep("sgd", 0.1), OptimizerStep("momentum", 0.1),
                                  OptimizerStep("adam", 0.01), _Pulled("adam", 0.01)])
@pytest.mark.parametrize("masked", [False, True])
def test_step_all_is_the_per_tensor_step_bit_for_bit(step, masked):
    gen = torch.Generator().manual_seed(5)
    sizes = [7, 33, 160, 1]  # odd lengths: vector bodies and scalar tails
    anchors = [torch.randn(m, generator=gen) for m in sizes]
    masks = [torch.rand(m, generator=gen) < 0.6 for m in sizes] if masked else None
    ws = [a.expand(3, -1).clone() + torch.randn(3, a.numel(), generator=gen) for a in anchors]
    alike = [w.clone() for w in ws]
    slots, slots_alike = [step.slots(w) for w in ws], [step.slots(w) for w in ws]
    with torch.no_grad():
        for t in (1, 2, 3):
            grads = [torch.randn(w.shape, generator=gen) for w in ws]
            for i, g in enumerate(grads):
                step(t, alike[i], g.clone(), anchors[i], None if masks is None else masks[i], *slots_alike[i])
            step.step_all(t, ws, grads, anchors, masks, *(None if s[0] is None else list(s) for s in zip(*slots)))
    for got, want in zip(ws, alike):
        assert torch.equal(got, want)
    for got, want in zip(slots, slots_alike):
        assert all((a is None and b is None) or torch.equal(a, b) for a, b in zip(got, want))
