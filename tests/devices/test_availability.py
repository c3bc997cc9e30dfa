"""Availability timelines: Diurnal exactly, RandomFailure statistically and for consistency."""

import math

import numpy as np
import pytest

from devices import AllOf, AlwaysOn, Availability, Diurnal, RandomFailure


def test_always_on():
    a = AlwaysOn()
    assert isinstance(a, Availability)
    assert a.unavailable_cause(123.0) is None
    assert a.next_interruption(0.0, math.inf) is None


def test_diurnal_exact_boundaries():
    # Up on [10 + 100 k, 35 + 100 k), off on [35 + 100 k, 110 + 100 k).
    d = Diurnal(period_s=100.0, on_fraction=0.25, phase_s=10.0)
    assert isinstance(d, Availability)
    assert d.unavailable_cause(10.0) is None
    assert d.unavailable_cause(34.75) is None
    assert d.unavailable_cause(35.0) == "offline"
    assert d.unavailable_cause(9.5) == "offline"
    assert d.unavailable_cause(110.0) is None
    assert d.unavailable_cause(-90.0) is None  # k = -1
    assert d.unavailable_cause(-65.0) == "offline"


def test_diurnal_next_interruption_exact():
    d = Diurnal(period_s=100.0, on_fraction=0.25, phase_s=10.0)
    assert d.next_interruption(12.0, 1000.0) == (35.0, "offline")
    assert d.next_interruption(0.0, 1000.0) == (35.0, "offline")  # asked while off
    assert d.next_interruption(35.0, 1000.0) == (135.0, "offline")  # strictly after t0
    assert d.next_interruption(34.0, 35.0) is None  # strictly before t1
    assert d.next_interruption(34.0, 35.5) == (35.0, "offline")
    assert d.next_interruption(-80.0, 0.0) == (-65.0, "offline")
    assert d.next_interruption(1e6 + 12.0, math.inf) == (1e6 + 35.0, "offline")


def test_diurnal_always_on_when_fraction_one():
    d = Diurnal(period_s=86_400.0, on_fraction=1.0, phase_s=5.0)
    assert d.unavailable_cause(1.0) is None
    assert d.next_interruption(0.0, 1e9) is None


def test_diurnal_day_night():
    day = Diurnal(period_s=86_400.0, on_fraction=0.5, phase_s=3_600.0)
    assert day.unavailable_cause(0.0) == "offline"
    assert day.next_interruption(0.0, 1e6) == (3_600.0 + 43_200.0, "offline")
    grid = np.linspace(0, 10 * 86_400.0, 100_001)[:-1]
    on = np.mean([day.unavailable_cause(float(t)) is None for t in grid])
    assert on == pytest.approx(0.5, abs=1e-4)


@pytest.mark.parametrize("kwargs, field", [
    ({"period_s": 0.0}, "period_s"),
    ({"on_fraction": 0.0}, "on_fraction"),
    ({"on_fraction": 1.5}, "on_fraction"),
    ({"phase_s": math.inf}, "phase_s"),
])
def test_diurnal_invalid(kwargs, field):
    with pytest.raises(ValueError, match=field):
        Diurnal(**{"period_s": 10.0, "on_fraction": 0.5, "phase_s": 0.0, **kwargs})


def test_random_failure_long_run_fraction():
    mtbf, mttr = 100.0, 25.0
    f = RandomFailure(mtbf, mttr, np.random.default_rng(7))
    horizon_s = 1.25e6  # N ~ 10^4 up/down cycles of mean length 125 s
    grid = np.linspace(0.0, horizon_s, 250_001)
    up = np.mean([f.unavailable_cause(float(t)) is None for t in grid])
    # A = mtbf / (mtbf + mttr) = 0.8. By the delta method the estimate's standard deviation is
    # sqrt(((1-A)^2 mtbf^2 + A^2 mttr^2) / N) / (mtbf + mttr) = sqrt(800 / 1e4) / 125 = 0.0023
    # (exponential periods: variance = mean^2). Grid sampling adds far less. 5 sigma: 0.012.
    assert up == pytest.approx(mtbf / (mtbf + mttr), abs=0.012)


