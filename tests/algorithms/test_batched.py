"""Batched local updates against the sequential reference (``algorithm.fit`` one client at a time).

What is bit-identical and what rounds differently, with the measured differences: ``docs/learning.md``
("The batched kernels"). The bounds below leave a margin of more than 20x over those measurements.
"""

import numpy as np
import pytest
import torch

from algorithms.base import TaskConfig
from algorithms.batched import BackpropKernel, batched_local_updates, derive_seeds
from algorithms.fedavg import FedAvg
from algorithms.fedprox import FedProx
from algorithms.local import ClientData, derive_seed
from algorithms.zo import FedFPZO, ZerothOrder

DIGITS, FASHION = (1, 8, 8), (1, 28, 28)
SIZES = (45, 70, 33, 20)  # the last client holds fewer samples than a batch: it trains on batches of 20
DELTA_BOUND = 1e-3  # max |batched - sequential| / ||sequential delta||
COEFFICIENT_BOUND = 1e-2  # max |batched - sequential| / max |sequential| over a client's ZO coefficients


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see tests/algorithms/conftest.py


def _datas(shape, sizes=SIZES, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [ClientData(torch.randn(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g))
            for n in sizes]


def _both(algorithm, datas, steps=10, batch=32):
    state = algorithm.init(3)
    config = TaskConfig("train", steps, batch)
    seeds = [derive_seed(11, k) for k in range(len(datas))]
    reference = [algorithm.fit(state, config, d, s) for d, s in zip(datas, seeds)]
    return reference, batched_local_updates(algorithm, state, config, datas, seeds)


def _relative(a, b):
    return float((a - b).abs().max() / a.norm())


def _assert_close(reference, batched):
    assert len(batched) == len(reference)
    for ref, got in zip(reference, batched):
        assert (got.kind, got.num_samples) == (ref.kind, ref.num_samples)
        assert (got.delta is None) == (ref.delta is None)
        assert (got.seeds is None) == (ref.seeds is None)
        assert (got.coefficients is None) == (ref.coefficients is None)
        if ref.delta is not None:
            assert got.delta.shape == ref.delta.shape and got.delta.dtype == ref.delta.dtype
            assert _relative(ref.delta, got.delta) <= DELTA_BOUND
        if ref.seeds is not None:
            assert got.seeds.dtype == np.int64 and got.coefficients.dtype == np.float32
            assert len(got.seeds) == len(ref.seeds) == len(got.coefficients) == len(ref.coefficients)
            np.testing.assert_array_equal(got.seeds, ref.seeds)
            scale = np.abs(ref.coefficients).max()
            assert np.abs(got.coefficients - ref.coefficients).max() <= COEFFICIENT_BOUND * scale
        assert got.train_loss == pytest.approx(ref.train_loss, rel=1e-5)


# The CNN cases take seconds each on 2 cores: they run in the slow profile (CI), the MLP in every run.
MODELS = [("mlp_small", DIGITS), pytest.param("cnn", FASHION, marks=pytest.mark.slow)]


@pytest.mark.parametrize("model, shape", MODELS)
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_fedavg_matches_the_sequential_updates(model, shape, optimizer):
    algorithm = FedAvg(model=model, optimizer=optimizer, input_shape=shape)
    reference, batched = _both(algorithm, _datas(shape))
    _assert_close(reference, batched)
    assert all(r.delta.abs().max() > 0 for r in batched)


@pytest.mark.parametrize("model, shape", MODELS)
@pytest.mark.parametrize("uplink", ["delta", "seeds"])
def test_dense_zo_matches_the_sequential_updates(model, shape, uplink):
    algorithm = ZerothOrder(model=model, queries=4, uplink=uplink, clip=0.5, input_shape=shape)
    reference, batched = _both(algorithm, _datas(shape))
    _assert_close(reference, batched)


@pytest.mark.parametrize("model, shape", MODELS)
@pytest.mark.parametrize("uplink", ["delta", "seeds"])
def test_masked_zo_matches_the_sequential_updates(model, shape, uplink):
    algorithm = FedFPZO(model=model, queries=4, density=0.2, uplink=uplink, prune_on="server",
                        input_shape=shape)
    datas = _datas(shape)
    reference, batched = _both(algorithm, datas)
    _assert_close(reference, batched)
    if uplink == "delta":  # pruned coordinates never move
        mask = algorithm.init(3).mask
        assert all(bool((r.delta[~mask] == 0).all()) for r in batched)


@pytest.mark.parametrize("model, shape", MODELS)
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_fedprox_vectorized_matches_its_sequential_updates(model, shape, optimizer):
    """FedProx declares no kernel code of its own: FedAvg's ``BackpropKernel`` runs its ``ProximalStep``."""
    algorithm = FedProx(model=model, optimizer=optimizer, mu=0.5, input_shape=shape)
    assert isinstance(algorithm.batched_kernel(TaskConfig("train", 10, 32)), BackpropKernel)
    reference, batched = _both(algorithm, _datas(shape))
    _assert_close(reference, batched)
    if model == "mlp_small":  # MLP backprop is bit-identical (module docstring)
        assert all(torch.equal(r.delta, b.delta) for r, b in zip(reference, batched))


def test_mlp_backprop_and_zo_are_bit_identical():
    """The module docstring's claim, asserted where it is exact: MLP units of two or more clients."""
    for algorithm in (FedAvg(model="mlp_small", optimizer="momentum", input_shape=DIGITS),
                      ZerothOrder(model="mlp_small", queries=3, uplink="delta", input_shape=DIGITS)):
        reference, batched = _both(algorithm, _datas(DIGITS, (45, 70, 33, 50)), steps=4)
        assert all(torch.equal(r.delta, b.delta) for r, b in zip(reference, batched))


def test_phase_prune_and_learners_without_a_kernel_run_fit():
    datas = _datas(DIGITS, (40, 36))
    algorithm = FedFPZO(model="mlp_small", prune_on="clients", input_shape=DIGITS)
    state = algorithm.init(0)
    config = algorithm.task(0, state)
    assert config.phase == "prune" and algorithm.batched_kernel(config) is None
    got = batched_local_updates(algorithm, state, config, datas, [1, 2])
    want = [algorithm.fit(state, config, d, s) for d, s in zip(datas, [1, 2])]
    assert all(torch.equal(g.scores, w.scores) for g, w in zip(got, want))

    class Custom(FedAvg):  # a new algorithm that declares no kernel
        def fit(self, state, config, data, seed):
            return ("custom", seed)

        def batched_kernel(self, config):
            return None

    custom = Custom(model="mlp_small", input_shape=DIGITS)
    assert batched_local_updates(custom, custom.init(0), TaskConfig("train", 2, 8), datas,
                                 [5, 6]) == [("custom", 5), ("custom", 6)]


def test_clients_the_kernel_declines_run_fit():
    """A kernel answers None for a client it cannot compute (data of another dtype, say): that client runs
    ``fit``, the others keep the kernel's results."""

    class Declining(FedAvg):
        def batched_kernel(self, config):
            inner = super().batched_kernel(config)

            class Kernel:
                def run(self, state, config, datas, seeds):
                    out = inner.run(state, config, datas, seeds)
                    out[1] = None
                    return out

            return Kernel()

    algorithm = Declining(model="mlp_small", input_shape=DIGITS)
    state, config, datas = algorithm.init(0), TaskConfig("train", 2, 8), _datas(DIGITS, (30, 30, 30))
    float64 = ClientData(datas[1].x.double(), datas[1].y)
    plain = BackpropKernel(algorithm.functional_model, algorithm.step).run(state, config, [datas[0], float64],
                                                                            [1, 2])
    assert plain[0] is not None and plain[1] is None
    got = batched_local_updates(algorithm, state, config, datas, [1, 2, 3])
    want = [algorithm.fit(state, config, d, s) for d, s in zip(datas, [1, 2, 3])]
    assert all(torch.equal(g.delta, w.delta) for g, w in zip(got, want))


def test_results_keep_the_order_of_the_clients_and_do_not_mutate_the_state():
    algorithm = FedAvg(model="mlp_small", input_shape=DIGITS)
    state = algorithm.init(0)
    before = state.weights.clone()
    datas = _datas(DIGITS, (50, 10, 40, 12))  # two batch sizes, interleaved
    got = batched_local_updates(algorithm, state, TaskConfig("train", 3, 16), datas, [4, 3, 2, 1])
    assert [r.num_samples for r in got] == [50, 10, 40, 12]
    assert torch.equal(state.weights, before)
    assert batched_local_updates(algorithm, state, TaskConfig("train", 3, 16), [], []) == []
    with pytest.raises(ValueError, match="length"):
        batched_local_updates(algorithm, state, TaskConfig("train", 3, 16), datas, [1])


def test_derive_seeds_is_derive_seed_elementwise():
    rng = np.random.default_rng(0)
    runs = np.concatenate([rng.integers(0, 2**63, 200), rng.integers(0, 2**32, 3), [0, 1, 2**32]])
    steps, queries = rng.integers(0, 40, len(runs)), rng.integers(0, 4000, len(runs))
    want = [derive_seed(int(a), int(b), int(c)) for a, b, c in zip(runs, steps, queries)]
    assert derive_seeds(runs, steps, queries).tolist() == want
    assert derive_seeds(7, np.arange(3)).tolist() == [derive_seed(7, i) for i in range(3)]


def test_results_do_not_depend_on_the_thread_count():
    """Units are cut by size only and every worker runs one intra-op thread, so two workers give the bits
    one worker gives."""
    datas = _datas(FASHION, (40, 50, 60, 20))
    algorithm = FedAvg(model="cnn", optimizer="momentum", input_shape=FASHION)
    state, config, seeds = algorithm.init(0), TaskConfig("train", 3, 32), [1, 2, 3, 4]
    one = batched_local_updates(algorithm, state, config, datas, seeds)
    torch.set_num_threads(2)
    try:
        two = batched_local_updates(algorithm, state, config, datas, seeds)
    finally:
        torch.set_num_threads(1)
    assert all(torch.equal(a.delta, b.delta) for a, b in zip(one, two))
