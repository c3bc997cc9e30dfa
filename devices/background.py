"""Background memory use of one device: a deterministic sinusoid in virtual time.

Other software on a device (the OS page cache, other apps, sensor buffers) uses memory that a
training task cannot have. ``BackgroundMemory`` models it as

    at(t) = max(0, mean_bytes + amplitude_bytes * sin(2 pi t / period_s + phase_rad))

so the simulator can ask exact questions (the largest use over a window, the first moment use
rises past a level) analytically instead of polling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from devices._checks import check_finite, check_finite_nonneg, check_positive, scalar_or_array

_TWO_PI = 2.0 * math.pi


@dataclass(frozen=True, slots=True)
class BackgroundMemory:
    """Background memory in bytes as a function of virtual time in seconds.

    ``mean_bytes`` and ``amplitude_bytes`` are ``>= 0``; ``period_s > 0``; ``phase_rad`` any
    finite angle. When the amplitude exceeds the mean the troughs are clipped at 0.
    """

    mean_bytes: float
    amplitude_bytes: float
    period_s: float
    phase_rad: float

    def __post_init__(self) -> None:
        try:  # the common case, cheaply (a fleet builds one per device)
            if (0 <= self.mean_bytes < math.inf and 0 <= self.amplitude_bytes < math.inf
                    and 0 < self.period_s < math.inf and math.isfinite(self.phase_rad)):
                return
        except (TypeError, ValueError):
            pass  # not plain numbers: the named checks below explain
        check_finite_nonneg("mean_bytes", self.mean_bytes)
        check_finite_nonneg("amplitude_bytes", self.amplitude_bytes)
        check_positive("period_s", self.period_s)
        check_finite("phase_rad", self.phase_rad)

    def _angle(self, t_s: Any) -> Any:
        return _TWO_PI * np.asarray(t_s, float) / self.period_s + self.phase_rad

    def at(self, t_s: Any) -> Any:
        """Bytes in use at ``t_s`` (scalar or array), never below 0."""
        if type(t_s) is float or type(t_s) is int:  # the simulator's hot path: plain math
            angle = _TWO_PI * t_s / self.period_s + self.phase_rad
            return max(self.mean_bytes + self.amplitude_bytes * math.sin(angle), 0.0)
        use = self.mean_bytes + self.amplitude_bytes * np.sin(self._angle(t_s))
        return scalar_or_array(np.maximum(use, 0.0))

    def max_over(self, t0_s: float, t1_s: float) -> float:
        """Largest use over the closed window ``[t0_s, t1_s]`` (exact: endpoints and crests).

        Raises ``ValueError`` when ``t1_s < t0_s``.
        """
        _check_window(t0_s, t1_s)
        ends = max(self.at(t0_s), self.at(t1_s))
        if self.amplitude_bytes == 0.0:
            return ends
        # Crests sit where the angle is pi/2 + 2 pi k; find the first one at or after t0.
        k = math.ceil((float(self._angle(t0_s)) - math.pi / 2) / _TWO_PI)
        crest_s = (math.pi / 2 + _TWO_PI * k - self.phase_rad) * self.period_s / _TWO_PI
        if crest_s <= t1_s:
            return max(ends, self.mean_bytes + self.amplitude_bytes)
        return ends

    def first_exceeding(self, t0_s: float, t1_s: float, level_bytes: float) -> float | None:
        """Earliest time in ``[t0_s, t1_s]`` at which use is above ``level_bytes``, else None.

        "Earliest" is the infimum of the set where ``at(t) > level_bytes``: when use rises
        through the level at ``t*`` the answer is ``t*`` itself (where use equals the level),
        exact up to float rounding. If use already exceeds the level at ``t0_s`` the answer is
        ``t0_s``. A crossing exactly at ``t1_s`` does not count (use does not exceed the level
        inside the window). ``t1_s`` may be ``math.inf``. Raises ``ValueError`` when
        ``t1_s < t0_s``.
        """
        _check_window(t0_s, t1_s, open_ended=True)
        check_finite("level_bytes", level_bytes)
        return self.first_exceeding_unchecked(t0_s, t1_s, level_bytes)

    def first_exceeding_unchecked(self, t0_s: float, t1_s: float, level_bytes: float) -> float | None:
        """``first_exceeding`` without its checks, for Python floats the caller vouches for (the simulator's
        hot path: a task's start and end, and a level from checked fields); same formula, same result."""
        if t0_s == t1_s:
            return t0_s if self.at(t0_s) > level_bytes else None
        if level_bytes < 0.0:
            return t0_s  # use is never below 0
        a = self.amplitude_bytes
        if a == 0.0:
            return t0_s if self.mean_bytes > level_bytes else None
        s = (level_bytes - self.mean_bytes) / a  # exceed <=> sin(angle) > s
        if s >= 1.0:
            return None
        if s < -1.0:
            return t0_s
        # sin(angle) > s on the open arcs (alpha, pi - alpha) + 2 pi k, alpha = asin(s).
        alpha = math.asin(s)
        arc = math.pi - 2.0 * alpha
        into = (_TWO_PI * t0_s / self.period_s + self.phase_rad - alpha) % _TWO_PI  # angle past the last arc start
        if into < arc:
            return t0_s
        entry_s = t0_s + (_TWO_PI - into) * self.period_s / _TWO_PI
        return entry_s if entry_s < t1_s else None


def free_bytes_many(trainable_bytes: np.ndarray, mean_bytes: np.ndarray, amplitude_bytes: np.ndarray,
                    period_s: float, phase_rad: np.ndarray, t_s: float) -> np.ndarray:
    """Free memory at one time ``t_s`` for many devices (int64): ``max(0, int(trainable - at(t_s)))``
    with ``at`` a ``BackgroundMemory(mean, amplitude, period_s, phase)`` per element.

    Equal, element by element, to the scalar path a simulated device takes (``at`` on a Python float and
    ``fleet.sim.twins.free_memory_scalar_bytes``): the angle is computed with the same operations in the
    same order, and numpy's sine, which may differ from ``math.sin`` in the last bits on some machines, is
    trusted only where such a difference cannot move the rounded result; the few values within 64 units in
    the last place of an integer are recomputed with ``math.sin``.
    """
    angle = _TWO_PI * t_s / period_s + phase_rad
    use = mean_bytes + amplitude_bytes * np.sin(angle)
    x = trainable_bytes - np.maximum(use, 0.0)
    tol = 2.0 ** -46 * (np.abs(trainable_bytes) + np.abs(mean_bytes) + np.abs(amplitude_bytes))
    for i in np.flatnonzero(np.abs(x - np.rint(x)) <= tol).tolist():
        a = float(angle[i]) if np.ndim(angle) else float(angle)
        background = max(float(mean_bytes[i]) + float(amplitude_bytes[i]) * math.sin(a), 0.0)
        x[i] = float(trainable_bytes[i]) - background
    return np.maximum(np.trunc(x), 0.0).astype(np.int64)


def _check_window(t0_s: float, t1_s: float, open_ended: bool = False) -> None:
    check_finite("t0_s", t0_s)
    if not (open_ended and t1_s == math.inf):
        check_finite("t1_s", t1_s)
    if not t1_s >= t0_s:
        raise ValueError(f"t1_s must be >= t0_s, got t0_s={t0_s!r}, t1_s={t1_s!r}")
