"""Partitions: disjoint, covering, sized as promised, skewed as promised, deterministic."""

import numpy as np
import pytest

from algorithms.partition import PARTITION_SCHEMES, label_histogram, partition


@pytest.fixture(scope="module")
def labels():
    """60,000 labels, 6,000 of each of 10 classes, in shuffled order (so index order is not label order)."""
    return np.random.default_rng(123).permutation(np.repeat(np.arange(10), 6000))


def assert_disjoint_and_covering(parts, n):
    for part in parts:
        assert part.dtype == np.int64 and np.all(np.diff(part) > 0)  # sorted, no repeats
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(n))


def mean_label_entropy(labels, parts):
    histogram = label_histogram(labels, parts, 10).astype(float)
    shares = histogram / histogram.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.mean(-np.nansum(shares * np.log(shares), axis=1)))


def test_schemes():
    assert PARTITION_SCHEMES == ("iid", "dirichlet", "shards")


@pytest.mark.parametrize("scheme", PARTITION_SCHEMES)
def test_every_scheme_is_disjoint_and_covers_every_sample(labels, scheme):
    parts = partition(labels, 1000, scheme, np.random.default_rng(0), alpha=0.05)
    assert len(parts) == 1000
    assert_disjoint_and_covering(parts, len(labels))


@pytest.mark.parametrize("scheme", PARTITION_SCHEMES)
def test_same_rng_state_same_partition_other_seed_another(labels, scheme):
    first = partition(labels, 50, scheme, np.random.default_rng(5))
    again = partition(labels, 50, scheme, np.random.default_rng(5))
    other = partition(labels, 50, scheme, np.random.default_rng(6))
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


def test_iid_sizes_differ_by_at_most_one():
    parts = partition(np.zeros(103, dtype=np.int64), 10, "iid", np.random.default_rng(0))
    assert sorted(len(p) for p in parts) == [10] * 7 + [11] * 3
    assert_disjoint_and_covering(parts, 103)


def test_iid_is_not_the_identity_split(labels):
    parts = partition(labels, 10, "iid", np.random.default_rng(0))
    assert not np.array_equal(parts[0], np.arange(6000))
    assert label_histogram(labels, parts, 10).min() > 450  # every client sees every class, ~600 each


def test_iid_too_few_samples_says_how_many():
    with pytest.raises(ValueError, match="10 samples cannot give 11 clients min_size=1"):
        partition(np.zeros(10, dtype=np.int64), 11, "iid", np.random.default_rng(0))
    parts = partition(np.zeros(10, dtype=np.int64), 11, "iid", np.random.default_rng(0), min_size=0)
    assert sorted(map(len, parts)) == [0] + [1] * 10


@pytest.mark.parametrize("min_size", [1, 10])
def test_dirichlet_respects_min_size_at_alpha_005_with_1000_clients(labels, min_size):
    parts = partition(labels, 1000, "dirichlet", np.random.default_rng(1), alpha=0.05, min_size=min_size)
    assert min(map(len, parts)) >= min_size
    assert_disjoint_and_covering(parts, len(labels))


def test_dirichlet_repair_reaches_an_exact_fit_at_10000_clients(labels):
    parts = partition(labels, 10000, "dirichlet", np.random.default_rng(2), alpha=0.05, min_size=6)
    assert {len(p) for p in parts} == {6}  # 60,000 samples, 10,000 clients: only an exact split fits
    assert_disjoint_and_covering(parts, len(labels))


def test_dirichlet_smaller_alpha_more_label_skew(labels):
    entropy = {alpha: mean_label_entropy(labels, partition(labels, 100, "dirichlet", np.random.default_rng(3),
                                                           alpha=alpha))
               for alpha in (0.05, 0.5, 100.0)}
    assert entropy[0.05] < entropy[0.5] < entropy[100.0]
    assert entropy[0.05] < 1.0 and entropy[100.0] > 0.98 * np.log(10)  # near one class / near uniform


