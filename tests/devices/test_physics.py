"""Physics: exact values from hand calculation, array behaviour, and named errors."""

import math

import numpy as np
import pytest

from devices import (
    battery_level_j,
    compute_time_s,
    energy_j,
    fits_memory,
    framed_transfer_time_s,
    free_memory_bytes,
    joules_per_flop,
    serialization_time_s,
)


def test_compute_time_exact():
    assert compute_time_s(3e9, 1.5e9) == 2.0
    assert compute_time_s(3e9, 1.5e9, slowdown=2.0) == 4.0
    assert compute_time_s(0, 1.0) == 0.0
    assert isinstance(compute_time_s(1, 1), float)


def test_compute_time_arrays_broadcast():
    out = compute_time_s(np.array([1e9, 2e9]), np.array([1e9, 4e9]), np.array([1.0, 2.0]))
    np.testing.assert_array_equal(out, [1.0, 1.0])


@pytest.mark.parametrize("args, field", [
    ((-1.0, 1.0, 1.0), "flops"),
    ((1.0, 0.0, 1.0), "flops_per_s"),
    ((1.0, -5.0, 1.0), "flops_per_s"),
    ((1.0, 1.0, 0.0), "slowdown"),
    ((float("nan"), 1.0, 1.0), "flops"),
    ((np.array([1.0, -1.0]), 1.0, 1.0), "flops"),
])
def test_compute_time_errors(args, field):
    with pytest.raises(ValueError, match=field):
        compute_time_s(*args)


def test_free_memory_floor_clamp_and_type():
    assert free_memory_bytes(1000, 300, 200.5) == 499  # 499.5 rounded down
    assert isinstance(free_memory_bytes(1000, 300, 200.5), int)
    assert free_memory_bytes(1000, 300, 800.0) == 0  # never negative
    out = free_memory_bytes(np.array([1000, 2000]), 100, np.array([0.0, 2500.0]))
    np.testing.assert_array_equal(out, [900, 0])
    assert out.dtype == np.int64
    with pytest.raises(ValueError, match="background_bytes"):
        free_memory_bytes(1000, 0, -1.0)
    with pytest.raises(ValueError, match="runtime_reserve_bytes"):
        free_memory_bytes(1000, -1, 0.0)


def test_fits_memory_boundary():
    assert fits_memory(500, 500) is True
    assert fits_memory(501, 500) is False
    np.testing.assert_array_equal(fits_memory(np.array([1, 2, 3]), 2), [True, True, False])
    with pytest.raises(ValueError, match="demand_bytes"):
        fits_memory(-1, 5)


def test_energy_and_joules_per_flop_exact():
    assert joules_per_flop(10.0, 1e10) == 1e-9
    assert energy_j(2e9, 1000, 0.5e-9, 1e-6) == pytest.approx(1.0 + 1e-3, rel=1e-15)
    assert energy_j(0, 0, 1.0, 1.0) == 0.0
    with pytest.raises(ValueError, match="sustained_flops_per_s"):
        joules_per_flop(1.0, 0.0)
    with pytest.raises(ValueError, match="tx_j_per_byte"):
        energy_j(1, 1, 1e-9, -1.0)


def test_serialization_is_si_and_8_bits_per_byte():
    assert serialization_time_s(1_000_000, 8e6) == 1.0  # 1 MB at 8 Mbit/s
    assert serialization_time_s(1000, 1000) == 8.0  # 1 kB at 1 kbit/s: 1000-based
    with pytest.raises(ValueError, match="bit_per_s"):
        serialization_time_s(10, 0)
    with pytest.raises(ValueError, match="size_bytes"):
        serialization_time_s(-1, 10)


def test_lorawan_one_megabyte_exact():
    # 1 MB over LoRaWAN DR5 (5.5 kbit/s), 242 B payload + 13 B MAC header per frame, 1 % duty.
    # Frames: ceil(1e6 / 242) = 4133 (4132 full, the last carries 1e6 - 4132 * 242 = 56 B).
    # Bytes on air: 1e6 + 4133 * 13 = 1_053_729, i.e. 8_429_832 bit of airtime.
    # Each frame but the last is followed by 99x its airtime of silence; the last has 69 B.
    # Total = (8_429_832 * 100 - 8 * 69 * 99) / 5500 = 842_928_552 / 5500 s = 42.57 h.
    t = framed_transfer_time_s(1_000_000, 5500.0, 0.01, 242, 13)
    assert t == pytest.approx(842_928_552 / 5500, rel=1e-12)
    assert 42.5 < t / 3600 < 42.6
    # Without MAC headers: (8e6 * 100 - 8 * 56 * 99) / 5500 s = 40.40 h: the "about 40 hours".
    t0 = framed_transfer_time_s(1_000_000, 5500.0, 0.01, 242, 0)
    assert t0 == pytest.approx(799_955_648 / 5500, rel=1e-12)
    assert 40.3 < t0 / 3600 < 40.5
    # Airtime alone: 8e6 / 5500 s = 24.2 min, the reference's "about 24 minutes".
    assert framed_transfer_time_s(1_000_000, 5500.0, 1.0, 242, 0) == pytest.approx(8e6 / 5500)


