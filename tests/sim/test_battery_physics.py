"""The closed forms behind batteries and energy (``devices.physics``): exact values, the edge cases, arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from devices.physics import (
    battery_empty_after_s,
    battery_level_j,
    compute_energy_j,
    energy_j,
    radio_energy_j,
    recharge_time_s,
)


def test_energy_is_compute_plus_radio():
    assert compute_energy_j(10**6, 2e-6) == pytest.approx(2.0)
    assert radio_energy_j(1500, 1e-3) == pytest.approx(1.5)
    assert energy_j(10**6, 1500, 2e-6, 1e-3) == pytest.approx(compute_energy_j(10**6, 2e-6)
                                                              + radio_energy_j(1500, 1e-3))


def test_a_battery_empties_at_level_over_net_draw():
    assert battery_empty_after_s(10.0, 3.0, 1.0) == 5.0  # 10 J at a net 2 W
    assert battery_empty_after_s(0.0, 3.0, 1.0) == 0.0
    assert battery_empty_after_s(10.0, 1.0, 1.0) == math.inf  # recharge keeps up
    assert battery_empty_after_s(10.0, 0.5, 1.0) == math.inf
    np.testing.assert_array_equal(battery_empty_after_s(np.array([4.0, 4.0]), np.array([2.0, 1.0]), 1.0),
                                  [4.0, math.inf])


def test_recharge_time_and_the_level_it_reaches_agree():
    assert recharge_time_s(0.0, 20.0, 0.5) == 40.0
    assert recharge_time_s(5.0, 2.0, 0.0) == 0.0  # already there, even without recharge power
    assert recharge_time_s(1.0, 2.0, 0.0) == math.inf
    t = recharge_time_s(1.0, 7.5, 0.25)
    assert battery_level_j(1.0, 10.0, 0.25, t) == pytest.approx(7.5)


@pytest.mark.parametrize(("call", "name"), [
    (lambda: battery_empty_after_s(-1.0, 1.0, 0.0), "level_j"),
    (lambda: battery_empty_after_s(1.0, -1.0, 0.0), "draw_w"),
    (lambda: recharge_time_s(1.0, 2.0, -1.0), "recharge_w"),
    (lambda: radio_energy_j(-1, 1e-3), "bytes_moved"),
    (lambda: compute_energy_j(1, -1.0), "joules_per_flop"),
])
def test_bad_input_names_the_parameter(call, name):
    with pytest.raises(ValueError, match=name):
        call()
