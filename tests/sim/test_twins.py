"""The simulator's scalar twins equal the ``devices.physics`` functions they stand for, bit for bit,
on a grid of inputs (the ``framed_transfer_time_scalar_s`` pattern)."""

from __future__ import annotations

import itertools

from devices import compute_time_s, free_memory_bytes, serialization_time_s
from fleet.sim.twins import compute_time_scalar_s, free_memory_scalar_bytes, serialization_time_scalar_s

FLOPS = [0, 1, 3, 10**6, 4 * 10**9 + 7, 2**53 + 1, 10**15]
RATES = [1.0, 3.3, 5_500.0, 1e9, 7.3e12]
SLOWDOWNS = [1.0, 0.5, 1.0000001, 1.7, 2.0, 13.25]
SIZES = [0, 1, 51, 222, 10_000, 2**31 + 5, 10**12]


def test_compute_time_twin_is_the_devices_formula():
    for flops, rate, slowdown in itertools.product(FLOPS, RATES, SLOWDOWNS):
        assert compute_time_scalar_s(flops, rate, slowdown) == compute_time_s(flops, rate, slowdown)
    for flops, rate in itertools.product(FLOPS, RATES):  # the default: nominal speed
        assert compute_time_scalar_s(flops, rate) == compute_time_s(flops, rate)


def test_free_memory_twin_is_the_devices_formula():
    rams = [2**30, 4 * 2**30 + 3, 512 * 2**10, 8 * 2**30]
    reserves = [0, 2**20, 300 * 2**20 + 1]
    backgrounds = [0.0, 0.4, 1.6, 2**20 + 0.5, 3.9e9, 9e9, 1e12]
    for ram, reserve, background in itertools.product(rams, reserves, backgrounds):
        assert free_memory_scalar_bytes(ram - reserve, background) == free_memory_bytes(ram, reserve, background)


def test_serialization_twin_is_the_devices_formula():
    for size, rate in itertools.product(SIZES, RATES):
        assert serialization_time_scalar_s(size, rate) == serialization_time_s(size, rate)


def test_energy_battery_and_joules_twins_are_the_devices_formulas():
    from devices import battery_level_j, energy_j, joules_per_flop
    from fleet.sim.twins import battery_level_scalar_j, energy_scalar_j, joules_per_flop_scalar

    for flops, moved, jpf, tx in itertools.product(FLOPS, SIZES, [0.0, 1e-12, 3.3e-10], [0.0, 2.3e-6, 1e-3]):
        assert energy_scalar_j(flops, moved, jpf, tx) == energy_j(flops, moved, jpf, tx)
    for power, rate in itertools.product([0, 0.5, 3.0, 15.0], RATES):
        assert joules_per_flop_scalar(power, rate) == joules_per_flop(power, rate)
    for level, capacity, recharge, elapsed in itertools.product([0.0, 0.5, 99.0], [100.0, 6.2e4],
                                                                [0, 0.0, 0.7, 12.0], [0.0, 1.5, 1e9, float("inf")]):
        assert battery_level_scalar_j(level, capacity, recharge, elapsed) == battery_level_j(level, capacity,
                                                                                              recharge, elapsed)
