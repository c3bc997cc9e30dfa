"""Dynamic sparse training: ERK densities, the initial mask, f_decay, prune-and-grow and the top-k filter,
on hand-made layers with expectations written out by hand."""

import math

import pytest
import torch
from torch import nn

from algorithms.dynamic_sparse import (
    f_decay,
    initial_mask,
    kept_counts,
    layer_densities,
    prune_and_grow,
    swap_counts,
    topk_inactive,
)
from algorithms.params import ParamLayout

# two linear layers: weights (20, 10) and (5, 20), biases 20 and 5; P = 325, Pp = 300
TWO = ParamLayout.of(nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5)))
# one linear layer (2, 4) and its bias: the hand-made prune-and-grow case
ONE = ParamLayout.of(nn.Sequential(nn.Linear(4, 2)))


def test_erk_gives_each_layer_density_proportional_to_its_dimension_sum_over_its_size():
    """raw = (20 + 10) / 200 = 0.15 and (5 + 20) / 100 = 0.25; 0.2 * 300 = 60 kept = s * (30 + 25)."""
    d1, d2 = layer_densities(TWO, 0.2, "erk")
    assert d1 == pytest.approx(0.15 * 60 / 55) and d2 == pytest.approx(0.25 * 60 / 55)
    assert kept_counts(TWO, 0.2, "erk") == [33, 27]  # round(32.73), round(27.27): 60 in all


def test_erk_makes_a_layer_dense_when_its_density_would_pass_one():
    """At 0.9, 270 kept: the second layer would get 0.25 * 270 / 55 > 1, so it is dense (100) and the first
    takes the other 170 of its 200."""
    assert layer_densities(TWO, 0.9, "erk") == pytest.approx([0.85, 1.0])
    assert kept_counts(TWO, 0.9, "erk") == [170, 100]


def test_uniform_gives_every_layer_the_density():
    assert layer_densities(TWO, 0.2, "uniform") == [0.2, 0.2]
    assert kept_counts(TWO, 0.2, "uniform") == [40, 20]


def test_initial_mask_keeps_the_largest_magnitudes_per_layer_and_every_bias():
    weights = torch.arange(TWO.size, dtype=torch.float32).neg_()  # |w| grows with the index
    mask = initial_mask(TWO, weights, 0.2, "erk")
    first, bias1, second, bias2 = (mask[o:o + math.prod(s)] for o, s in zip(TWO.offsets, TWO.shapes))
    assert first.sum() == 33 and first[-33:].all()  # the last 33 of the first weight: the largest
    assert second.sum() == 27 and second[-27:].all()
    assert bias1.all() and bias2.all()


def test_f_decay_is_the_cosine_from_alpha_to_zero():
    assert f_decay(0, 0.2, 100) == pytest.approx(0.2)
    assert f_decay(50, 0.2, 100) == pytest.approx(0.1)
    assert f_decay(25, 0.2, 100) == pytest.approx(0.1 * (1 + math.sqrt(0.5)))
    assert f_decay(100, 0.2, 100) == pytest.approx(0.0)
    assert f_decay(101, 0.2, 100) == 0.0 and f_decay(5, 0.2, 0) == 0.0


def _hand_made():
    weights = torch.tensor([0.5, -0.1, 0.0, 0.3, 0.0, 0.2, -0.05, 0.0, 7.0, 8.0])  # (2, 4) weight, bias
    mask = weights != 0
    gradient = torch.tensor([9.0, 0.7, 0.4, 9.0, 0.9, 9.0, 0.8, 0.1, 9.0, 9.0])
    return weights, mask, gradient


def test_prune_and_grow_on_a_hand_made_layer():
    """5 active weights, k = int(0.4 * 5) = 2: drop |-0.05| and |-0.1| (positions 6 and 1); inactive after the
    drop: 1, 2, 4, 6, 7 with |g| 0.7, 0.4, 0.9, 0.8, 0.1: grow 4 and 6 (6 was just dropped: regrown at 0)."""
    weights, mask, gradient = _hand_made()
    counts = swap_counts(mask, ONE, 0.4)
    assert counts == [2]
    new_w, new_mask = prune_and_grow(weights, mask, gradient, ONE, counts)
    assert new_mask.tolist() == [True, False, False, True, True, True, True, False, True, True]
    assert new_w.tolist() == pytest.approx([0.5, 0.0, 0.0, 0.3, 0.0, 0.2, 0.0, 0.0, 7.0, 8.0])
    assert torch.equal(weights, _hand_made()[0]) and torch.equal(mask, _hand_made()[1])  # inputs untouched
    assert int(new_mask[:8].sum()) == int(mask[:8].sum())  # the layer's density is constant


def test_prune_and_grow_with_no_swap_changes_nothing():
    weights, mask, gradient = _hand_made()
    new_w, new_mask = prune_and_grow(weights, mask, gradient, ONE, [0])
    assert torch.equal(new_w, weights) and torch.equal(new_mask, mask)


def test_topk_keeps_the_largest_gradients_among_inactive_positions_only():
    weights, mask, gradient = _hand_made()
    topk_inactive(gradient, mask, ONE, [2])  # inactive: 2 (0.4), 4 (0.9), 7 (0.1): keep 4 and 2
    assert gradient.tolist() == pytest.approx([0, 0, 0.4, 0, 0.9, 0, 0, 0, 0, 0])  # the bias is not sent


def test_topk_caps_k_at_the_inactive_count():
    weights, mask, gradient = _hand_made()
    topk_inactive(gradient, mask, ONE, [10])
    assert gradient.tolist() == pytest.approx([0, 0, 0.4, 0, 0.9, 0, 0, 0.1, 0, 0])
