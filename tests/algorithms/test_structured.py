"""Structured pruning: the mu +- band*sigma band on known scores, L1 filter scores, and the rebuilt smaller
network equal to the original with the pruned filters zeroed."""

import pytest
import torch

from algorithms.params import FunctionalModel
from algorithms.structured import band_keep, filter_scores, inner_keep, prunable_groups, prune_filters, shrink

DIGITS = (1, 8, 8)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- the band --------------------------------------------------------------------------------------------

def test_band_cuts_both_tails():
    """mu = 10, population sigma = sqrt(200/10) = 4.47: with band 2 the band is [1.06, 18.94]."""
    scores = torch.tensor([0.0, 10, 10, 10, 10, 10, 10, 10, 10, 20])
    assert band_keep(scores, 2.0).tolist() == list(range(1, 9))
    assert band_keep(scores, 2.3).tolist() == list(range(10))  # 2.3 * 4.47 = 10.3 > 10: all inside


def test_band_is_inclusive_and_uses_the_population_sigma():
    """[0, 2]: mu 1, population sigma 1 (the sample sigma would be 1.41): band 1 is exactly [0, 2]."""
    assert band_keep(torch.tensor([0.0, 2.0]), 1.0).tolist() == [0, 1]
    assert band_keep(torch.tensor([0.0, 2.0, 1.0, 1.0]), 1.0).tolist() == [2, 3]  # sigma 0.707


def test_one_high_outlier_is_cut_and_the_low_side_kept():
    scores = torch.tensor([1.0] * 63 + [1000.0])  # mu 16.6, sigma 123.9: the band is [-256, 289]
    assert band_keep(scores, 2.2).tolist() == list(range(63))


def test_an_empty_band_keeps_the_highest_scoring_filter():
    """[0, 10] with band 0.5: mu 5, sigma 5, band [2.5, 7.5] holds nothing: keep filter 1."""
    assert band_keep(torch.tensor([0.0, 10.0]), 0.5).tolist() == [1]
    assert band_keep(torch.tensor([3.0, 9.0, 0.0]), 0.1).tolist() == [1]


def test_equal_scores_are_all_kept():
    assert band_keep(torch.full((7,), 0.1), 2.2).tolist() == list(range(7))
    assert band_keep(torch.tensor([4.0]), 2.2).tolist() == [0]


@pytest.mark.parametrize("scores, band", [(torch.tensor([]), 1.0), (torch.ones(2, 2), 1.0),
                                          (torch.ones(3), 0.0)])
def test_bad_band_arguments(scores, band):
    with pytest.raises(ValueError):
        band_keep(scores, band)


# --- scores ----------------------------------------------------------------------------------------------

def test_mlp_scores_are_the_l1_norms_of_the_hidden_units_rows():
    fm = FunctionalModel("mlp", DIGITS, 10, (3, 2))
    w = torch.zeros(fm.size)
    views = fm.layout.views(w)
    views["1.weight"].copy_(torch.tensor([1.0, -2.0]).repeat(3, 32) * torch.tensor([[1.0], [0.5], [0.0]]))
    views["1.bias"].fill_(100.0)  # biases do not count
    views["3.weight"].copy_(torch.tensor([[1.0, -1.0, 2.0], [0.0, 0.0, -3.0]]))
    scores = filter_scores(fm, w)
    assert [s.tolist() for s in scores] == [[96.0, 48.0, 0.0], [4.0, 3.0]]


def test_resnet_block_scores_sum_the_second_conv_and_the_projection():
    fm = FunctionalModel("resnet_small", DIGITS, 10, (2, 3, 2))
    w = torch.zeros(fm.size)
    views = fm.layout.views(w)
    views["blocks.0.conv2.weight"][1].fill_(1.0)  # 3 * 9 = 27
    views["blocks.0.proj.weight"][1].fill_(-1.0)  # 2 * 1 = 2
    views["blocks.0.proj.weight"][2].fill_(0.5)  # 1
    views["blocks.0.conv1.weight"].fill_(7.0)  # inner channels: not in the block's scores
    assert filter_scores(fm, w)[1].tolist() == [0.0, 29.0, 1.0]
    assert [g.inner for g in prunable_groups(fm)] == [None, ("blocks.0.conv1", "blocks.0.conv2"),
                                                     ("blocks.1.conv1", "blocks.1.conv2")]


# --- the smaller network --------------------------------------------------------------------------------

