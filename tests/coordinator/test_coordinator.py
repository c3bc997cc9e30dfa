"""Coordinators: sync rounds (order statistics, deadline, quorum) and FedBuff/FedAsync staleness."""

from __future__ import annotations

import math

import numpy as np
import pytest

from algorithms.base import ResourceDemand, TaskConfig
from devices import DEVICE_CLASSES, AlwaysOn
from fleet.coordinator.asynchronous import AsyncConfig, AsyncCoordinator, staleness_weight
from fleet.coordinator.sync import SyncConfig, SyncCoordinator
from fleet.core.kernel import EVENT_COLUMNS, Kernel
from fleet.core.work import NullWork
from fleet.sim.devices import DeviceRules, SimulatedDevices
from tests.helpers import FAST_BIT_PER_S, make_network, make_profiles

COL = {name: i for i, name in enumerate(EVENT_COLUMNS)}
FLOPS = 4 * 10**9
LATENCY_S = 0.05


def _plan(flops=FLOPS, peak=10**6):
    demand = ResourceDemand(peak_memory_bytes=peak, flops=flops, bytes_down=1000, bytes_up=1000)
    return lambda r, device: (TaskConfig("train", 1, 1), demand)


def _fleet(seed, n, rules=DeviceRules(slowdown_sigma=0.4), profile_seed=None, **link):
    kernel = Kernel(seed)
    link = {"up_bit_per_s": FAST_BIT_PER_S, "down_bit_per_s": FAST_BIT_PER_S,
            "latency_s": LATENCY_S, "loss_prob": 0.0, **link}
    profiles = make_profiles(n, seed=seed if profile_seed is None else profile_seed, **link)
    net = make_network(kernel, profiles)
    SimulatedDevices(kernel, net, profiles, [AlwaysOn()] * n, [p.battery_j for p in profiles],
                     rules)
    return kernel, net, profiles


def _ks_statistic(a, b):
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    return float(np.max(np.abs(np.searchsorted(a, grid, "right") / len(a)
                               - np.searchsorted(b, grid, "right") / len(b))))


@pytest.mark.slow
def test_sync_round_without_deadline_is_the_kth_order_statistic():
    """A round that selects n devices and waits for K ends at the K-th completion time.

    Each run samples a fresh fleet (lognormal throughput per device) and per-task slowdowns
    exp|N(0, 0.4)|; the Monte Carlo draws the same distributions directly with numpy.
    """
    n, k, runs, sigma = 12, 5, 400, 0.4
    cls = DEVICE_CLASSES["rpi4_4gb"]
    simulated = []
    for seed in range(runs):
        kernel, net, profiles = _fleet(seed, n, DeviceRules(slowdown_sigma=sigma))
        coord = SyncCoordinator(kernel, net, n, _plan(),
                                SyncConfig(rounds=1, clients_per_round=k,
                                           over_selection=(n - k) / k))
        kernel.env.process(coord.process())
        kernel.env.run(until=coord.finished)
        (rec,) = coord.rounds
        assert rec.selected == n and rec.accepted == k
        simulated.append(rec.end_s - rec.start_s)
    rng = np.random.default_rng(2024)
    m = 100_000
    flops_per_s = cls.sustained_flops_per_s * np.exp(rng.normal(0, cls.flops_sigma, (m, n)))
    slowdown = np.exp(np.abs(rng.normal(0, sigma, (m, n))))
    completion = 2 * LATENCY_S + FLOPS * slowdown / flops_per_s
    kth = np.sort(completion, axis=1)[:, k - 1]
    d = _ks_statistic(np.array(simulated), kth)
    critical = 1.95 * math.sqrt((runs + m) / (runs * m))  # alpha = 0.001
    assert d < critical, (d, critical)
    assert np.mean(simulated) == pytest.approx(np.mean(kth), rel=3 * np.std(kth)
                                               / np.sqrt(runs) / np.mean(kth))


