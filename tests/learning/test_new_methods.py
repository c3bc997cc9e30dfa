"""FedMef and structured pruning in the event loop: the executors agree, a run resumes through a changing
architecture, and the tasks carry what a device needs (mode, architecture) with a demand that follows it."""

from __future__ import annotations

import pytest
import torch

from fleet.app.build import build_simulation
from fleet.app.scenario import parse_scenario
from tests.learning.test_learning import _tiny

FEDMEF = {"name": "fedmef", "params": {"model": "mlp_small", "batch_size": 16, "local_steps": 3, "density": 0.3,
                                       "adjust_every": 2, "adjust_until": 4, "lr": 0.1}}
AUTOPRUNE = {"name": "autoprune", "params": {"model": "mlp_small", "batch_size": 16, "local_steps": 3, "band": 1.5,
                                             "lr": 0.1}}
ROUNDS = 5


def _run(data: dict, out=None):
    return build_simulation(parse_scenario(data), out).run()


def _weights(sim) -> torch.Tensor:
    return sim.learning.state.weights


@pytest.mark.parametrize("algorithm", [FEDMEF, AUTOPRUNE], ids=["fedmef", "autoprune"])
def test_sequential_and_vectorized_agree(algorithm):
    a = _run(_tiny(algorithm=algorithm, **{"coordinator.rounds": ROUNDS}))
    b = _run(_tiny(algorithm=algorithm, **{"coordinator.rounds": ROUNDS, "executor.backend": "vectorized"}))
    assert a.learning.version == b.learning.version == ROUNDS
    assert a.kernel.recorder.sha256() == b.kernel.recorder.sha256()
    assert a.learning.state.architecture == b.learning.state.architecture
    torch.testing.assert_close(_weights(a), _weights(b), rtol=0, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", [FEDMEF, AUTOPRUNE], ids=["fedmef", "autoprune"])
def test_process_pool_gives_bit_identical_weights(algorithm):
    a = _run(_tiny(algorithm=algorithm, **{"coordinator.rounds": ROUNDS}))
    b = _run(_tiny(algorithm=algorithm, **{"coordinator.rounds": ROUNDS, "executor.backend": "process_pool",
                                           "executor.workers": 2}))
    assert torch.equal(_weights(a), _weights(b)) and a.kernel.recorder.sha256() == b.kernel.recorder.sha256()


@pytest.mark.parametrize("algorithm", [FEDMEF, AUTOPRUNE], ids=["fedmef", "autoprune"])
def test_a_crashed_run_resumes_to_the_same_result(algorithm, tmp_path):
    scenario = _tiny(algorithm=algorithm, **{"coordinator.rounds": ROUNDS})
    whole = _run(scenario, tmp_path / "a")
    crashed = tmp_path / "b"
    _run(scenario, crashed)
    for version in (ROUNDS - 1, ROUNDS):  # as if it died before the last two aggregations
        (crashed / f"version_{version:06d}.ckpt").unlink()
    resumed = _run(scenario, crashed)
    assert resumed.learning.versions_resumed == ROUNDS - 2
    assert torch.equal(_weights(resumed), _weights(whole))
    assert resumed.learning.state.architecture == whole.learning.state.architecture
    assert resumed.kernel.recorder.sha256() == whole.kernel.recorder.sha256()


def test_structured_pruning_shrinks_the_model_and_its_demand_during_the_run():
    sim = _run(_tiny(algorithm=AUTOPRUNE, **{"coordinator.rounds": ROUNDS}))
    algorithm, state = sim.learning.algorithm, sim.learning.state
    assert state.architecture and state.architecture[0] < 64  # mlp_small's 64 hidden units, some pruned
    assert state.weights.numel() == algorithm.functional_model_for(state.architecture).size
    first, last = algorithm.task(0), algorithm.task(ROUNDS, state)
    assert last.architecture == state.architecture
    assert algorithm.demand(last).peak_memory_bytes < algorithm.demand(first).peak_memory_bytes
    assert sim.learning.evaluations[-1].accuracy > 0.45  # ten classes: chance is 0.1; measured 0.586


def test_fedmef_rounds_follow_the_schedule_and_keep_the_density():
    sim = _run(_tiny(algorithm=FEDMEF, **{"coordinator.rounds": ROUNDS}))
    algorithm, state = sim.learning.algorithm, sim.learning.state
    assert state.prune_step == ROUNDS  # FedMef counts aggregated rounds
    modes = [algorithm.task(t).mode for t in range(ROUNDS + 1)]
    assert modes == ["mask", "plain", "adjust", "mask", "adjust", "mask"]
    prunable = algorithm.functional_model.layout.prunable_mask
    kept = int(state.mask[prunable].sum())
    assert kept == int(algorithm.init(0).mask[prunable].sum())  # prune-and-grow keeps the count
    assert torch.all(state.weights[~state.mask] == 0)
