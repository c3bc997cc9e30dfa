"""BackgroundMemory: exact values, and the analytic answers checked against a dense grid."""

import math

import numpy as np
import pytest

from devices import BackgroundMemory

GRID_POINTS = 20_001


def test_at_exact_values():
    b = BackgroundMemory(mean_bytes=100.0, amplitude_bytes=40.0, period_s=8.0, phase_rad=0.0)
    assert b.at(0.0) == 100.0
    assert b.at(2.0) == 140.0  # quarter period: crest
    assert b.at(6.0) == 60.0  # three quarters: trough
    np.testing.assert_allclose(b.at(np.array([0.0, 2.0, 6.0])), [100.0, 140.0, 60.0])
    shifted = BackgroundMemory(100.0, 40.0, 8.0, math.pi / 2)
    assert shifted.at(0.0) == 140.0


def test_at_never_negative():
    b = BackgroundMemory(mean_bytes=10.0, amplitude_bytes=30.0, period_s=4.0, phase_rad=0.0)
    assert b.at(3.0) == 0.0  # 10 - 30 clipped
    assert np.all(b.at(np.linspace(0, 8, 1001)) >= 0.0)


def _random_cases(n):
    rng = np.random.default_rng(1234)
    for _ in range(n):
        mean = rng.uniform(0, 1e6)
        amp = rng.uniform(0, 1e6)
        period = rng.uniform(10, 1e4)
        phase = rng.uniform(-10, 10)
        t0 = rng.uniform(-1e4, 1e4)
        t1 = t0 + period * rng.choice([rng.uniform(0, 0.3), rng.uniform(0, 3)])
        yield BackgroundMemory(mean, amp, period, phase), t0, t1, rng


def test_max_over_matches_dense_grid():
    for b, t0, t1, _ in _random_cases(300):
        grid = np.linspace(t0, t1, GRID_POINTS)
        grid_max = float(np.max(b.at(grid)))
        exact = b.max_over(t0, t1)
        # A crest lies at most half a grid step from a grid point: the grid misses at most
        # amplitude * (1 - cos(pi * dt / period)) <= amplitude * (pi * dt / period)^2 / 2.
        dt = (t1 - t0) / (GRID_POINTS - 1)
        slack = b.amplitude_bytes * (math.pi * dt / b.period_s) ** 2 / 2
        assert grid_max <= exact * (1 + 1e-12) + 1e-9
        assert exact - grid_max <= slack + 1e-6


def test_max_over_endpoint_and_crest_cases():
    b = BackgroundMemory(100.0, 40.0, 8.0, 0.0)
    assert b.max_over(0.0, 1.0) == pytest.approx(100 + 40 * math.sin(math.pi / 4))  # rising
    assert b.max_over(0.0, 5.0) == 140.0  # crest at t = 2 inside
    assert b.max_over(9.0, 9.5) == pytest.approx(b.at(9.5))
    assert b.max_over(3.0, 3.0) == b.at(3.0)
    assert BackgroundMemory(7.0, 0.0, 1.0, 0.0).max_over(0.0, 100.0) == 7.0
    with pytest.raises(ValueError, match="t1_s"):
        b.max_over(2.0, 1.0)


def test_first_exceeding_matches_dense_grid():
    checked = 0
    for b, t0, t1, rng in _random_cases(300):
        level = b.mean_bytes + b.amplitude_bytes * rng.uniform(-1.2, 1.2)
        grid = np.linspace(t0, t1, GRID_POINTS)
        values = b.at(grid)
        scale = b.mean_bytes + b.amplitude_bytes
        answer = b.first_exceeding(t0, t1, level)
        if answer is None:
            assert np.all(values <= level + 1e-9 * scale)
            continue
        checked += 1
        assert t0 <= answer < t1
        # Nothing on the grid exceeds the level before the answer...
        before = grid < answer - 1e-9 * b.period_s
        assert np.all(values[before] <= level + 1e-9 * scale)
        # ...the answer is at or before the first grid point that does...
        hits = np.flatnonzero(values > level)
        if hits.size:
            assert answer <= grid[hits[0]] + 1e-9 * b.period_s
        # ...and it is a crossing (use equals the level there) unless it is t0 itself.
        if answer > t0:
            assert b.at(answer) == pytest.approx(level, abs=1e-6 * scale)
            assert b.at(answer + 1e-4 * b.period_s) > level
    assert checked > 100  # the cases exercised the crossing branch


def test_first_exceeding_special_cases():
    b = BackgroundMemory(100.0, 40.0, 8.0, 0.0)  # 100 at t=0, rising to 140 at t=2
    assert b.first_exceeding(0.0, 10.0, 99.0) == 0.0  # already above
    assert b.first_exceeding(0.0, 10.0, -5.0) == 0.0  # use is never below 0
    assert b.first_exceeding(0.0, 10.0, 140.0) is None  # the crest only touches
    assert b.first_exceeding(0.0, 10.0, 100.0) == 0.0  # rising through the level at t0
    assert b.first_exceeding(4.0, 10.0, 100.0) == pytest.approx(8.0)  # next rise, one period on
    assert b.first_exceeding(4.0, 8.0, 100.0) is None  # the crossing at t1 does not count
    assert b.first_exceeding(0.0, 10.0, 100 + 40 * math.sin(math.pi / 4)) == pytest.approx(1.0)
    assert b.first_exceeding(3.0, math.inf, 139.0) > 8.0  # open-ended window
    assert b.first_exceeding(2.0, 2.0, 139.0) == 2.0
    assert b.first_exceeding(2.0, 2.0, 141.0) is None
    flat = BackgroundMemory(50.0, 0.0, 8.0, 0.0)
    assert flat.first_exceeding(0.0, 1e9, 50.0) is None
    assert flat.first_exceeding(0.0, 1e9, 49.0) == 0.0
    with pytest.raises(ValueError, match="t1_s"):
        b.first_exceeding(1.0, 0.0, 10.0)


@pytest.mark.parametrize("kwargs, field", [
    ({"mean_bytes": -1.0}, "mean_bytes"),
    ({"amplitude_bytes": -1.0}, "amplitude_bytes"),
    ({"period_s": 0.0}, "period_s"),
    ({"phase_rad": math.nan}, "phase_rad"),
    ({"mean_bytes": "many"}, "mean_bytes"),
])
def test_invalid_fields(kwargs, field):
    args = {"mean_bytes": 1.0, "amplitude_bytes": 1.0, "period_s": 1.0, "phase_rad": 0.0,
            **kwargs}
    with pytest.raises(ValueError, match=field):
        BackgroundMemory(**args)