def test_deadline_turns_the_slow_tail_into_deadline_dropouts():
    n = 20
    kernel, net, profiles = _fleet(3, n, DeviceRules(slowdown_sigma=0.0, refuse_hopeless=False))
    compute_s = sorted(FLOPS / p.flops_per_s + 2 * LATENCY_S for p in profiles)
    deadline_s = compute_s[9] + 1e-9  # exactly 10 devices make it
    coord = SyncCoordinator(kernel, net, n, _plan(),
                            SyncConfig(rounds=1, clients_per_round=n, deadline_s=deadline_s,
                                       quorum=0.5))
    kernel.env.process(coord.process())
    kernel.env.run(until=coord.finished)
    (rec,) = coord.rounds
    assert rec.accepted == 10 and rec.dropouts == {"deadline": 10}
    assert rec.end_s == pytest.approx(deadline_s)
    assert rec.aggregated and coord.version == 1


def test_hopeless_devices_refuse_up_front_and_quorum_fails_the_round():
    n = 20
    kernel, net, profiles = _fleet(3, n, DeviceRules(slowdown_sigma=0.0, refuse_hopeless=True))
    compute_s = sorted(FLOPS / p.flops_per_s + LATENCY_S for p in profiles)
    coord = SyncCoordinator(kernel, net, n, _plan(),
                            SyncConfig(rounds=1, clients_per_round=n,
                                       deadline_s=compute_s[4] + LATENCY_S + 1e-9, quorum=0.5))
    kernel.env.process(coord.process())
    kernel.env.run(until=coord.finished)
    (rec,) = coord.rounds
    assert rec.accepted == 5
    assert rec.dropouts == {"deadline": 15}
    assert not rec.aggregated and coord.version == 0


def test_memory_gate_refuses_tasks_that_do_not_fit():
    n = 10
    kernel, net, profiles = _fleet(1, n)
    ram = profiles[0].ram_bytes
    coord = SyncCoordinator(kernel, net, n, _plan(peak=ram),
                            SyncConfig(rounds=1, clients_per_round=n))
    kernel.env.process(coord.process())
    kernel.env.run(until=coord.finished)
    (rec,) = coord.rounds
    assert rec.accepted == 0 and rec.dropouts == {"memory": n}
    refusals = [r for r in kernel.recorder.rows if r[1] == "refusal"]
    assert len(refusals) == n
    assert all(r[COL["demand_bytes"]] > r[COL["free_bytes"]] for r in refusals)


def test_fedbuff_staleness_counts_aggregations_since_download():
    """Two speed tiers: the slow tier's updates arrive after fast ones were aggregated."""
    n = 8
    kernel, net, profiles = _fleet(5, n, DeviceRules(slowdown_sigma=0.0))
    for i, p in enumerate(profiles):  # devices 0-3 fast, 4-7 ten times slower
        object.__setattr__(p, "flops_per_s", 1e9 if i < 4 else 1e8)
    coord = AsyncCoordinator(kernel, net, n, _plan(flops=10**9),
                             AsyncConfig(aggregations=3, concurrency=8, buffer_size=4))
    kernel.env.process(coord.process())
    kernel.env.run(until=coord.finished)
    updates = [r for r in kernel.recorder.rows if r[1] == "update"]
    # Fast devices finish every 1.1 s. Devices 0-2 are re-dispatched as their updates arrive,
    # before the 4th update triggers aggregation, so they download version v while device 3
    # downloads v + 1: each later buffer holds staleness 1, 1, 1, 0. Slow devices never finish
    # within three aggregations.
    assert [r[COL["staleness"]] for r in updates] == [0, 0, 0, 0, 1, 1, 1, 0, 1, 1, 1, 0]
    assert [r[COL["device"]] for r in updates] == [0, 1, 2, 3] * 3
    assert [r.mean_staleness for r in coord.rounds] == [0.0, 0.75, 0.75]
    assert coord.staleness_weight(3) == pytest.approx(0.5)


def test_fedasync_aggregates_every_update():
    n = 6
    kernel, net, _ = _fleet(2, n)
    coord = AsyncCoordinator(kernel, net, n, _plan(),
                             AsyncConfig(aggregations=10, concurrency=3, buffer_size=1))
    kernel.env.process(coord.process())
    kernel.env.run(until=coord.finished)
    assert coord.version == 10 and len(coord.rounds) == 10
    assert all(r.accepted == 1 for r in coord.rounds)


def test_staleness_weight_is_fedbuffs_polynomial_discount():
    assert staleness_weight(0, 0.5) == 1.0  # a fresh update counts in full
    assert staleness_weight(3, 0.5) == 0.5
    assert staleness_weight(1, 1.0) == 0.5
    assert staleness_weight(3, 2.0) == 0.0625
    assert staleness_weight(9, 0.0) == 1.0  # exponent 0: no discount
    weights = [staleness_weight(s, 0.5) for s in range(10)]
    assert all(a > b for a, b in zip(weights, weights[1:]))


