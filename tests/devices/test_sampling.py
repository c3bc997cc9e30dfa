"""Sampling a fleet: exact counts, determinism, lognormal spreads, errors, speed."""

import dataclasses
import math

import numpy as np
import pytest

from devices import (
    DEVICE_CLASSES,
    LINK_CLASSES,
    BackgroundMemory,
    DeviceProfile,
    MixEntry,
    largest_remainder_counts,
    sample_fleet,
)

MIX = (MixEntry("phone_mid", "wifi", 0.5), MixEntry("esp32", "lorawan", 0.3),
       MixEntry("rpi4_4gb", "ethernet", 0.2))


def test_largest_remainder_exact():
    assert largest_remainder_counts([0.5, 0.3, 0.2], 10) == [5, 3, 2]
    # quotas 3.5, 2.1, 1.4: floors 3, 2, 1; the one leftover goes to the largest remainder.
    assert largest_remainder_counts([0.5, 0.3, 0.2], 7) == [4, 2, 1]
    # equal remainders: earlier entries first
    assert largest_remainder_counts([1 / 3, 1 / 3, 1 / 3], 2) == [1, 1, 0]
    assert largest_remainder_counts([0.0, 1.0], 5) == [0, 5]
    assert largest_remainder_counts([0.25, 0.75], 0) == [0, 0]


def test_largest_remainder_sums_exactly():
    rng = np.random.default_rng(0)
    for _ in range(200):
        fractions = rng.dirichlet(np.ones(rng.integers(1, 12))).tolist()
        n = int(rng.integers(0, 100_000))
        counts = largest_remainder_counts(fractions, n)
        assert sum(counts) == n
        total = sum(fractions)
        assert all(abs(c - f * n / total) < 1 for c, f in zip(counts, fractions))


def test_counts_ids_and_order():
    fleet = sample_fleet(MIX, 7, np.random.default_rng(0))
    assert [p.device_id for p in fleet] == list(range(7))
    assert [p.device_class for p in fleet] == ["phone_mid"] * 4 + ["esp32"] * 2 + ["rpi4_4gb"]
    assert [p.link_class for p in fleet] == ["wifi"] * 4 + ["lorawan"] * 2 + ["ethernet"]
    assert sample_fleet(MIX, 0, np.random.default_rng(0)) == []


def test_zero_fraction_entry_gets_no_devices():
    mix = (MixEntry("esp32", "wifi", 0.0), MixEntry("mcu_tiny", "ble_gateway", 1.0))
    fleet = sample_fleet(mix, 5, np.random.default_rng(0))
    assert {p.device_class for p in fleet} == {"mcu_tiny"}


def test_same_seed_same_fleet():
    a = sample_fleet(MIX, 500, np.random.default_rng(42))
    b = sample_fleet(MIX, 500, np.random.default_rng(42))
    c = sample_fleet(MIX, 500, np.random.default_rng(43))
    assert a == b
    assert a != c


def test_profile_copies_class_and_link_figures():
    fleet = sample_fleet(MIX, 10, np.random.default_rng(1))
    for p in fleet:
        dc, lc = DEVICE_CLASSES[p.device_class], LINK_CLASSES[p.link_class]
        assert (p.ram_bytes, p.runtime_reserve_bytes) == (dc.ram_bytes, dc.runtime_reserve_bytes)
        assert (p.compute_power_w, p.battery_j, p.recharge_w) == (
            dc.compute_power_w, dc.battery_j, dc.recharge_w)
        assert (p.loss_prob, p.duty_cycle, p.tx_j_per_byte) == (
            lc.loss_prob, lc.duty_cycle, lc.tx_j_per_byte)
        assert (p.max_frame_payload_bytes, p.frame_overhead_bytes) == (
            lc.max_frame_payload_bytes, lc.frame_overhead_bytes)
        trainable = dc.ram_bytes - dc.runtime_reserve_bytes
        assert p.trainable_bytes == trainable
        assert p.background.mean_bytes == dc.background_mean_fraction * trainable
        assert p.background.amplitude_bytes == dc.background_amplitude_fraction * trainable
        assert p.background.period_s == 3600.0
        assert 0.0 <= p.background.phase_rad < 2 * math.pi
        # one bandwidth factor scales both directions
        assert p.up_bit_per_s / p.down_bit_per_s == pytest.approx(
            lc.up_bit_per_s / lc.down_bit_per_s)


