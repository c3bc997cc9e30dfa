"""Availability timelines: when a device can work, and when it next stops.

A timeline answers two questions about virtual time (float seconds):

* ``unavailable_cause(t_s)``: None if the device is available at ``t_s``, else why not
  (``'offline'`` for a scheduled absence, ``'failure'`` for a random fault);
* ``next_interruption(t0_s, t1_s)``: the earliest time strictly inside ``(t0_s, t1_s)`` at which
  the device stops being available, with its cause, or None if it does not.

Periods are half-open: a device is available on ``[start, end)`` of each up period, so at an
interruption time ``t`` itself ``unavailable_cause(t)`` already reports the cause. ``t1_s`` may
be ``math.inf``. ``next_interruption`` is meant to be asked at a time the device is available
(a task's start); asked at an unavailable ``t0_s`` it returns the end of the *next* up period.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_right
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from devices._checks import check_finite, check_positive, check_unit_open_closed

OFFLINE = "offline"
FAILURE = "failure"


@runtime_checkable
class Availability(Protocol):
    """What the simulator asks of an availability timeline (see the module docstring)."""

    def unavailable_cause(self, t_s: float) -> str | None: ...

    def next_interruption(self, t0_s: float, t1_s: float) -> tuple[float, str] | None: ...


def _check_window(t0_s: float, t1_s: float) -> None:
    check_finite("t0_s", t0_s)
    if not t1_s >= t0_s:
        raise ValueError(f"t1_s must be >= t0_s, got t0_s={t0_s!r}, t1_s={t1_s!r}")


@dataclass(frozen=True, slots=True)
class AlwaysOn:
    """A device that is always available."""

    def unavailable_cause(self, t_s: float) -> str | None:
        return None

    def next_interruption(self, t0_s: float, t1_s: float) -> tuple[float, str] | None:
        _check_window(t0_s, t1_s)
        return None


@dataclass(frozen=True, slots=True)
class Diurnal:
    """On for ``on_fraction`` of every ``period_s``, off for the rest; cause ``'offline'``.

    Up periods are ``[phase_s + k period_s, phase_s + k period_s + on_fraction period_s)`` for
    every integer ``k``. ``period_s > 0``; ``0 < on_fraction <= 1`` (1 means always on);
    ``phase_s`` any finite time.
    """

    period_s: float
    on_fraction: float
    phase_s: float = 0.0

    def __post_init__(self) -> None:
        check_positive("period_s", self.period_s)
        check_unit_open_closed("on_fraction", self.on_fraction)
        check_finite("phase_s", self.phase_s)

    def unavailable_cause(self, t_s: float) -> str | None:
        if self.on_fraction == 1.0:
            return None
        into_s = (t_s - self.phase_s) % self.period_s
        return None if into_s < self.on_fraction * self.period_s else OFFLINE

    def next_interruption(self, t0_s: float, t1_s: float) -> tuple[float, str] | None:
        _check_window(t0_s, t1_s)
        if self.on_fraction == 1.0:
            return None
        first_end_s = self.phase_s + self.on_fraction * self.period_s
        k = math.floor((t0_s - first_end_s) / self.period_s) + 1
        end_s = first_end_s + k * self.period_s
        if end_s <= t0_s:  # guard against rounding in the floor
            end_s += self.period_s
        elif end_s - self.period_s > t0_s:
            end_s -= self.period_s
        return (end_s, OFFLINE) if end_s < t1_s else None


class RandomFailure:
    """Alternating up and down periods: up ~ Exp(mean ``mtbf_s``), down ~ Exp(mean ``mttr_s``).

    The device is up from ``t = 0`` (and before it). Periods are drawn lazily from a generator
    spawned off ``rng`` at construction, in batches of a fixed schedule (``_FIRST_BATCH`` up and
    down periods, doubling to ``_MAX_BATCH``; each batch draws its up periods, then its down
    periods, and adds their running sum to the last edge), so one ``rng`` gives one timeline,
    and later use of ``rng`` by others does not change it. Cause ``'failure'``.

    Memory is bounded: only the edges after the latest query time are held (a cursor into the
    timeline; at most one batch, 2 x 65,536 floats = 1 MiB), not every past failure and repair.
    Simulation time only moves forward, so queries normally do too; a query earlier than an edge
    already forgotten redraws the timeline from the start (same answers, in time linear in the
    edges before it). Answers therefore do not depend on the order of queries. A query costs
    O(log n) in the edges held, plus the drawing it triggers.
    """

    __slots__ = ("mtbf_s", "mttr_s", "_rng", "_state", "_start", "_edges_s", "_offset", "_forgotten_s",
                 "_batch")

    _FIRST_BATCH = 32
    _MAX_BATCH = 1 << 16

    def __init__(self, mtbf_s: float, mttr_s: float, rng: np.random.Generator) -> None:
        check_positive("mtbf_s", mtbf_s)
        check_positive("mttr_s", mttr_s)
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        child = _child(rng)
        self._setup(mtbf_s, mttr_s, child, child.bit_generator.state)

    @classmethod
    def from_state(cls, mtbf_s: float, mttr_s: float, generator: np.random.Generator,
                   state: dict) -> "RandomFailure":
        """The timeline drawn from the bit-generator ``state`` (what ``rng.spawn(1)[0].bit_generator.state``
        would be for the ``rng`` of the constructor), with ``generator``'s methods: a generator of the same
        kind, which may be shared by many timelines (each sets its own state before drawing). Equal, query for
        query, to ``RandomFailure(mtbf_s, mttr_s, rng)``; it saves building a generator per timeline."""
        timeline = cls.__new__(cls)
        timeline._setup(mtbf_s, mttr_s, generator, state)
        return timeline

    def _setup(self, mtbf_s: float, mttr_s: float, generator: np.random.Generator, state: dict) -> None:
        check_positive("mtbf_s", mtbf_s)
        check_positive("mttr_s", mttr_s)
        self.mtbf_s = float(mtbf_s)
        self.mttr_s = float(mttr_s)
        self._rng = generator
        self._start = state  # where a redraw starts (never changed: states are replaced, not mutated)
        self._restart()

    def __repr__(self) -> str:
        return f"RandomFailure(mtbf_s={self.mtbf_s!r}, mttr_s={self.mttr_s!r})"

    def _restart(self) -> None:
        self._state = self._start
        # Edge number k (k = 0, 1, ...; even: a failure, odd: the repair after it) is held at
        # _edges_s[k - _offset]; the edges before _offset are forgotten, the last at _forgotten_s.
        self._edges_s = array("d")
        self._offset = 0
        self._forgotten_s = -math.inf
        self._batch = self._FIRST_BATCH

    def _grow(self, keep_after_s: float) -> None:
        """Draw the next batch; forget the held edges at or before ``keep_after_s``."""
        n = self._batch
        steps = np.empty(2 * n)
        bits = self._rng.bit_generator
        bits.state = self._state
        steps[0::2] = self._rng.exponential(self.mtbf_s, n)
        steps[1::2] = self._rng.exponential(self.mttr_s, n)
        self._state = bits.state
        start_s = self._edges_s[-1] if self._edges_s else 0.0
        drawn = start_s + np.cumsum(steps)
        cut = bisect_right(self._edges_s, keep_after_s)
        if cut:
            self._forgotten_s = self._edges_s[cut - 1]
            self._offset += cut
            del self._edges_s[:cut]
        self._edges_s.frombytes(drawn.tobytes())
        self._batch = min(2 * n, self._MAX_BATCH)

    def _passed(self, t_s: float) -> int:
        """How many edges are at or before ``t_s``; the edges after it are drawn far enough to be held."""
        if t_s < self._forgotten_s:
            self._restart()
        while not self._edges_s or self._edges_s[-1] <= t_s:
            self._grow(t_s)
        return self._offset + bisect_right(self._edges_s, t_s)

    def _edge(self, k: int, after_s: float) -> float:
        """Edge number ``k``, which lies after ``after_s`` (the time of the query asking for it)."""
        while k - self._offset >= len(self._edges_s):
            self._grow(after_s)
        return self._edges_s[k - self._offset]

    def unavailable_cause(self, t_s: float) -> str | None:
        check_finite("t_s", t_s)
        return None if self._passed(t_s) % 2 == 0 else FAILURE

    def next_interruption(self, t0_s: float, t1_s: float) -> tuple[float, str] | None:
        _check_window(t0_s, t1_s)
        k = self._passed(t0_s)
        if k % 2 == 1:  # down at t0: the next edge is a repair, the failure after it counts
            k += 1
        fail_s = self._edge(k, t0_s)
        return (fail_s, FAILURE) if fail_s < t1_s else None


def _child(rng: np.random.Generator) -> np.random.Generator:
    """A generator of our own, derived from ``rng`` without depending on later use of it."""
    try:
        return rng.spawn(1)[0]  # advances no draws of the parent
    except (TypeError, ValueError, AttributeError):  # a bit generator without a SeedSequence
        return np.random.default_rng(int(rng.integers(2**63)))


@dataclass(frozen=True, slots=True)
class AllOf:
    """Available iff every part is. The cause reported is the first part's (in ``parts`` order).

    ``next_interruption`` is the earliest among the parts' (ties go to the earlier part); it is
    exact when the device is available at ``t0_s``. No parts means always available.
    """

    parts: tuple[Availability, ...]

    def __post_init__(self) -> None:
        parts = tuple(self.parts)
        for i, part in enumerate(parts):
            if not isinstance(part, Availability):
                raise ValueError(f"parts[{i}] is not an Availability: {part!r}")
        object.__setattr__(self, "parts", parts)

    def unavailable_cause(self, t_s: float) -> str | None:
        for part in self.parts:
            cause = part.unavailable_cause(t_s)
            if cause is not None:
                return cause
        return None

    def next_interruption(self, t0_s: float, t1_s: float) -> tuple[float, str] | None:
        _check_window(t0_s, t1_s)
        best: tuple[float, str] | None = None
        for part in self.parts:
            hit = part.next_interruption(t0_s, t1_s if best is None else best[0])
            if hit is not None and (best is None or hit[0] < best[0]):
                best = hit
        return best
