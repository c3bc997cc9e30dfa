"""A fleet as arrays (``devices.SampledFleet``): the same draws and the same profiles as ``sample_fleet`` made
one object per device, its readings of every device at once equal to each profile's own."""

from __future__ import annotations

import math

import numpy as np
import pytest

import devices.background as background_module
from devices import BackgroundMemory, MixEntry, SampledFleet, sample_fleet, sample_fleet_arrays

MIX = (MixEntry("phone_mid", "wifi", 0.5), MixEntry("esp32", "lorawan", 0.0),
       MixEntry("mcu_tiny", "ble_gateway", 0.2), MixEntry("rpi4_4gb", "ethernet", 0.3, {"loss_prob": 0.3}))


def _profiles_one_by_one(mix, n, seed, period_s=3600.0):
    """``sample_fleet`` as it was written before the arrays: draws per entry, then one profile per device."""
    from devices import DEVICE_CLASSES, DeviceProfile, largest_remainder_counts

    rng = np.random.default_rng(seed)
    out = []
    for entry, count in zip(mix, largest_remainder_counts([e.fraction for e in mix], n)):
        if not count:
            continue
        dc, lc = DEVICE_CLASSES[entry.device_class], entry.link_class_of()
        speed = rng.lognormal(0.0, dc.flops_sigma, count).tolist()
        bandwidth = rng.lognormal(0.0, lc.bandwidth_sigma, count)
        latency = rng.lognormal(0.0, lc.latency_sigma, count).tolist()
        phase = rng.uniform(0.0, 2.0 * math.pi, count).tolist()
        up, down = (lc.up_bit_per_s * bandwidth).tolist(), (lc.down_bit_per_s * bandwidth).tolist()
        trainable = dc.ram_bytes - dc.runtime_reserve_bytes
        for i in range(count):
            out.append(DeviceProfile(len(out), entry.device_class, entry.link_class, dc.ram_bytes,
                                     dc.runtime_reserve_bytes, dc.sustained_flops_per_s * speed[i], dc.compute_power_w,
                                     dc.battery_j, dc.recharge_w, up[i], down[i], lc.latency_s * latency[i],
                                     lc.loss_prob, lc.duty_cycle, lc.max_frame_payload_bytes, lc.frame_overhead_bytes,
                                     lc.tx_j_per_byte,
                                     BackgroundMemory(dc.background_mean_fraction * trainable,
                                                      dc.background_amplitude_fraction * trainable, period_s,
                                                      phase[i])))
    return out


@pytest.mark.parametrize("seed", [0, 1, 42])
def test_the_arrays_draw_what_one_profile_per_device_drew(seed):
    fleet = sample_fleet_arrays(MIX, 997, np.random.default_rng(seed))
    reference = _profiles_one_by_one(MIX, 997, seed)
    assert [fleet[i] for i in range(997)] == reference == list(fleet) == sample_fleet(MIX, 997,
                                                                                      np.random.default_rng(seed))
    assert [fleet._checked(i) for i in range(0, 997, 7)] == reference[::7]


def test_a_profile_is_made_once_and_only_when_asked_for():
    fleet = sample_fleet_arrays(MIX, 1000, np.random.default_rng(3))
    assert fleet._made == {}
    assert fleet[10] is fleet[10] and list(fleet._made) == [10]
    assert fleet[-1] == fleet[999] and fleet[2:4] == [fleet[2], fleet[3]]
    with pytest.raises(IndexError):
        fleet[1000]


def test_classes_and_free_memory_of_every_device_at_once():
    fleet = sample_fleet_arrays(MIX, 500, np.random.default_rng(5))
    names, codes = fleet.class_codes()
    assert names == sorted({p.device_class for p in fleet}) and [names[c] for c in codes] == [
        p.device_class for p in fleet]
    assert [fleet.device_class_of(i) for i in range(500)] == [p.device_class for p in fleet]
    for t_s in (0, 0.0, 1.5, 900.0, 3599.999, 1e7 + 0.25):
        expected = [max(0, int(p.trainable_bytes - p.background.at(t_s))) for p in fleet]
        assert fleet.free_bytes_at_all(t_s).tolist() == expected


def test_free_memory_in_bulk_does_not_trust_a_sine_that_differs_in_the_last_bits(monkeypatch):
    """Where numpy's sine could move the rounded result, the scalar sine decides: a sine off by a few units in
    the last place changes nothing."""
    fleet = sample_fleet_arrays(MIX, 2000, np.random.default_rng(8))
    expected = fleet.free_bytes_at_all(123.0).tolist()
    sin = np.sin
    monkeypatch.setattr(background_module.np, "sin", lambda x: np.nextafter(np.nextafter(sin(x), 2), 2))
    assert fleet.free_bytes_at_all(123.0).tolist() == expected
    trainable = np.array([10.0, 10.0, 4e9]); mean = np.array([2.5, 0.0, 1e9]); amplitude = np.zeros(3)  # noqa: E702
    assert background_module.free_bytes_many(trainable, mean, amplitude, 60.0, np.zeros(3), 0.0).tolist() == [
        7, 10, 3_000_000_000]


def test_a_bad_draw_is_named_for_the_whole_fleet():
    assert SampledFleet.__len__(sample_fleet_arrays(MIX, 0, np.random.default_rng(0))) == 0
    with pytest.raises(ValueError, match="latency_s"):
        sample_fleet_arrays([MixEntry("rpi4_4gb", "wifi", 1.0, {"latency_s": -1.0})], 3, np.random.default_rng(0))
