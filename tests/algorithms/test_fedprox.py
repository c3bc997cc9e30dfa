"""FedProx: the proximal term against autograd, mu = 0 as FedAvg bit for bit, its demand by hand.

The cnn's figures are test_demand's: P = 20490, A_train = 166208 bytes per sample, F + F_bwd = 5964672
FLOPs per sample. mlp_small on 28x28 inputs: P = 50890, its largest tensor the first weight (50176
floats), A_train = 3904 bytes per sample.
"""

import pytest
import torch
import torch.nn.functional as F

from algorithms.base import ResourceDemand, TaskConfig, UpdateShape
from algorithms.fedavg import FedAvg
from algorithms.fedprox import FedProx, ProximalStep
from algorithms.local import ClientData, batch_plan
from algorithms.registry import check_params

DIGITS = (1, 8, 8)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _data(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ClientData(torch.randn(n, *DIGITS, generator=g), torch.randint(0, 10, (n,), generator=g))


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_mu_zero_is_fedavg_bit_for_bit(optimizer):
    fedavg = FedAvg(model="mlp_small", optimizer=optimizer, lr=0.1, input_shape=DIGITS)
    fedprox = FedProx(model="mlp_small", optimizer=optimizer, lr=0.1, mu=0.0, input_shape=DIGITS)
    state, config = fedavg.init(5), TaskConfig("train", 6, 16)
    assert torch.equal(state.weights, fedprox.init(5).weights)
    datas = [_data(50, 1), _data(12, 2)]
    ours = [fedprox.fit(state, config, d, s) for d, s in zip(datas, [3, 4])]
    theirs = [fedavg.fit(state, config, d, s) for d, s in zip(datas, [3, 4])]
    assert all(torch.equal(a.delta, b.delta) and a.train_loss == b.train_loss for a, b in zip(ours, theirs))
    assert torch.equal(fedprox.aggregate(state, ours, [1.0, 0.5]).weights,
                       fedavg.aggregate(state, theirs, [1.0, 0.5]).weights)


def test_the_proximal_term_is_the_gradient_of_mu_half_the_squared_distance():
    """Local SGD on L(w) + (mu/2) ||w - w_global||^2, computed by autograd on the module with torch.optim,
    equals FedProx's update (the term vanishes at the first step: three steps let it act)."""
    mu, lr, steps = 2.0, 0.05, 3
    algorithm = FedProx(model="mlp_small", lr=lr, mu=mu, input_shape=DIGITS)
    state, data = algorithm.init(0), _data(40)
    ours = algorithm.fit(state, TaskConfig("train", steps, 8), data, 2)
    module = algorithm.functional_model.module
    module.requires_grad_(True)
    torch.nn.utils.vector_to_parameters(state.weights.clone(), module.parameters())
    anchors = [p.detach().clone() for p in module.parameters()]
    opt = torch.optim.SGD(module.parameters(), lr=lr)
    for idx in batch_plan(len(data), 8, steps, 2):
        opt.zero_grad()
        proximal = sum((p - a).square().sum() for p, a in zip(module.parameters(), anchors))
        (F.cross_entropy(module(data.x[idx]), data.y[idx]) + mu / 2 * proximal).backward()
        opt.step()
    theirs = torch.nn.utils.parameters_to_vector(module.parameters()).detach() - state.weights
    module.requires_grad_(False)
    torch.testing.assert_close(ours.delta, theirs, rtol=1e-5, atol=1e-7)
    plain = FedAvg(model="mlp_small", lr=lr, input_shape=DIGITS).fit(state, TaskConfig("train", steps, 8), data, 2)
    assert not torch.equal(ours.delta, plain.delta)


def test_a_larger_mu_keeps_the_client_closer_to_the_global_model():
    state, data, config = FedAvg(model="mlp_small", input_shape=DIGITS).init(0), _data(60), TaskConfig("train", 20, 8)
    norms = [FedProx(model="mlp_small", lr=0.1, mu=mu, input_shape=DIGITS).fit(state, config, data, 1).delta.norm()
             for mu in (0.0, 1.0, 5.0)]
    assert norms[0] > norms[1] > norms[2]


def test_demand_adds_the_anchor_and_the_terms_flops():
    config = TaskConfig("train", 10, 32)
    assert FedProx(mu=0.3).demand(config) == ResourceDemand(
        peak_memory_bytes=5564536,  # P*4*3 = 245880 (weights, gradients, anchor), + 32 * A_train = 5318656
        flops=1909309740,  # FedAvg's 10 * 32 * 5964672 = 1908695040, + 10 * 3 * P = 614700
        bytes_down=81960,  # P * 4, as FedAvg
        bytes_up=81960,
    )
    assert FedProx(optimizer="adam").demand(config).peak_memory_bytes == 5564536 + 2 * 81960


def test_demand_charges_the_terms_temporary_when_it_beats_the_activations():
    """mlp_small at batch 8: 8 * 3904 bytes of activations, but w - w_global of the first weight tensor
    is 50176 * 4 = 200704 bytes (docs/memory.md measures this case at -0.2 %)."""
    demand = FedProx(model="mlp_small").demand(TaskConfig("train", 1, 8))
    assert demand.peak_memory_bytes == 3 * 50890 * 4 + 200704


def test_fedprox_is_a_train_only_delta_algorithm():
    algorithm = FedProx(model="mlp_small", input_shape=DIGITS)
    config = algorithm.task(3)
    assert config == TaskConfig("train", 10, 32)
    assert algorithm.update_shape(config) == UpdateShape("delta")
    assert algorithm.fit(algorithm.init(0), config, _data(20), 1).kind == "delta"
    with pytest.raises(ValueError, match="phase"):
        algorithm.demand(TaskConfig("prune", 1, 32))


@pytest.mark.parametrize("mu", [-0.1, float("inf"), True, "0.1"])
def test_bad_mu_is_refused(mu):
    with pytest.raises(ValueError, match="mu"):
        FedProx(mu=mu)
    with pytest.raises(ValueError, match="mu"):
        ProximalStep("sgd", 0.1, mu)


def test_learning_mode_refuses_a_pruned_fedprox():
    check_params("fedprox", {"mu": 0.1, "density": 0.5})  # timing mode costs it
    with pytest.raises(ValueError, match="density"):
        check_params("fedprox", {"density": 0.5}, learning=True)
    with pytest.raises(ValueError, match="density 1"):
        FedProx(density=0.5, model="mlp_small", input_shape=DIGITS).init(0)
