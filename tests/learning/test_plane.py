"""The learning plane against the algorithm interface: it needs a learner, asks the cost side through the
state, and runs a learner's batched kernel or its ``fit`` alike."""

import numpy as np
import pytest
import torch

from algorithms.base import CostModel, ResourceDemand, TaskConfig
from algorithms.fedavg import FedAvg
from algorithms.fedprox import FedProx
from algorithms.local import ClientData, derive_seed
from fleet.learning.backends import Job, SequentialBackend, VectorizedBackend
from fleet.learning.plane import LearningPlane

DIGITS = (1, 8, 8)


class _CostOnly(CostModel):
    name = "cost_only"

    def task(self, round_index, state=None):
        return TaskConfig("train", 1, 1)

    def demand(self, config):
        return ResourceDemand(1, 1, 0, 0)


def _plane(algorithm, backend=None, sizes=(30, 12, 40)):
    g = torch.Generator().manual_seed(0)
    n = sum(sizes)
    x, y = torch.randn(n, *DIGITS, generator=g), torch.randint(0, 10, (n,), generator=g)
    cuts = np.cumsum((0,) + tuple(sizes))
    parts = [np.arange(a, b) for a, b in zip(cuts[:-1], cuts[1:])]
    return LearningPlane(algorithm, backend or SequentialBackend(), 7, x, y, x[:20], y[:20], parts)


def test_a_cost_model_without_a_learning_side_is_refused():
    with pytest.raises(ValueError, match="mode: timing"):
        _plane(_CostOnly())


@pytest.mark.parametrize("epoch, samples", [("one_pass", (30, 0, 40)), ("full_batches", (0, 0, 0))])
def test_the_plan_is_the_states_task_fitted_to_the_clients_data(epoch, samples):
    algorithm = FedAvg(model="mlp_small", batch_size=16, local_steps=3, local_epochs=1.0, epoch=epoch,
                       input_shape=DIGITS)
    plane = _plane(algorithm)  # clients of 30, 12 and 40 samples: one pass is 16 + 14, 12, 16 + 16 + 8
    assert [plane.plan(0, d)[0] for d in range(3)] == [
        TaskConfig("train", 2, 16, samples=samples[0]), TaskConfig("train", 1, 12),
        TaskConfig("train", 3, 16, samples=samples[2])]
    assert plane.plan(0, 1)[1] == algorithm.demand(TaskConfig("train", 1, 12))
    assert plane.plan(0, 0)[1].flops == algorithm.demand(TaskConfig("train", 1, samples[0] or 32)).flops


@pytest.mark.parametrize("algorithm", [
    FedAvg(model="mlp_small", optimizer="adam", input_shape=DIGITS),
    FedProx(model="mlp_small", optimizer="momentum", mu=0.2, input_shape=DIGITS)])
def test_the_vectorized_backend_gives_the_sequential_bits_on_an_mlp(algorithm):
    plane = _plane(algorithm)
    jobs = [Job(k, k, 0, 0, plane.plan(0, k)[0], derive_seed(9, k)) for k in range(3)]
    want = SequentialBackend().run(algorithm, plane._states, jobs, plane._data)
    got = VectorizedBackend().run(algorithm, plane._states, jobs, plane._data)
    assert all(torch.equal(a.delta, b.delta) for a, b in zip(want, got))
    assert all(isinstance(plane._data(k), ClientData) for k in range(3))
