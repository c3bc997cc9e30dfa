"""What a local epoch is: ``one_pass`` (the default: one pass over the client's samples, the last batch
partial) and ``full_batches`` (every step a full batch), with exact expectations for a client of 61
samples at batch 32; their cost, and the sequential and batched paths on them."""

import pytest
import torch
import torch.nn.functional as F

from algorithms.base import TaskConfig
from algorithms.batched import batched_local_updates
from algorithms.fedavg import FedAvg
from algorithms.fedmef import FedMef
from algorithms.fedprox import FedProx
from algorithms.local import EPOCHS, ClientData, batch_plan, derive_seed, epoch_steps, plan_samples
from algorithms.registry import PARAMETERS, check_params, create_algorithm
from algorithms.zo import ZerothOrder

DIGITS = (1, 8, 8)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see tests/algorithms/conftest.py


def _data(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ClientData(torch.randn(n, *DIGITS, generator=g), torch.randint(0, 10, (n,), generator=g))


def test_one_pass_of_61_samples_at_batch_32_trains_32_then_29_and_sees_every_sample_once():
    plan = batch_plan(61, 32, 2, seed=5, partial=True)
    assert [len(b) for b in plan] == [32, 29]
    assert sorted(torch.cat(plan).tolist()) == list(range(61))
    two = batch_plan(61, 32, 4, seed=5, partial=True)
    assert [len(b) for b in two] == [32, 29, 32, 29]
    assert all(torch.equal(a, b) for a, b in zip(two, plan))  # the first pass is the same
    assert sorted(torch.cat(two[2:]).tolist()) == list(range(61))  # the second pass: a fresh permutation
    assert epoch_steps(61, 32, 1.0, True) == 2 and plan_samples(61, 32, 2, True) == 61
    assert epoch_steps(61, 32, 2.0, True) == 4 and plan_samples(61, 32, 4, True) == 122


def test_full_batches_of_61_samples_train_64_and_leave_29_of_the_first_permutation_unseen():
    plan = batch_plan(61, 32, 2, seed=5)
    assert [len(b) for b in plan] == [32, 32]
    assert torch.equal(plan[0], batch_plan(61, 32, 2, seed=5, partial=True)[0])
    assert len(set(torch.cat(plan).tolist())) < 61  # the second batch comes from a new permutation
    assert epoch_steps(61, 32, 1.0, False) == 2 and plan_samples(61, 32, 2, False) == 64
    assert epoch_steps(61, 32, 2.0, False) == 4 and plan_samples(61, 32, 4, False) == 128


@pytest.mark.parametrize("n, epochs, steps, one_pass, full", [
    (61, 1.5, 3, 93, 96),  # a fractional epoch rounds up to whole batches: 32 + 29, then 32
    (64, 1.0, 2, 64, 64),  # the batch divides n: both definitions are the same plan
    (20, 1.0, 1, 20, 20),  # fewer samples than a batch: one batch of all of them
    (33, 1.0, 2, 33, 64),  # 32 then 1
    (61, 0.25, 1, 32, 32),
])
def test_steps_and_samples_of_both_definitions(n, epochs, steps, one_pass, full):
    assert epoch_steps(n, 32, epochs, True) == steps == epoch_steps(n, 32, epochs, False)
    assert plan_samples(n, 32, steps, True) == one_pass == sum(map(len, batch_plan(n, 32, steps, 1, True)))
    assert plan_samples(n, 32, steps, False) == full == sum(map(len, batch_plan(n, 32, steps, 1, False)))
    if one_pass == full:
        assert all(torch.equal(a, b) for a, b in zip(batch_plan(n, 32, steps, 1, True),
                                                     batch_plan(n, 32, steps, 1, False)))


def test_one_pass_is_the_default_and_the_registry_checks_the_name():
    assert EPOCHS == ("one_pass", "full_batches")
    for name in ("fedavg", "fedprox", "zo", "fedfpzo", "fedmef", "autoprune"):
        assert PARAMETERS[name]["epoch"].choices == EPOCHS
        assert create_algorithm(name).epoch == "one_pass"
    with pytest.raises(ValueError, match="epoch must be one of one_pass, full_batches"):
        check_params("fedavg", {"epoch": "drop_last"})
    with pytest.raises(ValueError, match="epoch"):
        FedAvg(epoch="all")


def test_fit_config_counts_the_samples_of_a_partial_last_batch_and_the_demand_charges_them():
    one, full = (FedAvg(model="mlp_small", local_epochs=1.0, epoch=e, input_shape=DIGITS) for e in EPOCHS)
    nominal = TaskConfig("train", 10, 32)
    assert one.fit_config(nominal, 61) == TaskConfig("train", 2, 32, samples=61)
    assert full.fit_config(nominal, 61) == TaskConfig("train", 2, 32)
    assert one.fit_config(nominal, 64) == full.fit_config(nominal, 64) == TaskConfig("train", 2, 32)
    assert one.fit_config(nominal, 20) == TaskConfig("train", 1, 20)
    assert FedAvg(model="mlp_small", epoch="one_pass", input_shape=DIGITS).fit_config(nominal, 61) is nominal
    partial, whole = one.demand(TaskConfig("train", 2, 32, samples=61)), one.demand(TaskConfig("train", 2, 32))
    assert partial.flops * 64 == whole.flops * 61  # backprop FLOPs are linear in the samples
    assert partial.peak_memory_bytes == whole.peak_memory_bytes  # the largest batch sets the memory
    per_sample = one.demand(TaskConfig("train", 1, 1)).flops
    for algorithm, mode in ((FedProx(model="mlp_small", input_shape=DIGITS), ""),
                            (FedMef(model="mlp_small", input_shape=DIGITS), "plain")):
        unseen = (algorithm.demand(TaskConfig("train", 2, 32, mode)).flops
                  - algorithm.demand(TaskConfig("train", 2, 32, mode, samples=61)).flops)
        assert unseen == 3 * per_sample  # the 3 samples a full last batch would add, nothing per step
    zo = ZerothOrder(model="mlp_small", queries=3, input_shape=DIGITS)
    unseen = zo.demand(TaskConfig("train", 2, 32)).flops - zo.demand(TaskConfig("train", 2, 32, samples=61)).flops
    assert unseen == 3 * 2 * 3 * zo.profile.forward_flops_per_sample  # two forwards per query per sample


@pytest.mark.parametrize("args", [(2, 32, "", (), 65), (2, 32, "", (), 1), (2, 32, "", (), -1)])
def test_task_config_samples_lie_between_the_steps_and_steps_times_batch(args):
    with pytest.raises(ValueError, match="samples"):
        TaskConfig("train", *args)


def test_the_reference_trains_one_pass_as_torch_optim_does_on_those_batches():
    algorithm = FedAvg(model="mlp_small", local_epochs=1.0, lr=0.1, input_shape=DIGITS)
    data, seed = _data(61), 7
    state = algorithm.init(0)
    config = algorithm.fit_config(algorithm.task(0), len(data))
    ours = algorithm.fit(state, config, data, seed)
    module = algorithm.functional_model.module
    module.requires_grad_(True)
    torch.nn.utils.vector_to_parameters(state.weights.clone(), module.parameters())
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    sizes = []
    for idx in batch_plan(61, 32, 2, seed, partial=True):
        sizes.append(len(idx))
        opt.zero_grad()
        F.cross_entropy(module(data.x[idx]), data.y[idx]).backward()
        opt.step()
    theirs = torch.nn.utils.parameters_to_vector(module.parameters()).detach() - state.weights
    module.requires_grad_(False)
    assert sizes == [32, 29]
    torch.testing.assert_close(ours.delta, theirs, rtol=1e-5, atol=1e-6)
    full = FedAvg(model="mlp_small", local_epochs=1.0, lr=0.1, epoch="full_batches", input_shape=DIGITS)
    assert not torch.equal(full.fit(state, config, data, seed).delta, ours.delta)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_the_batched_kernel_pads_a_partial_batch_and_matches_the_reference(optimizer):
    """Clients of 61, 45, 33 (32 + 1) and 64 samples, two epochs of 4 steps each: one unit, padded steps."""
    algorithm = FedAvg(model="mlp_small", optimizer=optimizer, local_epochs=2.0, input_shape=DIGITS)
    datas = [_data(n, seed=k) for k, n in enumerate((61, 45, 33, 64))]
    configs = [algorithm.fit_config(algorithm.task(0), len(d)) for d in datas]
    assert [c.local_steps for c in configs] == [4] * 4 and [c.samples for c in configs] == [122, 90, 66, 0]
    state, seeds = algorithm.init(3), [derive_seed(11, k) for k in range(4)]
    reference = [algorithm.fit(state, c, d, s) for c, d, s in zip(configs, datas, seeds)]
    batched = batched_local_updates(algorithm, state, configs[0], datas, seeds)
    for ref, got in zip(reference, batched):
        assert float((ref.delta - got.delta).abs().max() / ref.delta.norm()) <= 1e-6  # MLP: a few ulps at most
        assert got.train_loss == pytest.approx(ref.train_loss, rel=1e-6)
        assert got.num_samples == ref.num_samples


def test_the_zo_kernel_leaves_a_partial_epoch_to_fit():
    algorithm = ZerothOrder(model="mlp_small", queries=2, local_epochs=1.0, input_shape=DIGITS)
    datas = [_data(61), _data(64, seed=1)]
    config = algorithm.fit_config(algorithm.task(0), 61)
    kernel = algorithm.batched_kernel(config)
    assert kernel.partial
    state, seeds = algorithm.init(3), [derive_seed(2, k) for k in range(2)]
    results = kernel.run(state, config, datas, seeds)
    assert results[0] is None and results[1] is not None
    batched = batched_local_updates(algorithm, state, config, datas, seeds)
    assert torch.equal(batched[0].delta, algorithm.fit(state, config, datas[0], seeds[0]).delta)
    assert torch.equal(batched[1].delta, algorithm.fit(state, config, datas[1], seeds[1]).delta)  # MLP: exact
