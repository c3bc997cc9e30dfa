"""The aggregation maths on toy inputs, exactly (``algorithms.aggregate``)."""

import pytest
import torch

from algorithms.aggregate import apply_delta, mean_delta, sample_shares, score_sum, weighted_sum


def test_weighted_sum_is_exact_on_representable_values():
    a, b = torch.ones(3), torch.arange(3.0)
    assert torch.equal(weighted_sum([a, b], [0.5, 2.0]), torch.tensor([0.5, 2.5, 4.5]))
    assert weighted_sum([a], [3.0]).dtype == torch.float32


def test_weighted_sum_accumulates_in_the_given_order():
    """float32 addition is not associative: 1e8 + 1 rounds back to 1e8, so the order of the terms shows."""
    big, one = torch.tensor([1e8]), torch.tensor([1.0])
    assert weighted_sum([big, one, -big], [1, 1, 1]).item() == 0.0
    assert weighted_sum([big, -big, one], [1, 1, 1]).item() == 1.0


@pytest.mark.parametrize("tensors, weights", [([], []), ([torch.ones(2)], [1.0, 2.0])])
def test_weighted_sum_refuses_no_terms_or_a_length_mismatch(tensors, weights):
    with pytest.raises(ValueError, match="weighted_sum"):
        weighted_sum(tensors, weights)


def test_sample_shares_weight_each_client_by_its_data():
    assert sample_shares([10, 30], [1.0, 1.0]) == [0.25, 0.75]
    assert sample_shares([10, 30], [1.0, 0.5]) == [0.25, 0.375]  # a staleness discount: no renormalising
    assert sample_shares([7], [1.0]) == [1.0]
    with pytest.raises(ValueError, match="positive total"):
        sample_shares([0, 0], [1.0, 1.0])
    with pytest.raises(ValueError, match="2 sample counts but 1 weights"):
        sample_shares([1, 2], [1.0])


def test_mean_delta_is_the_sample_weighted_mean():
    deltas = [torch.tensor([4.0, 8.0]), torch.tensor([0.0, 4.0])]
    assert torch.equal(mean_delta(deltas, [1, 3], [1.0, 1.0]), torch.tensor([1.0, 5.0]))
    same = torch.tensor([0.5, -2.0])  # equal deltas average to themselves, whatever the counts
    assert torch.equal(mean_delta([same, same], [13, 39], [1.0, 1.0]), same)


def test_apply_delta_keeps_pruned_coordinates_at_zero_and_mutates_nothing():
    w, d = torch.tensor([1.0, 0.0, 3.0]), torch.tensor([1.0, 1.0, 1.0])
    mask = torch.tensor([True, False, True])
    assert torch.equal(apply_delta(w, d, mask), torch.tensor([2.0, 0.0, 4.0]))
    assert torch.equal(apply_delta(w, d), torch.tensor([2.0, 1.0, 4.0]))
    assert torch.equal(w, torch.tensor([1.0, 0.0, 3.0])) and torch.equal(d, torch.ones(3))


def test_score_sum_normalises_the_weights():
    a, b = torch.tensor([1.0, 0.0, 4.0]), torch.tensor([3.0, 2.0, 0.0])
    assert torch.equal(score_sum([a, b], [1, 3]), torch.tensor([2.5, 1.5, 1.0]))
    assert torch.equal(score_sum([a, b], [2.0, 2.0]), torch.tensor([2.0, 1.0, 2.0]))
    assert score_sum([a, b], [1, 3]).dtype == torch.float32


def test_score_sum_accumulates_in_float64():
    """Shares of 1/4: 2^23 + 0.25 rounds back to 2^23 in float32 (ulp 1), so a float32 sum would end at 0;
    in float64 the two quarters survive the cancellation and give 0.5."""
    scores = [torch.tensor([2.0**25]), torch.tensor([1.0]), torch.tensor([1.0]), torch.tensor([-(2.0**25)])]
    assert score_sum(scores, [1, 1, 1, 1]).item() == 0.5


@pytest.mark.parametrize("scores, weights, match", [
    ([torch.ones(3), torch.ones(3)], [1.0, -1.0], "weights"),
    ([torch.ones(3), torch.ones(3)], [1.0], "weights"),
    ([torch.ones(3), torch.ones(3)], [0.0, 0.0], "weights"),
    ([torch.ones(3), torch.ones(4)], [1, 1], "shape"),
    ([], [], "non-empty"),
])
def test_score_sum_refuses_bad_inputs(scores, weights, match):
    with pytest.raises(ValueError, match=match):
        score_sum(scores, weights)
