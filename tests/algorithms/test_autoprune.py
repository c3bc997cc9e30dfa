"""Automatic structured pruning: the constructor against the registry, the prune schedule (prune_until,
patience) read back from the state alone, the demand shrinking with the architecture, the batched kernel on
a pruned model, and learning on scikit-learn's digits through the registry.

mlp_small on 8x8 digits: P = 64*64 + 64 + 64*10 + 10 = 4810; at architecture (32,), P = 2410.
"""

import inspect

import numpy as np
import pytest
import torch

from algorithms import cost
from algorithms.autoprune import AutoPrune
from algorithms.base import TaskConfig
from algorithms.batched import batched_local_updates
from algorithms.datasets import load_dataset
from algorithms.local import ClientData, ClientResult, ModelState, derive_seed
from algorithms.profiling import profile_named_model
from algorithms.registry import DATASET_PARAMS, PARAMETERS, create_algorithm

DIGITS = (1, 8, 8)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _algorithm(**kwargs) -> AutoPrune:
    return AutoPrune(**{"model": "mlp_small", "input_shape": DIGITS, **kwargs})


def _with_outlier(algorithm: AutoPrune, state: ModelState, unit: int | None) -> ModelState:
    """``state`` with every hidden unit's L1 norm 1 and, if ``unit`` is given, that one's 1000."""
    weights = state.weights.clone()
    views = algorithm.functional_model_for(state.architecture).layout.views(weights)
    views["1.weight"].fill_(1 / 64)
    if unit is not None:
        views["1.weight"][unit].fill_(1000 / 64)
    return ModelState(weights, None, state.prune_step, state.architecture)


def test_keyword_arguments_are_the_registrys():
    names = [p for p in inspect.signature(AutoPrune).parameters]
    assert set(names) == set(PARAMETERS["autoprune"]) | set(DATASET_PARAMS)


def test_defaults():
    algorithm = create_algorithm("autoprune")
    assert (algorithm.model, algorithm.batch_size, algorithm.local_steps, algorithm.optimizer, algorithm.lr,
            algorithm.local_epochs, algorithm.band, algorithm.prune_until, algorithm.patience,
            algorithm.after_prune) == ("cnn_femnist", 32, 10, "sgd", 0.05, None, 2.2, 50, 3, "copy")


@pytest.mark.parametrize("kwargs, field", [({"band": 0.0}, "band"), ({"prune_until": -1}, "prune_until"),
                                           ({"patience": 0}, "patience"), ({"after_prune": "keep"}, "after_prune"),
                                           ({"model": "vgg"}, "model")])
def test_bad_parameters_are_named(kwargs, field):
    with pytest.raises(ValueError, match=field):
        _algorithm(**kwargs)


def test_an_outlier_unit_is_pruned_and_the_schedule_counts_aggregations():
    algorithm = _algorithm(patience=3)
    state = algorithm.prune(_with_outlier(algorithm, algorithm.init(0), 5))
    assert state.architecture == (63,) and state.weights.numel() == 4810 - 75
    assert algorithm.schedule(state) == (1, 0) and state.prune_step == 4  # 1 * (3 + 1) + 0


def test_patience_stops_pruning_for_good():
    """Two prunes without a decrease with patience 2: an outlier afterwards is no longer cut."""
    algorithm = _algorithm(patience=2)
    state = algorithm.init(0)
    for expected in [(1, 1), (2, 2)]:
        state = algorithm.prune(_with_outlier(algorithm, state, None))
        assert algorithm.schedule(state) == expected and state.architecture == ()
    assert algorithm.pruning_stopped(state)
    state = algorithm.prune(_with_outlier(algorithm, state, 5))
    assert state.architecture == () and state.weights.numel() == 4810 and algorithm.schedule(state) == (3, 2)


def test_a_decrease_resets_the_patience():
    algorithm = _algorithm(patience=2)
    state = algorithm.prune(_with_outlier(algorithm, algorithm.init(0), None))
    assert algorithm.schedule(state) == (1, 1)
    state = algorithm.prune(_with_outlier(algorithm, state, 7))
    assert algorithm.schedule(state) == (2, 0) and state.architecture == (63,)


def test_no_pruning_after_prune_until():
    algorithm = _algorithm(prune_until=2)
    state = algorithm.init(0)
    for _ in range(2):
        state = algorithm.prune(_with_outlier(algorithm, state, 0))
    assert state.architecture == (62,)
    state = algorithm.prune(_with_outlier(algorithm, state, 0))
    assert state.architecture == (62,) and algorithm.schedule(state) == (3, 0)
    assert _algorithm(prune_until=0).prune(_with_outlier(algorithm, algorithm.init(0), 0)).architecture == ()