def test_framed_equals_serialization_without_framing():
    for size in (0, 1, 999, 123_456):
        assert framed_transfer_time_s(size, 1e6, 1.0, None, 0) == serialization_time_s(size, 1e6)
    # One frame only, so no silence is ever owed, whatever the duty cycle.
    assert framed_transfer_time_s(500, 1e3, 0.01, None, 0) == 4.0


def test_framed_edge_cases():
    # Exactly two full frames: one silence of 99 x one frame's airtime (255 B = 2040 bit).
    assert framed_transfer_time_s(484, 1000.0, 0.01, 242, 13) == pytest.approx(
        (2 * 2040 + 99 * 2040) / 1000)
    # An empty message still sends one header-only frame.
    assert framed_transfer_time_s(0, 1000.0, 0.01, 242, 13) == pytest.approx(0.104)
    # Duty cycle 1: airtime only, headers included.
    assert framed_transfer_time_s(243, 8.0, 1.0, 242, 1) == 245.0


def test_framed_arrays_match_scalars():
    sizes = np.array([0, 1, 241, 242, 243, 10_000])
    rates = np.array([5500.0, 250.0, 5500.0, 1e3, 5500.0, 2e3])
    out = framed_transfer_time_s(sizes, rates, 0.01, 242, 13)
    expected = [framed_transfer_time_s(int(s), float(r), 0.01, 242, 13)
                for s, r in zip(sizes, rates)]
    np.testing.assert_allclose(out, expected, rtol=1e-15)


@pytest.mark.parametrize("kwargs, field", [
    ({"duty_cycle": 0.0}, "duty_cycle"),
    ({"duty_cycle": 1.5}, "duty_cycle"),
    ({"max_frame_payload_bytes": 0}, "max_frame_payload_bytes"),
    ({"max_frame_payload_bytes": 2.5}, "max_frame_payload_bytes"),
    ({"frame_overhead_bytes": -1}, "frame_overhead_bytes"),
    ({"bit_per_s": 0.0}, "bit_per_s"),
    ({"size_bytes": -3}, "size_bytes"),
])
def test_framed_errors(kwargs, field):
    args = {"size_bytes": 10, "bit_per_s": 100.0, "duty_cycle": 0.5,
            "max_frame_payload_bytes": 4, "frame_overhead_bytes": 1, **kwargs}
    with pytest.raises(ValueError, match=field):
        framed_transfer_time_s(**args)


def test_battery_level():
    assert battery_level_j(100.0, 1000.0, 2.0, 50.0) == 200.0
    assert battery_level_j(900.0, 1000.0, 2.0, 500.0) == 1000.0  # capped
    assert battery_level_j(0.0, 1000.0, 0.0, math.inf) == 0.0  # no recharge, forever
    assert battery_level_j(0.0, 1000.0, 1.0, math.inf) == 1000.0
    np.testing.assert_array_equal(
        battery_level_j(np.array([0.0, 10.0]), 20.0, 1.0, np.array([5.0, 50.0])), [5.0, 20.0])


@pytest.mark.parametrize("args, field", [
    ((-1.0, 10.0, 0.0, 1.0), "level_j"),
    ((11.0, 10.0, 0.0, 1.0), "level_j"),
    ((1.0, 0.0, 0.0, 1.0), "capacity_j"),
    ((1.0, 10.0, -1.0, 1.0), "recharge_w"),
    ((1.0, 10.0, 1.0, -1.0), "elapsed_s"),
])
def test_battery_errors(args, field):
    with pytest.raises(ValueError, match=field):
        battery_level_j(*args)


def test_scalar_framed_transfer_equals_the_checked_array_form():
    import numpy as np

    from devices import framed_transfer_time_s, framed_transfer_time_scalar_s

    rng = np.random.default_rng(0)
    for size in [0, 1, 241, 242, 243, 484, 10_000, *rng.integers(0, 10**7, 50).tolist()]:
        for max_payload, overhead in [(None, 0), (None, 13), (242, 13), (51, 13), (1, 0)]:
            for dc in (1.0, 0.01, 0.5):
                expected = framed_transfer_time_s(size, 5_500.0, dc, max_payload, overhead)
                got = framed_transfer_time_scalar_s(size, 5_500.0, dc, max_payload, overhead)
                assert got == pytest.approx(expected, rel=1e-12), (size, max_payload, dc)
