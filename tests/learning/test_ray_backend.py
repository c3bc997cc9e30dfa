"""The Ray backend: the sequential bits and event log, one shared copy of the data on warm workers, a worker
killed mid-run retried to the same result, and one-line errors when Ray is missing or a cluster is silent.

Ray starts once for the module (2 CPUs, loopback); the backends built here join that session. The tests that
need no Ray (its absence, the scenario key) run without it."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from algorithms.datasets import load_dataset
from algorithms.local import derive_seed
from algorithms.partition import partition
from algorithms.registry import create_algorithm
from fleet.app.build import build_simulation
from fleet.app.run import main
from fleet.app.scenario import ScenarioError, parse_scenario
from fleet.learning.backends import (
    BackendUnavailable,
    ClientDataSource,
    Job,
    SequentialBackend,
    client_data,
    make_backend,
)
from tests.learning.test_learning import _tiny

ROOT = Path(__file__).resolve().parents[2]
ADAM = {"name": "fedavg", "params": {"model": "mlp_small", "batch_size": 16, "local_steps": 3, "optimizer": "adam"}}
ZO_SEEDS = {"name": "zo", "params": {"model": "mlp_small", "batch_size": 16, "local_steps": 2, "queries": 3,
                                     "uplink": "seeds"}}


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    from fleet.learning.ray_backend import connect

    started = connect("local", num_cpus=2)  # this machine, whatever RAY_ADDRESS says
    yield ray
    if started:
        ray.shutdown()


def _run(data: dict):
    return build_simulation(parse_scenario(data)).run()


def _same(a, b) -> None:
    assert a.learning.version == b.learning.version > 0
    assert torch.equal(a.learning.state.weights, b.learning.state.weights)
    assert a.kernel.recorder.sha256() == b.kernel.recorder.sha256()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _killing(ray, doomed, times: int):
    """A ``RayBackend._submit`` that SIGKILLs the worker (as the OOM killer would) right after a chunk with a job
    for which ``doomed(job)`` holds is queued on it, the first ``times`` times; the dead worker's other jobs die
    with it."""
    from fleet.learning.ray_backend import RayBackend

    submit, kills = RayBackend._submit, []

    def killing_submit(self, slot, state_ref, jobs):
        if len(kills) >= times or not any([doomed(job) for job in jobs]):  # a list: doomed sees every job
            return submit(self, slot, state_ref, jobs)
        pid = ray.get(self._workers[slot].info.remote())["pid"]  # waits for the jobs queued before it
        ref = submit(self, slot, state_ref, jobs)
        os.kill(pid, signal.SIGKILL)
        kills.append(pid)
        return ref

    return killing_submit


# --- Ray itself ------------------------------------------------------------------------------------------
@pytest.mark.slow  # starts Ray: ~10 s on 2 cores
def test_ray_started_here_stays_on_loopback(ray_session):
    ray = ray_session
    assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")
    assert {n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]} == {"127.0.0.1"}
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "0"


@pytest.mark.slow  # four runs on Ray: ~14 s on 2 cores
@pytest.mark.parametrize("algorithm", [ADAM, ZO_SEEDS], ids=["fedavg-adam", "zo-seeds"])
def test_ray_gives_the_sequential_bits_and_event_log(ray_session, algorithm):
    """process_pool gives the sequential bits too (test_learning.py), so all three agree."""
    sequential = _run(_tiny(algorithm=algorithm))
    on_ray = _run(_tiny(algorithm=algorithm, **{"executor.backend": "ray", "executor.workers": 2}))
    _same(sequential, on_ray)
    assert on_ray.learning.backend.retries == 0
    assert ray_session.is_initialized()  # the backend joined the module's Ray and left it running


@pytest.mark.slow  # two runs and a replacement worker: ~7 s on 2 cores
def test_a_worker_killed_mid_run_leaves_the_result_unchanged(ray_session, monkeypatch):
    """FedBuff: jobs from several model versions. The worker holding the 5th job sent is SIGKILLed; its jobs rerun on
    the other worker or its replacement, and the run ends as the sequential one, every update aggregated once."""
    from fleet.learning.ray_backend import RayBackend

    sent = itertools.count(1)
    monkeypatch.setattr(RayBackend, "_submit", _killing(ray_session, lambda job: next(sent) == 5, times=1))
    over = {"coordinator.mode": "fedbuff", "coordinator.concurrency": 4, "coordinator.buffer_size": 2,
            "coordinator.rounds": 4}
    sequential = _run(_tiny(**over))
    on_ray = _run(_tiny(**over, **{"executor.backend": "ray"}))
    _same(sequential, on_ray)
    assert on_ray.learning.backend.replaced == 1 and on_ray.learning.backend.retries >= 1


# --- the backend on its own --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_jobs():
    """Six digits clients, jobs from two global versions, and their data as the plane gives it."""
    params = {"model": "mlp_small", "batch_size": 16, "local_steps": 3, "input_shape": (1, 8, 8), "num_classes": 10}
    algorithm = create_algorithm("fedavg", **params)
    dataset = load_dataset("digits")
    parts = tuple(partition(np.asarray(dataset.train_y), 6, "iid", np.random.default_rng(0)))
    x, y = torch.from_numpy(np.array(dataset.train_x)), torch.from_numpy(np.array(dataset.train_y))
    s0 = algorithm.init(derive_seed(1, 0))
    s1 = algorithm.init(derive_seed(1, 1))
    config = algorithm.fit_config(algorithm.task(0, s0), min(len(p) for p in parts))
    jobs = [Job(k, k % 6, 0, k % 2, config, derive_seed(5, k)) for k in range(10)]
    return algorithm, params, ClientDataSource("digits", None, parts), {0: s0, 1: s1}, jobs, \
        lambda d: client_data(x, y, parts[d])


@pytest.mark.slow  # ~12 s on 2 cores
def test_warm_workers_share_one_copy_and_rerun_the_jobs_of_a_dead_one(ray_session, digits_jobs, monkeypatch):
    from fleet.learning.ray_backend import RayBackend

    algorithm, params, source, states, jobs, data_of = digits_jobs
    want = SequentialBackend().run(algorithm, states, jobs, data_of)

    def same(got) -> bool:  # one result per job, in job order, with the sequential bits
        return len(got) == len(jobs) and all(
            torch.equal(a.delta, b.delta) and a.num_samples == b.num_samples for a, b in zip(want, got))

    backend = make_backend("ray", "fedavg", params, source, workers=2)
    try:
        info = backend.worker_info()
        assert len({w["pid"] for w in info}) == 2
        assert all(w["threads"] == 1 and w["shared_data"] for w in info)  # views of the object store's copy
        assert same(backend.run(algorithm, states, jobs, data_of)) and backend.retries == 0

        monkeypatch.setattr(RayBackend, "_submit", _killing(ray_session, lambda job: job.task_id == 3, times=1))
        assert same(backend.run(algorithm, states, jobs, data_of))
        assert backend.replaced == 1 and backend.retries >= 1
        assert len({w["pid"] for w in backend.worker_info()} & {w["pid"] for w in info}) == 1

        monkeypatch.setattr(RayBackend, "_submit", _killing(ray_session, lambda job: job.task_id == 3, times=99))
        backend.max_retries = 1  # job 3 kills every worker it is sent to, and the jobs queued with it
        with pytest.raises(RuntimeError, match=r"task \d+ lost its worker 2 times"):
            backend.run(algorithm, states, jobs, data_of)
    finally:
        backend.close()
    assert backend.worker_info() == []


@pytest.mark.parametrize("failure", [BackendUnavailable("cannot start Ray: no room"), RuntimeError("no room")],
                         ids=["unavailable", "other"])
def test_ray_starts_in_the_background_and_its_failure_reaches_the_first_run(digits_jobs, monkeypatch, failure):
    """Making the backend returns while Ray starts on a thread of its own; a start that fails there is raised by
    the first ``run`` as ``BackendUnavailable`` (one line: the CLI's exit 2), and the backend is closed."""
    pytest.importorskip("ray")
    from fleet.learning import ray_backend

    algorithm, params, source, states, jobs, data_of = digits_jobs
    release, started = threading.Event(), threading.Event()

    def slow_failing_connect(address=None, num_cpus=None):
        started.set()
        assert release.wait(30)  # the caller has gone on meanwhile
        raise failure

    monkeypatch.setattr(ray_backend, "connect", slow_failing_connect)
    backend = make_backend("ray", "fedavg", params, source, workers=2, ray_address="local")
    assert started.wait(30) and not release.is_set()  # made, while the start is still under way
    release.set()
    with pytest.raises(BackendUnavailable, match=r"^(cannot start Ray|ray: cannot start): no room$"):
        backend.run(algorithm, states, jobs, data_of)
    assert backend.worker_info() == []  # closed: nothing left to wait for
    backend.close()  # twice is harmless


@pytest.mark.slow  # Ray started by a fresh process: ~15 s on 2 idle cores
def test_a_run_that_starts_ray_itself_gives_the_sequential_run(tmp_path):
    """The CLI in a process of its own, Ray not running: the backend starts Ray on its starter thread while the
    simulation is built, and the run (Ray's processes living past that thread's start-up) ends as
    the sequential one."""
    pytest.importorskip("ray")
    summaries = {}
    for backend in ("sequential", "ray"):
        scenario = tmp_path / f"{backend}.yaml"
        scenario.write_text(yaml.safe_dump(_tiny(**{"executor.backend": backend, "executor.ray_address": "local"})))
        done = subprocess.run([sys.executable, "-m", "fleet.run", str(scenario), "--out", str(tmp_path / backend),
                               "--quiet", "--no-figures"], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        summaries[backend] = json.loads((tmp_path / backend / "summary.json").read_text())
    for key in ("event_log_sha256", "final_accuracy", "final_loss", "updates_accepted"):
        assert summaries["ray"][key] == summaries["sequential"][key], key


# --- errors: one line, exit status 2 -------------------------------------------------------------------------
def test_without_ray_the_error_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(BackendUnavailable, match=r"pip install '\.\[ray\]'"):
        make_backend("ray", "fedavg", {}, ClientDataSource("digits", None, ()))
    scenario = tmp_path / "s.yaml"
    scenario.write_text(yaml.safe_dump(_tiny(**{"executor.backend": "ray"})))
    assert main([str(scenario), "--out", str(tmp_path / "out"), "--quiet", "--no-figures"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "executor: the ray backend needs the ray package: pip install" in err


@pytest.mark.slow  # a process that imports Ray: ~8 s on 2 cores
def test_a_silent_cluster_address_is_one_line_and_exit_2(tmp_path):
    pytest.importorskip("ray")
    scenario = tmp_path / "s.yaml"
    scenario.write_text(yaml.safe_dump(_tiny(**{"executor.backend": "ray"})))
    address = f"127.0.0.1:{_free_port()}"  # nothing listens there
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, "-m", "fleet.run", str(scenario), "--out", str(tmp_path / "out"),
                           "--quiet", "--no-figures", "--set", f"executor.ray_address={address}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert f"executor: executor.ray_address {address}: no Ray cluster answers" in done.stderr


def test_the_scenario_key_is_checked():
    assert parse_scenario(_tiny(**{"executor.backend": "ray", "executor.ray_address": "ray://head:10001"}))
    with pytest.raises(ScenarioError, match="executor.ray_address"):
        parse_scenario(_tiny(**{"executor.ray_address": " "}))


@pytest.mark.slow  # needs Ray started (the module's first such test pays)
def test_the_gcs_of_a_ray_started_here_passes_the_probe(ray_session):
    from fleet.learning.ray_cluster import _probe

    _probe(ray_session.get_runtime_context().gcs_address, "executor.ray_address", 5.0)


def test_jobs_go_in_chunks_that_shrink_as_a_round_drains():
    """Guided self-scheduling: a chunk is the pending jobs over twice the workers (at least one), of the first
    pending job's version, in order; the others keep their order."""
    from collections import deque

    from fleet.learning.ray_backend import RayBackend

    backend = RayBackend.__new__(RayBackend)  # _take needs only the number of workers
    backend._workers = [None, None]
    one_version = [Job(k, k, 0, 0, None, k) for k in range(100)]
    todo, sizes = deque(range(100)), []
    while todo:
        sizes.append(len(backend._take(todo, one_version)))
    assert sizes == [25, 18, 14, 10, 8, 6, 4, 3, 3, 2, 1, 1, 1, 1, 1, 1, 1]  # 17 calls, not 100
    two_versions = [Job(k, k, 0, k % 2, None, k) for k in range(10)]
    todo = deque(range(10))
    assert backend._take(todo, two_versions) == [0, 2] and list(todo) == [1, 3, 4, 5, 6, 7, 8, 9]
    assert backend._take(todo, two_versions) == [1, 3] and list(todo) == [4, 5, 6, 7, 8, 9]
