"""Energy and batteries on a two-device fleet, against hand computations: compute and radio joules kept apart,
a battery that runs flat during its upload at the instant ``level / (draw - recharge)`` gives, stays silent
and comes back at ``REJOIN_FRACTION * capacity / recharge_w`` later, and an upload cut by an availability
window closing. Every case runs as a chain of steps and as the reference process per task: the same rows."""

from __future__ import annotations

import dataclasses

import pytest

from devices import AlwaysOn, Diurnal
from devices.catalog import REJOIN_FRACTION
from fleet.core.kernel import Kernel
from fleet.core.messages import Leave, Refusal, Task, Update
from fleet.core.wire import encoded_size_bytes
from fleet.sim.battery import DeviceState
from fleet.sim.devices import DeviceRules, SimulatedDevices
from tests.helpers import FAST_BIT_PER_S, make_network, make_profiles

RATE_BIT_PER_S = 8000.0  # 1000 bytes a second, up and down
J_PER_BYTE = 1e-3  # so the radio draws 1 W while it transmits
FLOPS, FLOPS_PER_S, POWER_W = 10**6, 1e6, 2.0  # one second of compute, 2 J
PAYLOAD_BYTES, BYTES_UP = 1000, 500
DETECT_S = 30.0
CAPACITY_J, RECHARGE_W = 10.0, 0.01


def _task(task_id: int, device: int) -> Task:
    return Task(task_id, device, 0, 0, "train", 1, 1, 10, FLOPS, BYTES_UP, None, PAYLOAD_BYTES)


def _sizes(task: Task) -> tuple[int, int]:
    update = Update(task.task_id, task.device, 0, 0, 1.0, 0.0, 0.0, BYTES_UP)
    return encoded_size_bytes(task), encoded_size_bytes(update)


def _world(chains: bool, availability, battery_j: list, capacity_j=CAPACITY_J, recharge_w=RECHARGE_W):
    """Device 0 mains powered, device 1 on a battery of ``capacity_j``; exact links, no slowdown."""
    kernel = Kernel(seed=3)
    profiles = make_profiles(2, latency_s=0.0, loss_prob=0.0, up_bit_per_s=RATE_BIT_PER_S,
                             down_bit_per_s=RATE_BIT_PER_S, duty_cycle=1.0, max_frame_payload_bytes=None,
                             frame_overhead_bytes=0, tx_j_per_byte=J_PER_BYTE, flops_per_s=FLOPS_PER_S,
                             compute_power_w=POWER_W)
    profiles[0] = dataclasses.replace(profiles[0], battery_j=None, recharge_w=0.0)
    profiles[1] = dataclasses.replace(profiles[1], battery_j=capacity_j, recharge_w=recharge_w)
    net = make_network(kernel, profiles, chains=chains)
    devices = SimulatedDevices(kernel, net, profiles, availability, battery_j,
                               DeviceRules(slowdown_sigma=0.0, failure_detection_s=DETECT_S))
    heard = []
    net.attach_server(lambda m, d: heard.append((kernel.env.now, m)), lambda m, d: heard.append(("lost", m)))
    return kernel, net, devices, heard


def _hop_s(size_bytes: int) -> float:
    """Airtime plus the backhaul's serialization (no latency anywhere)."""
    return 8 * size_bytes / RATE_BIT_PER_S + 8.0 * size_bytes / FAST_BIT_PER_S


@pytest.mark.parametrize("chains", [True, False])
def test_compute_and_radio_joules_of_a_mains_device(chains):
    kernel, net, devices, heard = _world(chains, [AlwaysOn(), AlwaysOn()], [None, None])
    net.send(_task(0, 0))
    kernel.env.run()
    down, up = _sizes(_task(0, 0))
    compute_j, rx_j, tx_j, flats = devices.energy_parts_by_device()[0]
    assert compute_j == pytest.approx(FLOPS * POWER_W / FLOPS_PER_S, rel=1e-12)  # 2 J
    assert rx_j == pytest.approx(down * J_PER_BYTE, rel=1e-12)  # the download's frame, received
    assert tx_j == pytest.approx(up * J_PER_BYTE, rel=1e-12)  # the update's frame, sent once
    assert flats == 0 and devices.energy_spent_j(0) == pytest.approx(compute_j + rx_j + tx_j, rel=1e-12)
    (t, msg), = heard
    assert isinstance(msg, Update) and t == pytest.approx(_hop_s(down) + 1.0 + _hop_s(up), rel=1e-12)