def test_lognormal_spreads_have_median_one():
    n = 20_000
    fleet = sample_fleet([MixEntry("phone_mid", "wifi", 1.0)], n, np.random.default_rng(9),
                         background_period_s=600.0)
    dc, lc = DEVICE_CLASSES["phone_mid"], LINK_CLASSES["wifi"]
    cases = [
        (np.array([p.flops_per_s for p in fleet]) / dc.sustained_flops_per_s, dc.flops_sigma),
        (np.array([p.up_bit_per_s for p in fleet]) / lc.up_bit_per_s, lc.bandwidth_sigma),
        (np.array([p.latency_s for p in fleet]) / lc.latency_s, lc.latency_sigma),
    ]
    for ratio, sigma in cases:
        log = np.log(ratio)
        # The sample median of N(0, sigma^2) has sd sqrt(pi / 2) sigma / sqrt(n) (<= 0.0054
        # here); the sample sd has sd sigma / sqrt(2 n) (<= 0.003). Allow 5 of each.
        assert abs(np.median(log)) < 5 * math.sqrt(math.pi / 2) * sigma / math.sqrt(n)
        assert abs(np.std(log) - sigma) < 5 * sigma / math.sqrt(2 * n)
    phases = np.array([p.background.phase_rad for p in fleet])
    assert np.mean(phases) == pytest.approx(math.pi, abs=5 * (2 * math.pi / math.sqrt(12 * n)))
    assert {p.background.period_s for p in fleet} == {600.0}


def test_hundred_thousand_devices():
    # No wall-clock assertion (the project's rule): benchmarks/throughput.py measures speed.
    fleet = sample_fleet(MIX, 100_000, np.random.default_rng(0))
    assert [p.device_id for p in fleet] == list(range(100_000))


def test_custom_catalogs():
    faster = dataclasses.replace(DEVICE_CLASSES["esp32"], name="esp32_measured", efficiency=1.0)
    fleet = sample_fleet([MixEntry("esp32_measured", "wifi", 1.0)], 3, np.random.default_rng(0),
                         device_classes={"esp32_measured": faster})
    assert [p.device_class for p in fleet] == ["esp32_measured"] * 3


def test_fraction_errors():
    with pytest.raises(ValueError, match="fraction"):
        MixEntry("esp32", "wifi", -0.1)
    with pytest.raises(ValueError, match="fraction"):
        sample_fleet([MixEntry("esp32", "wifi", 0.5), MixEntry("mcu_mid", "wifi", 0.4)], 10,
                     np.random.default_rng(0))
    # within the 1e-6 tolerance is accepted, and counts still sum to n
    fleet = sample_fleet([MixEntry("esp32", "wifi", 0.5 + 4e-7),
                          MixEntry("mcu_mid", "wifi", 0.5)], 11, np.random.default_rng(0))
    assert len(fleet) == 11


def test_unknown_names_list_valid_ones():
    with pytest.raises(ValueError, match="toaster") as err:
        sample_fleet([MixEntry("toaster", "wifi", 1.0)], 1, np.random.default_rng(0))
    assert "phone_mid" in str(err.value) and "device_class" in str(err.value)
    with pytest.raises(ValueError, match="carrier_pigeon") as err:
        sample_fleet([MixEntry("esp32", "carrier_pigeon", 1.0)], 1, np.random.default_rng(0))
    assert "lorawan" in str(err.value)


@pytest.mark.parametrize("args, field", [
    (([], 3), "mix"),
    ((MIX, -1), "n_devices"),
    ((MIX, 2.0), "n_devices"),
    ((MIX, 3, None), "rng"),
    ((MIX, 3, np.random.default_rng(0), 0.0), "background_period_s"),
    ((["esp32"], 3), "mix"),
])
def test_argument_errors(args, field):
    args = args + (np.random.default_rng(0),) if len(args) == 2 else args
    with pytest.raises(ValueError, match=field):
        sample_fleet(*args)


