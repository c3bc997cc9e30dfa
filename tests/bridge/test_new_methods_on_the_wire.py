"""What a real agent does with FedMef's and structured pruning's tasks: it reads the mode and the
architecture off the task frame, rebuilds the (smaller) network, runs the update with the project's own
algorithm, and its answer passes the hub's checks against the task's own model size."""

from __future__ import annotations

import numpy as np
import torch

from algorithms.datasets import load_dataset
from algorithms.local import ClientData, ModelState
from algorithms.registry import create_algorithm
from fleet.bridge import payloads
from fleet.bridge.protocol import decode, encode
from fleet.bridge.runner import run_task
from fleet.core.messages import Task


def _digits(n: int = 48) -> tuple[ClientData, dict]:
    ds = load_dataset("digits")
    shape = {"input_shape": tuple(ds.train_x.shape[1:]), "num_classes": ds.num_classes}
    return ClientData(torch.as_tensor(np.array(ds.train_x[:n])), torch.as_tensor(np.array(ds.train_y[:n]))), shape


def _round_trip(algorithm, state: ModelState, data: ClientData, round_index: int):
    config = algorithm.task(round_index, state)
    task = Task(7, 0, round_index, round_index, config.phase, config.local_steps, config.batch_size, 10**6,
                10**6, 100, None, 100, config.mode, config.architecture)
    kind = algorithm.update_shape(config).kind
    msg = decode(encode("task", payloads.task_body(task, 11, state, update_kind=kind)))
    answer, body = run_task(algorithm, data, dict(msg.body))
    assert answer == "update", body
    update = decode(encode("update", body))
    return config, payloads.result_from_update(update, n_params=state.weights.numel(), update_kind=kind)


def test_an_agent_trains_the_architecture_the_task_names():
    data, shape = _digits()
    algorithm = create_algorithm("autoprune", model="mlp_small", batch_size=16, local_steps=2, band=0.5, **shape)
    state = algorithm.init(3)
    for _ in range(2):  # two aggregations, each followed by a prune
        result = algorithm.fit(state, algorithm.task(0, state), data, 1)
        state = algorithm.aggregate(state, [result], [1.0])
    assert state.architecture and state.architecture[0] < 64
    config, result = _round_trip(algorithm, state, data, 2)
    assert config.architecture == state.architecture
    assert result.delta.numel() == state.weights.numel() == algorithm.functional_model_for(state.architecture).size
    expected = algorithm.fit(state, config, data, 11)
    assert torch.equal(result.delta, expected.delta)  # the agent computed what the simulator would


def test_an_agent_answers_an_adjustment_round_with_a_delta_and_a_gradient():
    data, shape = _digits()
    algorithm = create_algorithm("fedmef", model="mlp_small", batch_size=16, local_steps=2, density=0.3,
                                 adjust_every=1, adjust_until=5, **shape)
    state = algorithm.init(3)
    state = ModelState(state.weights, state.mask, 1)  # round 1: an adjustment round
    config, result = _round_trip(algorithm, state, data, 1)
    assert config.mode == "adjust" and result.kind == "delta_grad"
    assert result.gradient.numel() == result.delta.numel() == state.weights.numel()
    assert torch.any(result.gradient != 0)
