"""docs/protocol.md is enough to write an agent: ``doc_agent.py`` (numpy, pyzmq, msgpack; written from the page
alone, no project import) joins a real hub next to simulated devices, and the project's own local update,
run on the same weights and data, gives the delta it sent. If the page's model, data or wire description
drifts from the code, the hub rejects the agent's frames or the deltas differ."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fleet.app.build import build_simulation
from fleet.app.scenario import parse_scenario
from tests.helpers import free_port

ROOT = Path(__file__).resolve().parents[2]



@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["momentum"])
def test_an_agent_written_from_the_protocol_page_trains_like_the_project(tmp_path, optimizer):
    from algorithms.base import TaskConfig
    from algorithms.datasets import DATASETS, load_dataset
    from algorithms.local import ClientData, ModelState
    from algorithms.registry import create_algorithm

    port = free_port()
    params = {"model": "mlp_small", "batch_size": 4096, "local_steps": 2, "lr": 0.1, "optimizer": optimizer}
    scenario = parse_scenario({
        "name": "doc-agent", "seed": 5, "mode": "learning",
        "fleet": {"devices": 3, "mix": [{"device_class": "rpi4_4gb", "link_class": "wifi", "fraction": 1.0}]},
        "data": {"dataset": "digits", "partition": "iid"},
        "algorithm": {"name": "fedavg", "params": params},
        "coordinator": {"mode": "sync", "rounds": 2, "clients_per_round": 4, "over_selection": 0.0, "quorum": 0.5},
        "evaluation": {"interval_s": 1.0},
        "executor": {"backend": "sequential"},
        "bridge": {"bind": f"tcp://127.0.0.1:{port}", "expect_devices": 1, "wait_s": 60, "allow_plain": True},
    })
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    agent = subprocess.Popen([sys.executable, str(ROOT / "tests" / "bridge" / "doc_agent.py"),
                              f"tcp://127.0.0.1:{port}", "doc-a", str(tmp_path)],
                             cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        sim = build_simulation(scenario).run()
        assert agent.wait(timeout=60) == 0  # the hub said bye
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(timeout=10)
    assert sim.stopped_by == "completed"
    assert sum(sim.bridge.rejected.values()) == 0
    assert sim.bridge.real_updates_accepted == 2  # one per round
    (device,) = sim.bridge.real
    partition = np.load(tmp_path / "partition.npy")
    assert np.array_equal(partition, np.asarray(sim.learning.partitions[device]))
    spec = DATASETS["digits"]
    algorithm = create_algorithm("fedavg", **params, input_shape=spec.input_shape, num_classes=spec.num_classes)
    dataset = load_dataset("digits")
    data = ClientData(torch.from_numpy(np.array(dataset.train_x[partition])),
                      torch.from_numpy(np.array(dataset.train_y[partition])))
    records = sorted(tmp_path.glob("task-*.npz"))
    assert len(records) == 2
    for record in records:
        got = np.load(record)
        want = algorithm.fit(ModelState(torch.from_numpy(got["weights"])), TaskConfig("train", 2, 4096),
                                      data, seed=0)  # a full batch: the seed does not matter
        np.testing.assert_allclose(got["delta"], want.delta.numpy(), rtol=1e-4, atol=1e-6)
        assert float(got["loss"]) == pytest.approx(want.train_loss, rel=1e-5)