def test_random_failure_consistent_in_any_order():
    times = np.random.default_rng(3).uniform(0, 5e4, 500)
    a = RandomFailure(100.0, 25.0, np.random.default_rng(11))
    b = RandomFailure(100.0, 25.0, np.random.default_rng(11))
    forward = [a.unavailable_cause(float(t)) for t in times]
    backward = [b.unavailable_cause(float(t)) for t in times[::-1]][::-1]
    assert forward == backward
    assert forward == [a.unavailable_cause(float(t)) for t in times]  # repeat
    assert ([a.next_interruption(float(t), math.inf) for t in times]
            == [b.next_interruption(float(t), math.inf) for t in times[::-1]][::-1])
    assert {c for c in forward} == {None, "failure"}


def test_random_failure_independent_of_later_parent_use():
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    a = RandomFailure(50.0, 10.0, rng_a)
    b = RandomFailure(50.0, 10.0, rng_b)
    rng_b.normal(size=1000)  # someone else draws from the parent in between
    ts = np.linspace(0, 1e4, 997)
    causes_a = [a.unavailable_cause(float(t)) for t in ts]
    assert causes_a == [b.unavailable_cause(float(t)) for t in ts]


def test_random_failure_next_interruption_agrees_with_cause():
    f = RandomFailure(100.0, 25.0, np.random.default_rng(2))
    t = 0.0
    for _ in range(200):
        hit = f.next_interruption(t, math.inf)
        assert hit is not None and hit[1] == "failure" and hit[0] > t
        fail_s = hit[0]
        assert f.unavailable_cause(fail_s) == "failure"
        if f.unavailable_cause(t) is None:
            # available from t right up to the failure
            probe = np.linspace(t, fail_s, 50, endpoint=False)
            assert all(f.unavailable_cause(float(p)) is None for p in probe)
            assert f.unavailable_cause(math.nextafter(fail_s, 0.0)) is None
        assert f.next_interruption(t, fail_s) is None  # t1 is exclusive
        t = fail_s + 1.0
    assert f.unavailable_cause(-5.0) is None  # up before 0


def test_random_failure_invalid():
    with pytest.raises(ValueError, match="mtbf_s"):
        RandomFailure(0.0, 1.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="mttr_s"):
        RandomFailure(1.0, -1.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="rng"):
        RandomFailure(1.0, 1.0, 42)
    f = RandomFailure(1.0, 1.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="t1_s"):
        f.next_interruption(5.0, 4.0)


def test_all_of_causes_and_earliest_interruption():
    day = Diurnal(period_s=100.0, on_fraction=0.5, phase_s=0.0)  # up [0, 50)
    other = Diurnal(period_s=40.0, on_fraction=0.75, phase_s=0.0)  # up [0, 30), [40, 70) ...
    both = AllOf((day, other))
    assert isinstance(both, Availability)
    assert both.unavailable_cause(10.0) is None
    assert both.unavailable_cause(35.0) == "offline"
    assert both.next_interruption(0.0, 100.0) == (30.0, "offline")
    assert both.next_interruption(40.0, 100.0) == (50.0, "offline")
    assert both.next_interruption(40.0, 50.0) is None


def test_all_of_reports_first_cause_and_ties():
    fail = RandomFailure(10.0, 10.0, np.random.default_rng(1))
    t_fail, _ = fail.next_interruption(0.0, math.inf)
    off = Diurnal(period_s=2 * t_fail, on_fraction=0.5, phase_s=0.0)  # goes off at t_fail too
    assert AllOf((fail, off)).next_interruption(0.0, math.inf) == (t_fail, "failure")
    assert AllOf((off, fail)).next_interruption(0.0, math.inf) == (t_fail, "offline")
    assert AllOf((fail, off)).unavailable_cause(t_fail) == "failure"
    assert AllOf((off, fail)).unavailable_cause(t_fail) == "offline"
    assert AllOf(()).unavailable_cause(1.0) is None
    assert AllOf([AlwaysOn()]).parts == (AlwaysOn(),)
    with pytest.raises(ValueError, match="parts"):
        AllOf((AlwaysOn(), "sometimes"))
