"""The fleet as the face reads it (``FleetView``): simulated devices, real ones behind the bridge, both joined
by device id, and what ``fleet.app.view`` builds from a run."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from algorithms.base import ResourceDemand, TaskConfig
from devices import AlwaysOn, BackgroundMemory
from fleet.app.build import build_simulation
from fleet.app.scenario import load_scenario
from fleet.app.study import memory_eligible
from fleet.app.view import task_peak_bytes
from fleet.bridge.view import RealView
from fleet.coordinator.sync import SyncConfig, SyncCoordinator
from fleet.core.view import JoinedView
from fleet.core.work import NullWork
from fleet.sim.devices import DeviceRules, SimulatedDevices
from fleet.sim.view import SimulatedView
from tests.helpers import make_network, make_profiles

SMOKE = Path(__file__).resolve().parents[2] / "scenarios" / "smoke.yaml"

MEAN_B, AMPLITUDE_B, PERIOD_S = 10**8, 5 * 10**7, 100.0
CLASSES = ["rpi4_4gb", "rpi4_4gb", "jetson_nano"]


def _simulated(kernel):
    """Three simulated devices (view, profiles, network, devices); the third's background use exceeds its
    RAM, so it never has free memory."""
    profiles = [*make_profiles(2, "rpi4_4gb"), *make_profiles(1, "jetson_nano", seed=1)]
    backgrounds = [BackgroundMemory(MEAN_B, AMPLITUDE_B, PERIOD_S, 0.0)] * 2 + [
        BackgroundMemory(10**12, 0.0, PERIOD_S, 0.0)]
    profiles = [dataclasses.replace(p, device_id=i, background=b)
                for i, (p, b) in enumerate(zip(profiles, backgrounds))]
    net = make_network(kernel, profiles)
    devices = SimulatedDevices(kernel, net, profiles, [AlwaysOn()] * 3, [p.battery_j for p in profiles],
                               DeviceRules(slowdown_sigma=0.0))
    return SimulatedView(devices, profiles), profiles, net, devices


@dataclasses.dataclass
class _Attached:
    device_class: str
    free_memory_bytes: int


def _bridge(first_real=3, real=None, rejected=None):
    """What ``RealView`` reads of a ``BridgeTransport``: two real devices unless told otherwise."""
    real = {3: _Attached("rpi4_4gb", 123), 4: _Attached("phone_mid", 0)} if real is None else real
    rejected = Counter({"bad_frame": 2, "auth_handshake": 0}) if rejected is None else rejected
    return SimpleNamespace(first_real=first_real, real=real, real_flops=7 * 10**9, real_updates_accepted=7,
                           rejected=rejected)


def test_a_simulated_view_reads_the_profiles_and_the_devices(kernel):
    view, profiles, net, _ = _simulated(kernel)
    assert view.devices == range(3)
    assert [view.device_class(d) for d in view.devices] == CLASSES
    trainable = profiles[0].trainable_bytes
    assert view.free_bytes_at(0, 0.0) == trainable - MEAN_B  # sin(0) = 0
    assert view.free_bytes_at(1, PERIOD_S / 4) == trainable - MEAN_B - AMPLITUDE_B  # sin(pi / 2) = 1
    assert view.free_bytes_at(2, 0.0) == 0
    assert [view.is_real(d) for d in view.devices] == [False] * 3
    assert (view.flops_spent, view.real_updates_accepted, dict(view.rejected)) == (0, 0, {})
    demand = ResourceDemand(peak_memory_bytes=10**6, flops=10**9, bytes_down=1000, bytes_up=1000)
    coord = SyncCoordinator(kernel, net, 3, lambda r, d: (TaskConfig("train", 1, 1), demand),
                            SyncConfig(rounds=1, clients_per_round=3, quorum=0.5))
    kernel.env.process(coord.process())
    kernel.env.run(until=coord.finished)
    assert coord.dropouts == {"memory": 1}
    assert view.flops_spent == 2 * 10**9  # the two devices with memory computed their task in full
    for outside in (3, -1):
        with pytest.raises(IndexError):
            view.device_class(outside)


def test_a_real_view_reads_the_bridge_as_it_stands():
    bridge = _bridge()
    view = RealView(bridge)
    assert view.devices == range(3, 5)
    assert [view.device_class(d) for d in view.devices] == ["real:rpi4_4gb", "real:phone_mid"]
    assert [view.free_bytes_at(d, t) for d, t in ((3, 0.0), (3, 1e6), (4, 0.0))] == [123, 123, 0]
    assert [view.is_real(d) for d in view.devices] == [True, True]
    assert (view.flops_spent, view.real_updates_accepted) == (7 * 10**9, 7)
    assert dict(view.rejected) == {"bad_frame": 2, "auth_handshake": 0}
    bridge.real[3].free_memory_bytes = 456  # it reattached and reported again
    assert view.free_bytes_at(3, 0.0) == 456
    for outside in (2, 5):
        with pytest.raises(KeyError):
            view.is_real(outside)


def test_joined_views_answer_by_id_range_and_sum_the_fleet(kernel):
    simulated, _, _, _ = _simulated(kernel)
    more = RealView(_bridge(5, {5: _Attached("esp32", 9)}, Counter({"bad_frame": 1, "stale_update": 4})))
    empty = RealView(_bridge(5, {}, Counter()))  # holds no id, but its figures still count
    view = JoinedView([simulated, RealView(_bridge()), empty, more])
    assert view.devices == range(6)
    assert [view.device_class(d) for d in view.devices] == [*CLASSES, "real:rpi4_4gb", "real:phone_mid",
                                                            "real:esp32"]
    assert [view.is_real(d) for d in view.devices] == [False] * 3 + [True] * 3
    assert [view.free_bytes_at(d, 0.0) for d in (2, 3, 5)] == [0, 123, 9]
    assert (view.flops_spent, view.real_updates_accepted) == (21 * 10**9, 21)
    assert view.rejected == {"bad_frame": 3, "auth_handshake": 0, "stale_update": 4}
    with pytest.raises(IndexError):
        view.free_bytes_at(6, 0.0)
    with pytest.raises(ValueError, match="consecutive"):
        JoinedView([simulated, RealView(_bridge(first_real=4))])


def test_the_run_is_read_through_one_view_whatever_it_ran_on(kernel):
    _, profiles, _, devices = _simulated(kernel)
    alone = SimulatedView(devices, profiles)
    assert [alone.device_class(d) for d in alone.devices] == CLASSES
    real_profiles = [dataclasses.replace(profiles[0], device_id=3 + i, device_class=c)
                     for i, c in enumerate(("real:rpi4_4gb", "real:phone_mid"))]
    mixed = JoinedView([alone, RealView(_bridge())])  # as fleet.app.build joins them
    assert [mixed.device_class(d) for d in mixed.devices] == [p.device_class for p in
                                                               [*profiles, *real_profiles]]
    assert mixed.flops_spent == 7 * 10**9 and sum(map(mixed.is_real, mixed.devices)) == 2


class _Algorithm:
    """A cost model whose peak memory is 1000 bytes per sample of the batch."""

    def fit_config(self, config, num_samples):
        return TaskConfig(config.phase, config.local_steps, min(config.batch_size, num_samples))

    def demand(self, config):
        return ResourceDemand(peak_memory_bytes=1000 * config.batch_size, flops=1, bytes_down=1, bytes_up=1)


def test_a_task_is_fitted_to_each_devices_data_only_when_it_learns():
    train = TaskConfig("train", 1, 32)
    nominal = _Algorithm().demand(train)
    timing = SimpleNamespace(learning=None, task_configs={"train": train}, demands={"train": nominal})
    assert [task_peak_bytes(timing, "train")(d) for d in range(3)] == [32_000] * 3
    assert task_peak_bytes(timing, "prune") is None
    plane = SimpleNamespace(algorithm=_Algorithm(), partitions=[range(50), range(8), range(1)])
    learning = SimpleNamespace(learning=plane, task_configs={"train": train}, demands={"train": nominal})
    assert [task_peak_bytes(learning, "train")(d) for d in range(3)] == [32_000, 8_000, 1_000]


def test_a_timing_run_reads_an_empty_record_and_its_simulated_fleet():
    sim = build_simulation(load_scenario(SMOKE))
    assert isinstance(sim.record, NullWork)
    sim.run()
    empty = sim.record
    assert (tuple(empty.evaluations), dict(empty.metrics_by_version), empty.jobs_run) == ((), {}, 0)
    assert [sim.fleet.device_class(d) for d in sim.fleet.devices] == [p.device_class for p in sim.profiles]
    assert sim.fleet.flops_spent == sim.devices.flops_spent_total > 0


@pytest.mark.parametrize(("peak_bytes", "eligible"), [(0, 5), (100, 3), (124, 2)])
def test_memory_eligible_counts_simulated_and_real_devices_alike(kernel, peak_bytes, eligible):
    """Free at t = 0: devices 0 and 1 several GB, device 2 none; the real devices 3 and 4 reported 123 and
    0 bytes."""
    _, profiles, _, devices = _simulated(kernel)
    train = TaskConfig("train", 1, 1)
    demand = ResourceDemand(peak_memory_bytes=peak_bytes, flops=1, bytes_down=1, bytes_up=1)
    fleet = JoinedView([SimulatedView(devices, profiles), RealView(_bridge())])
    sim = SimpleNamespace(fleet=fleet, learning=None, task_configs={"train": train}, demands={"train": demand})
    assert memory_eligible(sim) == eligible


def test_every_view_reads_every_device_at_once_as_one_at_a_time(kernel):
    """The bulk readings (``class_codes``, ``free_bytes_all``, ``real_mask``) of each view and of their join."""
    simulated, _, _, _ = _simulated(kernel)
    for view in (simulated, RealView(_bridge()), JoinedView([simulated, RealView(_bridge())])):
        names, codes = view.class_codes()
        assert [names[c] for c in codes] == [view.device_class(d) for d in view.devices]
        assert names == sorted(set(names))
        for t_s in (0.0, PERIOD_S / 4, 33.3):
            assert view.free_bytes_all(t_s).tolist() == [view.free_bytes_at(d, t_s) for d in view.devices]
        assert view.real_mask().tolist() == [view.is_real(d) for d in view.devices]