def test_reinit_restarts_the_smaller_network():
    algorithm = _algorithm(after_prune="reinit")
    state = algorithm.prune(_with_outlier(algorithm, algorithm.init(0), 5))
    assert state.architecture == (63,)
    assert torch.equal(state.weights, algorithm.functional_model_for((63,)).init_weights(derive_seed(3, 1)))


def test_task_and_demand_follow_the_architecture():
    algorithm = _algorithm(batch_size=16, local_steps=5)
    assert algorithm.task(0) == TaskConfig("train", 5, 16)
    state = ModelState(torch.zeros(2410), None, 4, (32,))
    config = algorithm.task(3, state)
    assert config == TaskConfig("train", 5, 16, architecture=(32,))
    small, full = algorithm.demand(config), algorithm.demand(algorithm.task(0))
    profile = profile_named_model("mlp_small", DIGITS, 10, architecture=(32,))
    assert small.peak_memory_bytes == cost.bp_peak_memory_bytes(profile, 16, "sgd")
    assert small.flops == 5 * cost.bp_step_flops(profile, 16)
    assert (small.bytes_down, small.bytes_up, full.bytes_down) == (2410 * 4, 2410 * 4, 4810 * 4)
    assert small.peak_memory_bytes < full.peak_memory_bytes and small.flops < full.flops


def test_stale_results_of_another_architecture_are_left_out():
    algorithm = _algorithm(prune_until=0)
    state = ModelState(torch.zeros(2410), None, 0, (32,))
    fresh = ClientResult("delta", 10, delta=torch.ones(2410))
    stale = ClientResult("delta", 10, delta=torch.full((4810,), 5.0))
    new = algorithm.aggregate(state, [stale, fresh], [1.0, 1.0])
    assert torch.equal(new.weights, torch.ones(2410)) and new.architecture == (32,)


def test_fit_and_the_batched_kernel_agree_on_a_pruned_model():
    algorithm = _algorithm(lr=0.1)
    fm = algorithm.functional_model_for((20,))
    state = ModelState(fm.init_weights(1), None, 4, (20,))
    gen = torch.Generator().manual_seed(0)
    datas = [ClientData(torch.randn(30, *DIGITS, generator=gen), torch.randint(0, 10, (30,), generator=gen))
             for _ in range(3)]
    config = algorithm.task(1, state)
    reference = [algorithm.fit(state, config, d, s) for d, s in zip(datas, [4, 5, 6])]
    batched = batched_local_updates(algorithm, state, config, datas, [4, 5, 6])
    assert algorithm.batched_kernel(config).model is fm
    for ref, got in zip(reference, batched):
        assert got.delta.shape == (fm.size,)
        assert torch.allclose(got.delta, ref.delta, atol=1e-5)


@pytest.mark.slow  # 1.5 to 3 s on 2 busy cores
def test_learns_and_shrinks_on_digits():
    """8 IID clients of scikit-learn's digits, all in every round, 8 rounds of 10 SGD steps of 16. Measured
    (torch 2.13, one thread): accuracy 0.844 (0.039 at the start), P 4810 -> 4210 (hidden units 64 -> 56)."""
    data = load_dataset("digits")
    algorithm = create_algorithm("autoprune", model="mlp_small", lr=0.05, local_steps=10, batch_size=16,
                                 input_shape=data.input_shape, num_classes=data.num_classes)
    x, y = torch.from_numpy(np.array(data.train_x)), torch.from_numpy(np.array(data.train_y))
    clients = [ClientData(x[i::8], y[i::8]) for i in range(8)]
    state = algorithm.init(0)
    for round_index in range(8):
        config = algorithm.task(round_index, state)
        results = [algorithm.fit(state, algorithm.fit_config(config, len(c)), c, derive_seed(round_index, k))
                   for k, c in enumerate(clients)]
        state = algorithm.aggregate(state, results, [1.0] * len(results))
    metrics = algorithm.evaluate(state, torch.from_numpy(np.array(data.test_x)),
                                 torch.from_numpy(np.array(data.test_y)))
    assert metrics["accuracy"] >= 0.75
    assert metrics["params"] == state.weights.numel() <= 4400
    assert 50 <= state.architecture[0] <= 60
