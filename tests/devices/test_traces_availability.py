"""PeriodicIntervals, the timeline of a behaviour trace: exact answers at chosen instants."""

import math

import numpy as np
import pytest

from devices import Availability, Diurnal
from devices.traces import PeriodicIntervals


def test_up_inside_intervals_repeating_every_period():
    # Up on [100, 200) and [300, 400) of every 1000 s.
    p = PeriodicIntervals([100, 300], [200, 400], 1000)
    assert isinstance(p, Availability)
    for t, cause in ((100.0, None), (150.0, None), (199.5, None), (200.0, "offline"), (250.0, "offline"),
                     (99.0, "offline"), (399.0, None), (400.0, "offline"), (1150.0, None), (1250.0, "offline"),
                     (5300.0, None), (-850.0, None), (-750.0, "offline")):
        assert p.unavailable_cause(t) == cause, t


def test_next_interruption_exact():
    p = PeriodicIntervals([100, 300], [200, 400], 1000)
    assert p.next_interruption(150.0, math.inf) == (200.0, "offline")
    assert p.next_interruption(350.0, math.inf) == (400.0, "offline")
    assert p.next_interruption(400.0, math.inf) == (1200.0, "offline")  # strictly after t0, next period
    assert p.next_interruption(250.0, math.inf) == (400.0, "offline")  # asked while off: the next up's end
    assert p.next_interruption(150.0, 200.0) is None  # strictly before t1
    assert p.next_interruption(7150.0, math.inf) == (7200.0, "offline")
    assert p.longest_up_s == 100.0


def test_intervals_joining_across_the_period_are_one_stretch():
    # [0, 100) and [900, 1000): up from 900 to 1100, no interruption at 1000.
    p = PeriodicIntervals([0, 900], [100, 1000], 1000)
    assert p.unavailable_cause(1000.0) is None
    assert p.next_interruption(950.0, math.inf) == (1100.0, "offline")
    assert p.longest_up_s == 200.0


def test_touching_intervals_merge_and_a_full_period_is_always_on():
    p = PeriodicIntervals([0, 50], [50, 100], 100)
    assert p.always_on and p.longest_up_s == math.inf
    assert p.next_interruption(10.0, math.inf) is None
    assert p.unavailable_cause(12345.0) is None
    q = PeriodicIntervals([10, 20], [20, 30], 100)
    assert q.starts_s == (10.0,) and q.ends_s == (30.0,)


@pytest.mark.parametrize("starts, ends, period", [
    ([], [], 10), ([0], [5, 6], 10), ([5], [5], 10), ([0, 3], [4, 6], 10), ([0], [11], 10), ([-1], [2], 10),
    ([0], [1], 0), ([0], [math.nan], 10)])
def test_bad_intervals_are_refused(starts, ends, period):
    with pytest.raises(ValueError):
        PeriodicIntervals(starts, ends, period)


def test_equal_to_the_diurnal_it_writes():
    """A diurnal timeline written as one period of intervals answers as the diurnal does."""
    d = Diurnal(period_s=86_400.0, on_fraction=0.6, phase_s=70_000.0)  # wraps: [0, 35440) and [70000, 86400)
    p = PeriodicIntervals([0.0, 70_000.0], [70_000.0 + 0.6 * 86_400.0 - 86_400.0, 86_400.0], 86_400.0)
    for t in np.random.default_rng(3).uniform(0, 1e6, 500).tolist():
        assert p.unavailable_cause(t) == d.unavailable_cause(t)
        assert p.next_interruption(t, t + 2e5) == d.next_interruption(t, t + 2e5)