class _Spy:
    """A ``LocalWork`` that records every call the coordinator makes."""

    def __init__(self):
        self.calls = []

    def submit(self, task):
        self.calls.append(("submit", task.task_id))

    def cancel(self, task_id):
        self.calls.append(("cancel", task_id))

    def collect(self, task):
        self.calls.append(("collect", task.task_id))

    def aggregate(self, task_ids, weights):
        self.calls.append(("aggregate", list(task_ids), list(weights)))


# Deadlines and timeouts that some tasks miss: failed rounds, late and stale updates all occur.
_SYNC = SyncConfig(rounds=6, clients_per_round=4, over_selection=0.5, deadline_s=0.3, quorum=1.0)
_ASYNC = AsyncConfig(aggregations=6, concurrency=6, buffer_size=3, staleness_exponent=0.5,
                     max_staleness=1, task_timeout_s=0.35)


def _run_with(config, work):
    """Twelve devices, of which 0 and 1 refuse every task (it does not fit their memory)."""
    kernel, net, profiles = _fleet(7, 12)
    fits, too_big = _plan(flops=10**9), _plan(flops=10**9, peak=profiles[0].ram_bytes)
    plan = lambda r, device: (too_big if device < 2 else fits)(r, device)  # noqa: E731
    cls = SyncCoordinator if isinstance(config, SyncConfig) else AsyncCoordinator
    coord = cls(kernel, net, 12, plan, config, work)
    kernel.env.process(coord.process())
    kernel.env.run(until=coord.finished)
    return kernel.recorder.rows, coord


@pytest.mark.parametrize("config", [_SYNC, _ASYNC], ids=["sync", "fedbuff"])
def test_the_work_never_changes_the_run_and_hears_each_tasks_fate_once(config):
    """Timing mode (no work, or ``NullWork``) and a recording work give the same event log; the work is
    told of every task at dispatch, of every accepted update, and then of its one fate: aggregated (with
    weight 1 in sync rounds, the staleness discount in FedBuff) or cancelled; or nothing, if it was still
    out when the run stopped."""
    rows, coord = _run_with(config, None)
    assert _run_with(config, NullWork())[0] == rows
    spy = _Spy()
    spied, spied_coord = _run_with(config, spy)
    assert spied == rows and spied_coord.version == coord.version
    of = lambda kind: [r[COL["task"]] for r in rows if r[COL["event"]] == kind]  # noqa: E731
    calls = spy.calls
    assert [c[1] for c in calls if c[0] == "submit"] == of("dispatch")
    assert [c[1] for c in calls if c[0] == "collect"] == of("update")
    aggregations = [c for c in calls if c[0] == "aggregate"]
    assert len(aggregations) == coord.version > 0
    staleness = {r[COL["task"]]: r[COL["staleness"]] for r in rows if r[COL["event"]] == "update"}
    for _, ids, weights in aggregations:
        discount = (lambda s: 1.0) if isinstance(config, SyncConfig) else (
            lambda s: staleness_weight(s, config.staleness_exponent))
        assert weights == [discount(staleness[t]) for t in ids]
    aggregated = [t for _, ids, _ in aggregations for t in ids]
    cancelled = [c[1] for c in calls if c[0] == "cancel"]
    fates = aggregated + cancelled
    assert len(fates) == len(set(fates))  # one fate per task
    assert coord.stopped_by == "completed" and coord.unfinished_round is None
    assert set(of("update")) <= set(fates)  # nothing accepted is left without a fate after the last round
    out = set(coord.outstanding)  # still with their devices when the run stopped
    assert set(fates) | out == set(of("dispatch")) and not set(fates) & out
    assert set(of("discard")) <= set(cancelled) and of("discard")  # late or stale updates
    assert set(of("refusal")) <= set(cancelled) and of("refusal")
    if isinstance(config, SyncConfig):  # a failed round cancels the updates it accepted
        assert set(cancelled) & set(of("update"))


def test_null_work_records_nothing():
    work = NullWork()
    _run_with(_SYNC, work)
    assert (work.evaluations, dict(work.metrics_by_version), work.jobs_run, work.versions_resumed) == (
        (), {}, 0, 0)
