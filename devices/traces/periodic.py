"""``PeriodicIntervals``: the availability timeline of a FedScale behaviour trace.

It lives beside the trace readers rather than in ``devices.availability`` (whose other timelines are the
mix's) and keeps that module's contract (half-open up periods, cause ``'offline'``).
"""

from __future__ import annotations

import math
from bisect import bisect_right

from devices._checks import check_finite, check_positive
from devices.availability import OFFLINE, _check_window

__all__ = ["PeriodicIntervals"]


class PeriodicIntervals:
    """Up on ``[starts_s[i] + k period_s, ends_s[i] + k period_s)`` for every integer ``k``; cause ``'offline'``.

    The timeline of a FedScale behaviour trace, which FedScale reads modulo its ``finish_time``
    (``ClientMetadata.is_active``: ``norm_time = cur_time % finish_time``; docs/traces.md). Intervals are
    sorted, non-empty, non-overlapping (touching ones merge) and inside ``[0, period_s]``; ``period_s > 0``.
    An interval ending at ``period_s`` and one starting at 0 join across the period boundary, so that boundary
    is no interruption. ``longest_up_s`` is the longest stretch the device stays up (inf if never down).
    """

    __slots__ = ("period_s", "starts_s", "ends_s", "_stops_s", "longest_up_s")

    def __init__(self, starts_s, ends_s, period_s: float) -> None:
        check_positive("period_s", period_s)
        starts, ends = [float(s) for s in starts_s], [float(e) for e in ends_s]
        if not starts or len(starts) != len(ends):
            raise ValueError(f"starts_s and ends_s must be non-empty and of one length, got {len(starts)} and "
                             f"{len(ends)}")
        merged: list[list[float]] = []
        for i, (start, end) in enumerate(zip(starts, ends)):
            check_finite("starts_s", start)
            check_finite("ends_s", end)
            if not 0.0 <= start < end <= period_s:
                raise ValueError(f"interval {i} must satisfy 0 <= start < end <= period_s, got [{start!r}, {end!r}) "
                                 f"with period_s {period_s!r}")
            if merged and start < merged[-1][1]:
                raise ValueError(f"intervals {i - 1} and {i} overlap or are out of order")
            if merged and start == merged[-1][1]:
                merged[-1][1] = end
            else:
                merged.append([start, end])
        self.period_s = float(period_s)
        self.starts_s = tuple(m[0] for m in merged)
        self.ends_s = tuple(m[1] for m in merged)
        wraps = self.starts_s[0] == 0.0 and self.ends_s[-1] == self.period_s
        # the ends that are interruptions: every end but one at period_s followed by a start at 0
        self._stops_s = self.ends_s[:-1] if wraps else self.ends_s
        lengths = [e - s for s, e in zip(self.starts_s, self.ends_s)]
        if wraps and len(merged) == 1:
            self.longest_up_s = math.inf
        else:
            if wraps:  # the last and the first are one stretch
                lengths = [lengths[0] + lengths[-1], *lengths[1:-1]]
            self.longest_up_s = max(lengths)

    @property
    def always_on(self) -> bool:
        """True when the intervals cover the whole period (the device is never down)."""
        return not self._stops_s

    def __repr__(self) -> str:
        return f"PeriodicIntervals(starts_s={self.starts_s!r}, ends_s={self.ends_s!r}, period_s={self.period_s!r})"

    def _split(self, t_s: float) -> tuple[float, float]:
        """(the start of the period holding ``t_s``, the time into it), into-time in ``[0, period_s)``."""
        k = math.floor(t_s / self.period_s)
        base = k * self.period_s
        into = t_s - base
        if into < 0.0:  # rounding in the floor
            base -= self.period_s
            into = t_s - base
        elif into >= self.period_s:
            base += self.period_s
            into = t_s - base
        return base, into

    def unavailable_cause(self, t_s: float) -> str | None:
        check_finite("t_s", t_s)
        _, into = self._split(t_s)
        i = bisect_right(self.starts_s, into) - 1
        return None if i >= 0 and into < self.ends_s[i] else OFFLINE

    def next_interruption(self, t0_s: float, t1_s: float) -> tuple[float, str] | None:
        _check_window(t0_s, t1_s)
        if not self._stops_s:
            return None
        base, into = self._split(t0_s)
        j = bisect_right(self._stops_s, into)
        stop_s = base + self._stops_s[j] if j < len(self._stops_s) else base + self.period_s + self._stops_s[0]
        if stop_s <= t0_s:  # rounding in base + offset: the next stop is one step further
            j += 1
            stop_s = (base + self._stops_s[j] if j < len(self._stops_s)
                      else base + self.period_s + self._stops_s[j - len(self._stops_s)])
        return (stop_s, OFFLINE) if stop_s < t1_s else None
