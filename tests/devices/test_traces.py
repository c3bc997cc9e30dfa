"""FedScale-format traces as devices: the throughput, bandwidth and availability of each simulated device are
the trace's, exactly; the formats agree; pairing and selection are as documented."""

import math

import numpy as np
import pytest

from devices import DEVICE_CLASSES, LINK_CLASSES, AlwaysOn
from devices.traces import (
    PeriodicIntervals,
    TraceError,
    fleet_records,
    load_traces,
    read_trace_file,
    select_clients,
    trace_fleet,
    write_records,
)
from tests.devices.trace_files import BEHAVIOUR, CAPACITY, write_pair

F = 2_063_490.0  # forward FLOPs per sample of the model the trace is read against


def _fleet(tmp_path, memory=(("phone_mid", 1.0),), seed=0, **kwargs):
    traces = load_traces(*write_pair(tmp_path), **kwargs)
    return trace_fleet(traces, F, list(memory), "lte", np.random.default_rng(seed))


def test_throughput_bandwidth_and_memory_are_the_traces(tmp_path):
    built = _fleet(tmp_path)
    fleet = built.fleet
    assert built.client_ids == ("1", "2", "3", "4")
    assert fleet[0].flops_per_s == F / 0.05  # 50 ms per sample
    assert fleet[1].flops_per_s == F / 0.2
    assert fleet[2].flops_per_s == F / 0.0125
    assert (fleet[0].up_bit_per_s, fleet[0].down_bit_per_s) == (1e6, 1e6)  # 1000 kbit/s both ways
    assert (fleet[1].up_bit_per_s, fleet[1].down_bit_per_s) == (250_500.0, 250_500.0)
    phone, lte = DEVICE_CLASSES["phone_mid"], LINK_CLASSES["lte"]
    for d in range(4):
        p = fleet[d]
        assert (p.device_class, p.ram_bytes, p.runtime_reserve_bytes) == ("phone_mid", phone.ram_bytes,
                                                                          phone.runtime_reserve_bytes)
        assert (p.link_class, p.latency_s, p.loss_prob) == ("lte", lte.latency_s, lte.loss_prob)
        assert 0 <= p.background.phase_rad < 2 * math.pi
    assert np.isnan(built.battery_j_at_start).all()  # the trace says nothing of charge


def test_availability_is_the_behaviour_trace(tmp_path):
    timelines = _fleet(tmp_path).availability
    one, two, three, four = timelines
    assert isinstance(one, PeriodicIntervals)
    assert [one.unavailable_cause(t) for t in (50, 100, 150, 200, 250, 350, 1150, 1250)] == \
        ["offline", None, None, "offline", "offline", None, None, "offline"]
    assert one.next_interruption(120.0, math.inf) == (200.0, "offline")
    assert isinstance(two, AlwaysOn)  # [0, finish_time): never down
    assert three.unavailable_cause(1050.0) is None and three.unavailable_cause(300.0) == "offline"
    assert three.next_interruption(700.0, math.inf) == (1100.0, "offline")  # [600, 1000) joins [1000, 1100)
    assert four.unavailable_cause(3650.0) is None and four.unavailable_cause(3700.0) == "offline"


def test_json_csv_and_pickle_give_one_fleet(tmp_path):
    pkl = load_traces(*write_pair(tmp_path))
    js = load_traces(*write_pair(tmp_path, suffix=".json"))
    assert pkl == js
    csv_path = tmp_path / "both.csv"
    csv_path.write_text("client_id,computation,communication,finish_time,active,inactive\n" + "".join(
        f"{c},{CAPACITY[c]['computation']},{CAPACITY[c]['communication']},{BEHAVIOUR[c]['finish_time']},"
        f"{' '.join(map(str, BEHAVIOUR[c]['active']))},{' '.join(map(str, BEHAVIOUR[c]['inactive']))}\n"
        for c in CAPACITY))
    assert load_traces(csv_path, csv_path) == pkl


