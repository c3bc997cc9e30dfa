"""The reference workload W (benchmarks/workload_w.yaml) stays what docs/benchmarks.md says it is, and the
learning benchmark's plain torch loop replays exactly the simulator's updates."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fleet.app.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]
WORKLOAD = ROOT / "benchmarks" / "workload_w.yaml"
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").is_file()


def test_w_is_the_documented_workload():
    w = load_scenario(WORKLOAD)
    assert (w.mode, w.seed, w.fleet.devices, w.coordinator.rounds, w.coordinator.clients_per_round) == (
        "learning", 1, 1000, 10, 100)
    assert (w.data.dataset, w.data.partition, w.data.alpha, w.data.min_samples) == ("fashion_mnist", "dirichlet",
                                                                                    0.5, 8)
    assert w.algorithm.name == "fedavg" and w.algorithm.params == {
        "model": "cnn", "batch_size": 32, "local_steps": 1, "local_epochs": 1.0, "epoch": "one_pass",
        "optimizer": "sgd", "lr": 0.05}
    assert (w.coordinator.over_selection, w.coordinator.deadline_s, w.coordinator.quorum) == (0.0, None, 1.0)
    assert w.evaluation.every_round is False and w.evaluation.interval_s >= 1e9
    assert [(m.device_class, m.availability.diurnal, m.availability.failure) for m in w.fleet.mix] == [
        ("jetson_orin_nano", None, None)]
    assert w.devices.slowdown_sigma == 0.0


@pytest.mark.slow  # two short runs of W (2 rounds of 5 clients): ~20 s on 2 cores
@pytest.mark.skipif(not FASHION_MNIST, reason="Debian's dataset-fashion-mnist is not installed")
def test_the_plain_loop_replays_the_simulators_updates(tmp_path):
    bench = [sys.executable, str(ROOT / "benchmarks" / "learning.py")]
    env = {**os.environ, "BENCH_LAUNCH": repr(time.time())}
    sets = ["--set", "coordinator.rounds=2", "--set", "coordinator.clients_per_round=5"]
    subprocess.run([*bench, "--child", "fleet", "--out", str(tmp_path / "fleet"), "--backend", "sequential", *sets],
                   cwd=ROOT, env=env, check=True, capture_output=True)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from learning import schedule_from
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    schedule_from(tmp_path / "fleet", tmp_path / "schedule.json")
    plan = json.loads((tmp_path / "schedule.json").read_text())
    assert [len(r) for r in plan["rounds"]] == [5, 5]
    (tmp_path / "plain").mkdir()
    subprocess.run([*bench, "--child", "plain", "--out", str(tmp_path / "plain"), "--schedule",
                    str(tmp_path / "schedule.json"), "--threads", "1"], cwd=ROOT, env=env, check=True,
                   capture_output=True)
    fleet = json.loads((tmp_path / "fleet" / "summary.json").read_text())
    plain = json.loads((tmp_path / "plain" / "summary.json").read_text())
    assert plain["updates_accepted"] == fleet["updates_accepted"] == 10
    # the same updates, computed by nn.Module and torch.optim instead of the flat-vector reference: the same
    # model up to float rounding
    assert plain["final_loss"] == pytest.approx(fleet["final_loss"], rel=1e-4)
    assert abs(plain["final_accuracy"] - fleet["final_accuracy"]) <= 0.001