def _profile(**changes):
    fields = dict(device_id=0, device_class="esp32", link_class="wifi", ram_bytes=100,
                  runtime_reserve_bytes=10, flops_per_s=1.0, compute_power_w=1.0, battery_j=None,
                  recharge_w=0.0, up_bit_per_s=1.0, down_bit_per_s=1.0, latency_s=0.0,
                  loss_prob=0.0, duty_cycle=1.0, max_frame_payload_bytes=None,
                  frame_overhead_bytes=0, tx_j_per_byte=0.0,
                  background=BackgroundMemory(1.0, 1.0, 1.0, 0.0))
    return DeviceProfile(**{**fields, **changes})


def test_profile_validation():
    assert _profile(device_id=np.int64(3)).device_id == 3  # numpy ints are fine
    for changes, field in [({"flops_per_s": 0.0}, "flops_per_s"),
                           ({"device_id": -1}, "device_id"),
                           ({"runtime_reserve_bytes": 100}, "runtime_reserve_bytes"),
                           ({"loss_prob": 1.0}, "loss_prob"),
                           ({"duty_cycle": 0.0}, "duty_cycle"),
                           ({"battery_j": 0.0}, "battery_j"),
                           ({"latency_s": math.nan}, "latency_s"),
                           ({"up_bit_per_s": "fast"}, "up_bit_per_s"),
                           ({"background": 5.0}, "background")]:
        with pytest.raises(ValueError, match=field):
            _profile(**changes)


def test_link_override_replaces_the_medians_and_keeps_the_draws():
    n, lc, dc = 40, LINK_CLASSES["wifi"], DEVICE_CLASSES["rpi4_4gb"]
    link = {"up_bit_per_s": 2e5, "down_bit_per_s": 3e5, "latency_s": 0.25, "loss_prob": 0.5}
    over = sample_fleet([MixEntry("rpi4_4gb", "wifi", 1.0, link)], n, np.random.default_rng(3))
    plain = sample_fleet([MixEntry("rpi4_4gb", "wifi", 1.0)], n, np.random.default_rng(3))
    rng = np.random.default_rng(3)  # the documented draw order: throughput, bandwidth, latency
    rng.lognormal(0.0, dc.flops_sigma, n)
    bandwidth = rng.lognormal(0.0, lc.bandwidth_sigma, n)
    latency = rng.lognormal(0.0, lc.latency_sigma, n)
    assert [p.up_bit_per_s for p in over] == (2e5 * bandwidth).tolist()
    assert [p.down_bit_per_s for p in over] == (3e5 * bandwidth).tolist()
    assert [p.latency_s for p in over] == (0.25 * latency).tolist()
    assert {p.loss_prob for p in over} == {0.5} and {p.loss_prob for p in plain} == {lc.loss_prob}
    # everything not overridden is the plain fleet's, draw for draw
    same = ("flops_per_s", "duty_cycle", "tx_j_per_byte", "background")
    assert [[getattr(p, f) for f in same] for p in over] == [[getattr(p, f) for f in same] for p in plain]
    spread = sample_fleet([MixEntry("rpi4_4gb", "wifi", 1.0, {"latency_sigma": 0.0,
                                                              "latency_s": 0.1})], n,
                          np.random.default_rng(3))
    assert {p.latency_s for p in spread} == {0.1}


@pytest.mark.parametrize("link, words", [
    ({"duty_cycle": 0.5}, "cannot override 'duty_cycle'"),
    ({"loss_prob": 1.0}, "mix[0].link: loss_prob must be in [0, 1)"),
    ({"up_bit_per_s": -1.0}, "mix[0].link: up_bit_per_s must be finite and > 0"),
])
def test_bad_link_override_names_the_figure(link, words):
    with pytest.raises(ValueError) as info:
        sample_fleet([MixEntry("rpi4_4gb", "wifi", 1.0, link)], 3, np.random.default_rng(0))
    assert words in str(info.value)
