"""The statistics of a sweep: mean, sample standard deviation and a t interval of a figure over seeds.

Pure Python (``math`` only): Student's t quantile is a numeric inverse of its distribution function, which is
the regularized incomplete beta function evaluated by its continued fraction (Lentz's method), so no scipy is
needed. ``t_quantile(0.975, 9)`` is 2.2621571627982; df = 1 and 2 have closed forms that the tests check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["NOISE", "Spread", "betainc", "describe", "t_quantile", "t_sf"]

_EPS = 1e-15
_TINY = 1e-300
_MAX_TERMS = 10_000  # the continued fraction needs about sqrt(df) terms; df = 1e6 takes ~1,000


def _beta_cf(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (converges fast for x < (a+1)/(a+b+2))."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, _MAX_TERMS + 1):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + num / c
            c = c if abs(c) > _TINY else _TINY
            h *= d * c
        if abs(d * c - 1.0) < _EPS:
            return h
    raise ArithmeticError(f"incomplete beta: no convergence for a={a}, b={b}, x={x}")


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), for a, b > 0 and 0 <= x <= 1."""
    if not (a > 0 and b > 0 and 0.0 <= x <= 1.0):
        raise ValueError(f"betainc needs a, b > 0 and 0 <= x <= 1 (got {a}, {b}, {x})")
    if x in (0.0, 1.0):
        return x
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_cf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_cf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom."""
    upper = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return upper if t >= 0 else 1.0 - upper


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` > 0 degrees of freedom (0 < p < 1), to about 1e-12
    relative: bisection on ``t_sf``, which is monotone."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"t quantile: p must be in (0, 1), got {p}")
    if not (df > 0 and math.isfinite(df)):
        raise ValueError(f"t quantile: degrees of freedom must be positive and finite, got {df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    tail = 1.0 - p
    if tail == 0.5:
        return 0.0
    lo, hi = 0.0, 1.0
    while t_sf(hi, df) > tail:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_sf(mid, df) > tail:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * hi:
            break
    return 0.5 * (lo + hi)


#: An sd below this fraction of the mean's magnitude is floating-point noise (seeds that agree exactly, summed
#: in another order) and is reported as 0.
NOISE = 1e-9


@dataclass(frozen=True)
class Spread:
    """A figure over the seeds that have it: ``n`` values, their mean, sample standard deviation (None below
    two values; 0 when it is below ``NOISE`` times the mean's magnitude), the ``level`` two-sided t interval of
    the mean (None below two values; the mean itself when sd is 0), and the extremes. ``half_width`` is the
    t interval's half width before clipping; ``clipped`` says the interval was cut to the figure's physical
    range (``describe``'s ``bounds``), so ``ci_low``/``ci_high`` need not be ``mean ∓ half_width``. Every
    field is finite or None (strict JSON and CSV)."""

    n: int
    mean: float | None
    sd: float | None
    ci_low: float | None
    ci_high: float | None
    min: float | None
    max: float | None
    half_width: float | None = None
    clipped: bool = False


def describe(values, level: float = 0.95, bounds: tuple[float, float] | None = None) -> Spread:
    """The ``Spread`` of ``values``; None, NaN and infinities are left out (they count in no ``n``).

    ``bounds`` (low, high; either may be infinite) is the figure's physical range: the interval is clipped to
    it (never past the mean, should a value lie outside it) and ``clipped`` says so. Values that are all equal
    have exactly that mean and sd 0."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(xs)
    if n == 0:
        return Spread(0, None, None, None, None, None, None)
    lo, hi = min(xs), max(xs)
    mean = lo if lo == hi else math.fsum(xs) / n
    if n == 1:
        return Spread(1, mean, None, None, None, lo, hi)
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    if sd <= NOISE * abs(mean):
        sd = 0.0
    half = t_quantile(0.5 + level / 2.0, n - 1) * sd / math.sqrt(n)
    low, high = mean - half, mean + half
    clipped = False
    if bounds is not None:
        floor, ceiling = min(bounds[0], mean), max(bounds[1], mean)
        if low < floor:
            low, clipped = floor, True
        if high > ceiling:
            high, clipped = ceiling, True
    return Spread(n, mean, sd, low, high, lo, hi, half, clipped)
