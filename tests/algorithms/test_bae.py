"""BaE: the REX factor and the budget-aware rate at known steps, the marked set, the penalty's gradient
against autograd, and the local update with BaE against autograd on the module with torch.optim."""

import math

import pytest
import torch
import torch.nn.functional as F

from algorithms.bae import (
    add_penalty_gradient,
    bae_rate,
    marked_indices,
    marked_norm,
    marked_rate,
    penalty_value,
    rex_factor,
)
from algorithms.dynamic_sparse import initial_mask, prunable_spans, swap_counts
from algorithms.fedmef_local import BaeSettings, fedmef_update
from algorithms.local import ClientData, ModelState, batch_plan, bp_update
from algorithms.optim import OptimizerStep
from algorithms.params import FunctionalModel

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DIGITS = (1, 8, 8)


def test_rex_factor_at_known_steps():
    assert rex_factor(0, 10) == 1.0
    assert rex_factor(5, 10) == pytest.approx(10 / 15)
    assert rex_factor(9, 10) == pytest.approx(2 / 11)
    assert rex_factor(10, 10) == 0.0


def test_bae_rate_at_known_steps():
    """sigmoid(ln 3) = 3/4, so 2 sigmoid - 1 = 1/2: beta = p(t) / 2 * lr0."""
    assert bae_rate(0, 10, math.log(3), 0.1) == pytest.approx(0.05)
    assert bae_rate(5, 10, math.log(3), 0.1) == pytest.approx(0.1 * 0.5 * 10 / 15)
    assert bae_rate(3, 10, 0.0, 0.1) == 0.0  # nothing marked: no push
    # beta < lr0 always, so under a constant rate the marked weights step at lr0
    assert marked_rate(0.1, bae_rate(0, 10, 50.0, 0.1)) == 0.1
    assert marked_rate(0.01, 0.05) == 0.05


def test_marked_set_is_the_k_smallest_active_magnitudes_per_tensor():
    weights = torch.tensor([0.5, -0.1, 0.0, 0.3, 0.0, 0.2, -0.05, 0.0, 7.0, 8.0])
    mask = weights != 0
    spans = [(0, 8, (2, 4))]
    (idx,) = marked_indices(weights, mask, spans, [2])
    assert sorted(idx.tolist()) == [1, 6]  # |-0.1| and |-0.05|; the inactive zeros are never marked
    values = [weights[:8]]
    assert marked_norm(values, [idx], "l2") == pytest.approx(math.hypot(0.1, 0.05))
    assert marked_norm(values, [idx], "l1") == pytest.approx(0.15)
    assert penalty_value(values, [idx], 2.0, "squared") == pytest.approx(2.0 * (0.01 + 0.0025))
    assert penalty_value(values, [idx], 2.0, "unsquared") == pytest.approx(math.hypot(0.1, 0.05))  # no lambda


@pytest.mark.parametrize("penalty", ["squared", "unsquared"])
def test_penalty_gradient_is_autograd_of_the_penalty(penalty):
    w = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))
    idx = torch.tensor([0, 4, 7, 11])
    leaf = w.clone().requires_grad_(True)
    value = leaf.reshape(-1)[idx]
    term = 0.3 * value.square().sum() if penalty == "squared" else value.norm()
    (expected,) = torch.autograd.grad(term, leaf)
    grad = torch.zeros_like(w)
    add_penalty_gradient(grad, w, idx, 0.3, penalty)
    torch.testing.assert_close(grad, expected)


def _setup():
    fm = FunctionalModel("mlp_small", DIGITS)
    weights = fm.init_weights(0)
    mask = initial_mask(fm.layout, weights, 0.3, "erk")
    gen = torch.Generator().manual_seed(1)
    data = ClientData(torch.randn(40, *DIGITS, generator=gen), torch.randint(0, 10, (40,), generator=gen))
    return fm, ModelState(weights * mask, mask), data


def test_without_bae_and_sap_the_update_is_masked_bp_bit_for_bit():
    fm, state, data = _setup()
    ours = fedmef_update(fm, state, data, 4, 8, OptimizerStep("adam", 0.01), 3)
    theirs = bp_update(fm, state, data, 4, 8, OptimizerStep("adam", 0.01), 3)
    assert ours.kind == "delta" and ours.gradient is None
    assert torch.equal(ours.delta, theirs.delta) and ours.train_loss == theirs.train_loss
    assert not bool(ours.delta[~state.mask].any())  # inactive weights stay 0


def test_bae_update_is_sgd_on_the_task_loss_plus_the_penalty():
    """Autograd on the module, with torch.optim.SGD on L + lambda ||theta_low||^2 and the gradient masked,
    gives the same update (the marked set fixed at the start, as BaE fixes it)."""
    fm, state, data = _setup()
    lam, lr, steps = 5.0, 0.1, 3
    counts = swap_counts(state.mask, fm.layout, 0.2)
    spans = prunable_spans(fm.layout)
    marked = marked_indices(state.weights, state.mask, spans, counts)
    ours = fedmef_update(fm, state, data, steps, 8, OptimizerStep("sgd", lr), 2,
                         bae=BaeSettings(tuple(counts), lam, "l2", "squared"))
    module = fm.module
    module.requires_grad_(True)
    torch.nn.utils.vector_to_parameters(state.weights.clone(), module.parameters())
    params = list(module.parameters())
    masks = list(fm.layout.views(state.mask).values())
    prunable = [p for p, keep in zip(params, fm.layout.prunable) if keep]
    opt = torch.optim.SGD(params, lr=lr)
    for idx in batch_plan(len(data), 8, steps, 2):
        opt.zero_grad()
        term = sum(p.reshape(-1)[i].square().sum() for p, i in zip(prunable, marked))
        (F.cross_entropy(module(data.x[idx]), data.y[idx]) + lam * term).backward()
        for p, m in zip(params, masks):
            p.grad.mul_(m)
        opt.step()
    theirs = torch.nn.utils.parameters_to_vector(params).detach() - state.weights
    module.requires_grad_(False)
    torch.testing.assert_close(ours.delta, theirs, rtol=1e-5, atol=1e-7)
    plain = fedmef_update(fm, state, data, steps, 8, OptimizerStep("sgd", lr), 2)

    def low(delta):
        return torch.cat([(state.weights + delta)[o:o + n][i] for (o, n, _), i in zip(spans, marked)]).norm()
    assert low(ours.delta) < low(plain.delta)  # the penalty extrudes the marked weights