def _flat_case(chains: bool):
    """Device 1's charge covers the task's nominal energy (what the gate weighs: 2 J + 1.5 kB of payloads) but
    not the frames' headers: it runs flat while it transmits."""
    down, up = _sizes(_task(0, 1))
    nominal_j = FLOPS * POWER_W / FLOPS_PER_S + (PAYLOAD_BYTES + BYTES_UP) * J_PER_BYTE
    start_j = nominal_j + 0.01
    kernel, net, devices, heard = _world(chains, [AlwaysOn(), AlwaysOn()], [None, start_j])
    net.send(_task(0, 1))
    arrive_s = _hop_s(down)
    computed_s = arrive_s + 1.0
    level_j = start_j + RECHARGE_W * computed_s - 2.0 - down * J_PER_BYTE  # after compute and download
    hold_s = 8 * up / RATE_BIT_PER_S
    flat_s = computed_s + level_j / (up * J_PER_BYTE / hold_s - RECHARGE_W)
    back_s = flat_s + REJOIN_FRACTION * CAPACITY_J / RECHARGE_W
    assert computed_s < flat_s < computed_s + hold_s  # the case is what it claims to be
    # while flat: silent; just after coming back: 2 J, too little for the task, so it refuses (and can say so)
    env = kernel.env
    env.timeout(flat_s + 10.0).callbacks.append(lambda _e: net.send(_task(1, 1)))
    env.timeout(back_s + 1.0).callbacks.append(lambda _e: net.send(_task(2, 1)))
    env.run()
    return kernel, devices, heard, (down, up, start_j, level_j, flat_s, back_s)


@pytest.mark.parametrize("chains", [True, False])
def test_a_battery_runs_flat_during_the_upload_and_comes_back_recharged(chains):
    kernel, devices, heard, (down, up, start_j, level_j, flat_s, back_s) = _flat_case(chains)
    rows = kernel.recorder.rows
    kinds = [(r[1], r[4], r[5]) for r in rows]
    assert kinds == [("battery_flat", 0, "battery"), ("dropout", 0, "battery"),
                     ("refusal", 1, "battery"), ("battery_back", None, None), ("refusal", 2, "battery")]
    assert rows[0][0] == pytest.approx(flat_s, rel=1e-12) and rows[1][0] == rows[0][0]
    assert rows[3][0] == pytest.approx(back_s, rel=1e-12)
    said = [(t, type(m), m.task_id, m.cause) for t, m in heard]
    assert said[0] == (pytest.approx(flat_s + DETECT_S, rel=1e-12), Leave, 0, "battery")
    assert said[1][1:] == (Leave, 1, "battery")  # flat: silent, the server hears of it by silence
    assert said[2][1:] == (Refusal, 2, "battery")  # back, but short of the task's energy: it says so
    compute_j, rx_j, tx_j, flats = devices.energy_parts_by_device()[1]
    assert flats == 1 and compute_j == pytest.approx(2.0, rel=1e-12)
    assert rx_j == pytest.approx(down * J_PER_BYTE, rel=1e-12)
    # what it sent before it died: the radio's 1 W over the time the charge lasted, level / (1 W - recharge)
    assert tx_j == pytest.approx(1.0 * level_j / (1.0 - RECHARGE_W), rel=1e-9)
    assert tx_j < up * J_PER_BYTE
    # drained: everything it spent, the charge it started with plus what it recharged until it went flat
    assert devices.energy_spent_j(1) == pytest.approx(start_j + RECHARGE_W * flat_s, rel=1e-9)
    assert devices.battery_j(1, back_s) == pytest.approx(REJOIN_FRACTION * CAPACITY_J, rel=1e-9)


def test_the_flat_battery_rows_are_the_same_as_a_chain_and_as_processes():
    assert _flat_case(True)[0].recorder.rows == _flat_case(False)[0].recorder.rows


@pytest.mark.parametrize("chains", [True, False])
def test_without_recharge_a_flat_battery_never_comes_back(chains):
    down, up = _sizes(_task(0, 1))
    start_j = 2.0 + (PAYLOAD_BYTES + BYTES_UP) * J_PER_BYTE
    kernel, net, devices, heard = _world(chains, [AlwaysOn(), AlwaysOn()], [None, start_j], recharge_w=0.0)
    net.send(_task(0, 1))
    kernel.env.run()
    events = [r[1] for r in kernel.recorder.rows]
    assert events == ["battery_flat", "dropout"] and devices.battery_j(1, 1e9) == 0.0


@pytest.mark.parametrize("chains", [True, False])
def test_an_availability_window_closing_during_the_upload_loses_it(chains):
    """Device 0 is on for the first ``on_s`` seconds of every day; its window closes halfway through the upload's
    airtime: the update is lost at that instant (cause ``offline``), half of its transmission charged."""
    down, up = _sizes(_task(0, 0))
    computed_s = _hop_s(down) + 1.0
    hold_s = 8 * up / RATE_BIT_PER_S
    on_s = computed_s + hold_s / 2
    day = Diurnal(period_s=86_400.0, on_fraction=on_s / 86_400.0)
    kernel, net, devices, heard = _world(chains, [day, AlwaysOn()], [None, None])
    net.send(_task(0, 0))
    kernel.env.run()
    (t, event, _, device, task, cause, *rest), = kernel.recorder.rows
    assert (event, device, task, cause) == ("dropout", 0, 0, "offline")
    assert t == pytest.approx(on_s, rel=1e-12) and rest[3] == pytest.approx(1.0)  # compute_s of the lost update
    (t_heard, msg), = heard
    assert isinstance(msg, Leave) and msg.cause == "offline" and t_heard == pytest.approx(on_s + DETECT_S)
    compute_j, rx_j, tx_j, _ = devices.energy_parts_by_device()[0]
    assert (compute_j, rx_j) == (pytest.approx(2.0), pytest.approx(down * J_PER_BYTE))
    assert tx_j == pytest.approx(up * J_PER_BYTE / 2, rel=1e-9)