def test_extension_keys_set_each_direction_latency_and_class(tmp_path):
    capacity = {"a": {"computation": 50, "communication": 1000, "upload_kbit_per_s": 500,
                      "download_kbit_per_s": 4000, "latency_s": 0.25, "device_class": "rpi4_4gb",
                      "link_class": "wifi", "background_phase_rad": 1.5},
                "b": {"computation": 50, "communication": 1000}}
    cap, _ = write_pair(tmp_path, capacity, {}, suffix=".json")
    built = trace_fleet(load_traces(cap), F, [("phone_low", 1.0)], "lte", np.random.default_rng(0))
    a, b = built.fleet[0], built.fleet[1]
    assert (a.up_bit_per_s, a.down_bit_per_s, a.latency_s) == (5e5, 4e6, 0.25)
    assert (a.device_class, a.link_class, a.background.phase_rad) == ("rpi4_4gb", "wifi", 1.5)
    assert (b.device_class, b.link_class) == ("phone_low", "lte")
    assert all(isinstance(t, AlwaysOn) for t in built.availability)  # no behaviour file: always on


def test_memory_mix_deals_exact_counts_and_groups_devices(tmp_path):
    built = _fleet(tmp_path, memory=(("phone_low", 0.5), ("rpi4_4gb", 0.5)), seed=4)
    classes = [built.fleet.device_class_of(d) for d in range(4)]
    assert sorted(classes) == ["phone_low", "phone_low", "rpi4_4gb", "rpi4_4gb"]
    assert classes[0] == classes[1] and classes[2] == classes[3]  # one entry's devices are consecutive
    again = _fleet(tmp_path, memory=(("phone_low", 0.5), ("rpi4_4gb", 0.5)), seed=4)
    assert again.client_ids == built.client_ids  # the seed decides the dealing


def test_fedscale_pairing_is_by_position(tmp_path):
    """FedScale's clientManager gives capacity client c the behaviour at index c % len, in key order."""
    behaviour = {"x": BEHAVIOUR[1], "y": BEHAVIOUR[2], "z": BEHAVIOUR[4]}
    traces = load_traces(*write_pair(tmp_path, CAPACITY, behaviour), pairing="fedscale")
    expected = {"1": "y", "2": "z", "3": "x", "4": "y"}  # 1 % 3 = 1, 2 % 3 = 2, 3 % 3 = 0, 4 % 3 = 1
    for t in traces:
        source = behaviour[expected[t.client_id]]
        assert t.behaviour.active_s == tuple(map(float, source["active"]))


def test_selection_first_and_sample(tmp_path):
    traces = load_traces(*write_pair(tmp_path))
    assert [t.client_id for t in select_clients(traces, 2)] == ["1", "2"]
    picked = [t.client_id for t in select_clients(traces, 3, "sample", np.random.default_rng(9))]
    assert picked == sorted(picked) and len(set(picked)) == 3  # kept in file order
    assert picked == [t.client_id for t in select_clients(traces, 3, "sample", np.random.default_rng(9))]
    with pytest.raises(TraceError, match="needs 5 devices but the trace has 4 clients"):
        select_clients(traces, 5)


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_an_exported_fleet_reads_back_as_the_same_fleet(tmp_path, suffix):
    built = _fleet(tmp_path, memory=(("phone_low", 0.5), ("rpi4_4gb", 0.5)), seed=2)
    battery = [None] * 4
    path = tmp_path / f"fleet{suffix}"
    write_records(fleet_records(built.fleet, built.availability, battery, F, built.client_ids), path)
    assert set(read_trace_file(path)) == {"1", "2", "3", "4"}
    again = trace_fleet(load_traces(path, path), F, [("esp32", 1.0)], "nb_iot", np.random.default_rng(99))
    assert again.client_ids == built.client_ids
    for d in range(4):
        assert again.fleet[d] == built.fleet[d]  # bit for bit: these figures have exact inverses
    for t in np.linspace(0, 5000, 101).tolist():
        for a, b in zip(built.availability, again.availability):
            assert a.unavailable_cause(t) == b.unavailable_cause(t)
            assert a.next_interruption(t, math.inf) == b.next_interruption(t, math.inf)


def test_the_package_is_small_modules_with_an_exact_public_surface():
    """(Its imports, numpy and the standard library only, are checked with the rest of devices/ in
    test_public_api.py.)"""
    import sys
    from pathlib import Path

    import devices.traces

    for path in Path(devices.traces.__file__).parent.glob("*.py"):
        assert len(path.read_text().splitlines()) <= 300, path.name
    public = {n for n, v in vars(devices.traces).items() if not n.startswith("_") and not isinstance(v, type(sys))}
    assert set(devices.traces.__all__) == public