def test_dirichlet_handles_absent_classes_and_one_client():
    labels = np.array([5, 0, 5, 5, 0, 7], dtype=np.int64)
    parts = partition(labels, 3, "dirichlet", np.random.default_rng(0), alpha=0.1)
    assert_disjoint_and_covering(parts, 6)
    assert min(map(len, parts)) >= 1
    only = partition(labels, 1, "dirichlet", np.random.default_rng(0))
    np.testing.assert_array_equal(only[0], np.arange(6))


def test_dirichlet_min_size_beyond_the_samples_is_refused(labels):
    with pytest.raises(ValueError, match="60000 samples cannot give 1000 clients min_size=61"):
        partition(labels, 1000, "dirichlet", np.random.default_rng(0), min_size=61)


@pytest.mark.parametrize("per_client", [1, 2, 3])
def test_shards_give_each_client_at_most_shards_per_client_labels(labels, per_client):
    parts = partition(labels, 100, "shards", np.random.default_rng(4), shards_per_client=per_client)
    assert {len(p) for p in parts} == {600}  # shards of 600 / per_client samples
    histogram = label_histogram(labels, parts, 10)
    assert ((histogram > 0).sum(axis=1) <= per_client).all()  # shards divide 6,000: none straddles two classes
    assert ((histogram > 0).sum(axis=1) == 1).mean() < 0.5 or per_client == 1  # shards are dealt at random
    assert_disjoint_and_covering(parts, len(labels))


def test_shards_cover_uneven_sizes():
    labels = np.arange(103) % 4
    parts = partition(labels, 5, "shards", np.random.default_rng(0), shards_per_client=2)
    assert_disjoint_and_covering(parts, 103)
    assert all(20 <= len(p) <= 22 for p in parts)  # ten shards of 10 or 11


def test_shards_need_a_sample_per_shard():
    with pytest.raises(ValueError, match="19 samples cannot fill 20 shards"):
        partition(np.zeros(19, dtype=np.int64), 10, "shards", np.random.default_rng(0), min_size=0)
    with pytest.raises(ValueError, match="leave a client 4 samples, below min_size=5"):
        partition(np.zeros(59, dtype=np.int64), 10, "shards", np.random.default_rng(0), min_size=5)


def test_label_histogram_counts_exactly():
    labels = np.array([0, 1, 1, 2, 2, 2])
    histogram = label_histogram(labels, [np.array([0, 3]), np.array([1, 2, 4, 5]), np.array([], np.int64)], 4)
    np.testing.assert_array_equal(histogram, [[1, 0, 1, 0], [0, 2, 2, 0], [0, 0, 0, 0]])
    with pytest.raises(ValueError, match="num_classes=2 but labels hold class 2"):
        label_histogram(labels, [np.arange(6)], 2)


@pytest.mark.parametrize("kwargs, field", [
    (dict(scheme="natural"), "scheme"),
    (dict(alpha=0.0), "alpha"), (dict(alpha=-1.0), "alpha"), (dict(alpha=float("nan")), "alpha"),
    (dict(alpha=float("inf")), "alpha"), (dict(alpha=True), "alpha"),
    (dict(n_clients=0), "n_clients"), (dict(n_clients=2.0), "n_clients"),
    (dict(min_size=-1), "min_size"), (dict(shards_per_client=0), "shards_per_client"),
    (dict(labels=np.zeros((4, 2), np.int64)), "labels"), (dict(labels=np.zeros(8)), "labels"),
    (dict(labels=np.array([0, -1, 2, 3, 4, 5, 6, 7])), "labels"),
    (dict(rng=np.random.RandomState(0)), "rng"),
])
def test_bad_arguments_name_the_argument(kwargs, field):
    arguments = dict(labels=np.arange(8) % 2, n_clients=2, scheme="dirichlet", rng=np.random.default_rng(0))
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=rf"^{field} must"):
        partition(arguments.pop("labels"), arguments.pop("n_clients"), arguments.pop("scheme"),
                  arguments.pop("rng"), **arguments)