@pytest.mark.parametrize("chains", [True, False])
def test_a_window_closing_while_the_upload_waits_for_the_channel_is_found_at_the_grant(chains):
    """One channel for both devices. Device 0 downloads, then device 1 (the channel busy until ``2 d``, ``d`` one
    download's airtime); device 0's compute ends at ``d + 1`` but its upload waits for the channel until ``2 d``
    and holds it until ``2 d + u``; device 1 computes 0.01 s and waits from ``2 d + 0.01``; its window closes
    meanwhile: its upload is cut when the channel comes to it, at ``2 d + u`` (held for no time)."""
    down, up = _sizes(_task(0, 0))
    d, hold_s = 8 * down / RATE_BIT_PER_S, 8 * up / RATE_BIT_PER_S
    waits_from_s = 2 * d + 0.01
    assert d + 1.0 < 2 * d and waits_from_s + 0.1 < 2 * d + hold_s
    day = Diurnal(period_s=86_400.0, on_fraction=(waits_from_s + 0.1) / 86_400.0)
    kernel = Kernel(seed=3)
    profiles = make_profiles(2, latency_s=0.0, loss_prob=0.0, up_bit_per_s=RATE_BIT_PER_S,
                             down_bit_per_s=RATE_BIT_PER_S, duty_cycle=1.0, max_frame_payload_bytes=None,
                             frame_overhead_bytes=0, tx_j_per_byte=J_PER_BYTE, flops_per_s=FLOPS_PER_S,
                             compute_power_w=POWER_W, battery_j=None, recharge_w=0.0)
    net = make_network(kernel, profiles, channels=1, chains=chains)
    SimulatedDevices(kernel, net, profiles, [AlwaysOn(), day], [None, None],
                     DeviceRules(slowdown_sigma=0.0, failure_detection_s=DETECT_S))
    heard = []
    net.attach_server(lambda m, d: heard.append((kernel.env.now, m)), lambda m, d: None)
    net.send(_task(0, 0))
    net.send(dataclasses.replace(_task(1, 1), flops=FLOPS // 100))
    kernel.env.run()
    dropout, = [r for r in kernel.recorder.rows if r[1] == "dropout"]
    assert dropout[3:6] == (1, 1, "offline")
    assert dropout[0] == pytest.approx(2 * d + hold_s, rel=1e-9)  # the grant: device 0's airtime over
    assert [type(m) for _, m in heard] == [Update, Leave]


@pytest.mark.parametrize("chains", [True, False])
def test_a_battery_that_cannot_pay_for_the_download_s_headers_runs_flat_when_the_compute_ends(chains):
    """No update payload: the gate weighs 2 J of compute and 1 kB of download, 3 J; the charge covers that but not
    the download's frame (payload plus header), charged with the compute when it ends: flat then, the update
    lost, the battery's charge all it gave."""
    task = dataclasses.replace(_task(0, 1), bytes_up=0)
    down = encoded_size_bytes(task)
    start_j = 3.05
    kernel, net, devices, heard = _world(chains, [AlwaysOn(), AlwaysOn()], [None, start_j])
    net.send(task)
    kernel.env.run()
    computed_s = _hop_s(down) + 1.0
    level_j = start_j + RECHARGE_W * computed_s
    assert 3.0 <= start_j and level_j < 2.0 + down * J_PER_BYTE  # the case is what it claims to be
    rows = kernel.recorder.rows
    assert [(r[1], r[5]) for r in rows] == [("battery_flat", "battery"), ("dropout", "battery"),
                                           ("battery_back", None)]
    assert rows[0][0] == rows[1][0] == pytest.approx(computed_s, rel=1e-12)
    assert rows[2][0] == pytest.approx(computed_s + REJOIN_FRACTION * CAPACITY_J / RECHARGE_W, rel=1e-12)
    compute_j, rx_j, tx_j, flats = devices.energy_parts_by_device()[1]
    assert compute_j + rx_j == pytest.approx(level_j, rel=1e-12) and tx_j == 0.0 and flats == 1
    assert compute_j / rx_j == pytest.approx(2.0 / (down * J_PER_BYTE), rel=1e-12)  # shared pro rata
    (t, msg), = heard
    assert isinstance(msg, Leave) and t == pytest.approx(computed_s + DETECT_S, rel=1e-12)


def test_only_an_always_on_device_without_a_battery_cannot_go_silent():
    """``DeviceState.cuttable`` lets the hot path skip the cut and availability questions: it must be True for
    any device that has a battery or a timeline that can go down."""
    profile = make_profiles(1)[0]
    assert not DeviceState(profile, AlwaysOn(), None).cuttable
    assert DeviceState(profile, AlwaysOn(), 5.0).cuttable
    assert DeviceState(profile, Diurnal(period_s=100.0, on_fraction=0.5), None).cuttable