def _zero_pruned(fm: FunctionalModel, weights: torch.Tensor, keep: list[torch.Tensor]) -> torch.Tensor:
    """The original model with every pruned filter's weights and bias set to 0 (a ResNet block's inner
    channels too, chosen as ``inner_keep`` chooses them)."""
    masked = weights.clone()
    views = fm.layout.views(masked)
    for group, k, width in zip(prunable_groups(fm), keep, fm.architecture):
        pairs = [(p, k) for p in group.producers]
        if group.inner is not None:
            pairs.append((group.inner[0], inner_keep(fm, weights, group, k.numel())))
        for path, kept in pairs:
            drop = torch.ones(width, dtype=torch.bool)
            drop[kept] = False
            views[f"{path}.weight"][drop] = 0.0
            views[f"{path}.bias"][drop] = 0.0
    return masked


@pytest.mark.parametrize("name", ["cnn_femnist", "resnet_small", "mlp_small", "cnn", "mlp"])
def test_copied_small_network_computes_the_masked_original(name):
    fm = FunctionalModel(name, DIGITS, 10)
    weights = fm.init_weights(4)
    gen = torch.Generator().manual_seed(5)
    keep = [torch.randperm(width, generator=gen)[:max(1, width // 3)].sort().values for width in fm.architecture]
    architecture, small_weights = shrink(fm, weights, keep)
    assert architecture == tuple(max(1, width // 3) for width in fm.architecture)
    small = FunctionalModel(name, DIGITS, 10, architecture)
    assert small_weights.shape == (small.size,) and small.size < fm.size
    x = torch.randn(6, *DIGITS, generator=gen)
    expected = fm(_zero_pruned(fm, weights, keep), x)
    assert torch.allclose(small(small_weights, x), expected, atol=1e-6, rtol=0)
    assert not torch.allclose(fm(weights, x), expected, atol=1e-3)  # the pruning did change the original


def test_shrink_copies_exact_values():
    """mlp_small keeping hidden units 1 and 3: their rows and biases, and columns 1 and 3 of the classifier."""
    fm = FunctionalModel("mlp_small", DIGITS, 10)
    weights = torch.arange(fm.size, dtype=torch.float32)
    architecture, small = shrink(fm, weights, [torch.tensor([1, 3])])
    old, new = fm.layout.views(weights), FunctionalModel("mlp_small", DIGITS, 10, (2,)).layout.views(small)
    assert architecture == (2,)
    assert torch.equal(new["1.weight"], old["1.weight"][[1, 3]])
    assert torch.equal(new["1.bias"], old["1.bias"][[1, 3]])
    assert torch.equal(new["3.weight"], old["3.weight"][:, [1, 3]])
    assert torch.equal(new["3.bias"], old["3.bias"])


def test_shrink_after_flatten_keeps_each_channels_block_of_columns():
    """cnn on 8x8: the classifier reads 32 channels x 2x2 positions, channel-major."""
    fm = FunctionalModel("cnn", DIGITS, 10)
    weights = torch.arange(fm.size, dtype=torch.float32)
    _, small = shrink(fm, weights, [torch.arange(16), torch.tensor([0, 5])])
    linear = FunctionalModel("cnn", DIGITS, 10, (16, 2)).layout.views(small)["7.weight"]
    assert torch.equal(linear, fm.layout.views(weights)["7.weight"][:, [0, 1, 2, 3, 20, 21, 22, 23]])


def test_reinit_is_the_smaller_models_fresh_initialisation():
    fm = FunctionalModel("cnn_femnist", DIGITS, 10)
    architecture, weights = shrink(fm, fm.init_weights(0), [torch.arange(5), torch.arange(7)], copy=False, seed=9)
    assert architecture == (5, 7)
    assert torch.equal(weights, FunctionalModel("cnn_femnist", DIGITS, 10, (5, 7)).init_weights(9))


@pytest.mark.parametrize("keep", [[torch.tensor([0])], [torch.tensor([]), torch.tensor([0])],
                                  [torch.tensor([0, 0]), torch.tensor([1])], [torch.tensor([16]), torch.tensor([1])]])
def test_shrink_rejects_bad_keep_lists(keep):
    fm = FunctionalModel("cnn", DIGITS, 10)
    with pytest.raises(ValueError, match="keep"):
        shrink(fm, fm.init_weights(0), keep)


def test_prune_filters_cuts_an_outlier_filter():
    fm = FunctionalModel("mlp_small", DIGITS, 10)
    weights = fm.init_weights(0)
    views = fm.layout.views(weights)
    views["1.weight"].fill_(1 / 64)  # every hidden unit scores 1 ...
    views["1.weight"][5].fill_(1000 / 64)  # ... but unit 5 scores 1000: cut
    architecture, small = prune_filters(fm, weights, 2.2)
    assert architecture == (63,)
    assert small.numel() == fm.size - 64 - 1 - 10
    assert prune_filters(FunctionalModel("mlp_small", DIGITS, 10, (63,)), small, 2.2)[0] == (63,)
