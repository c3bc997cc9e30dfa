"""The simulation kernel: a SimPy environment, seeded RNG streams (``fleet.core.rng``) and the event
recorder (``fleet.core.recorder``), one of each per run."""

from __future__ import annotations

import gc
from heapq import heappop

import simpy
from simpy.core import EmptySchedule, StopSimulation
from simpy.events import URGENT, Event, EventPriority

from fleet.core.recorder import EVENT_COLUMNS, EventRecorder
from fleet.core.rng import FLEET_WIDE, PURPOSES, DeviceDraws, RngStreams

__all__ = ["Kernel", "LoopEnvironment", "EVENT_COLUMNS", "EventRecorder", "FLEET_WIDE", "PURPOSES", "DeviceDraws",
           "RngStreams"]


GC_YOUNG_OBJECTS = 100_000  # allocations between collections of the youngest generation while the loop runs


class LoopEnvironment(simpy.Environment):
    """``simpy.Environment`` whose ``run`` processes events in one loop of its own instead of a call to
    ``step()`` per event: the same events in the same order with the same effects (``step``'s body, inlined),
    a little less work per event. Like ``simpy.rt``, it overrides one method; ``step`` is SimPy's.

    ``fuses``: nothing but this loop pops the queue, so a callback whose last act is to schedule the event the
    loop would pop next may process it at once instead (``fleet.core.steps.is_next``). An environment that
    waits between events (``fleet.core.paced``) does not say so.

    While ``run`` loops, the garbage collector is told two things (and its settings are put back when ``run``
    returns). Every object made before the loop is frozen (``gc.freeze``), so a full collection does not walk
    the set-up again (the fleet, numpy's and torch's modules); they are unfrozen afterwards, so a cycle among
    them is collected then, not never. And the youngest generation is collected every ``GC_YOUNG_OBJECTS``
    allocations instead of every 700: a task's objects (its run, messages, queue entries) live across
    hundreds of other tasks' steps, so at 700 each collection found them alive, promoted them and walked them
    again in the older generations (measured in ``docs/benchmarks.md``, "Timing-only throughput"). Reference
    counting frees them as before; only cyclic garbage waits longer."""

    fuses = True

    def run(self, until=None):
        """``simpy.Environment.run``: until the queue is empty, until the time ``until``, or until the event
        ``until`` is processed (its value is returned)."""
        if until is not None:
            if not isinstance(until, Event):
                at = until if isinstance(until, int) else float(until)
                if at <= self.now:
                    raise ValueError(f"until ({at}) must be greater than the current simulation time")
                until = Event(self)
                until._ok = True
                until._value = None
                self.schedule(until, URGENT, at - self.now)
            elif until.callbacks is None:
                return until.value
            until.callbacks.append(StopSimulation.callback)
        frozen = gc.get_freeze_count() == 0  # a caller that froze already keeps its own freeze
        if frozen:
            gc.freeze()
        thresholds = gc.get_threshold()
        if thresholds[0]:  # 0: the caller turned automatic collection off; leave it off
            gc.set_threshold(max(thresholds[0], GC_YOUNG_OBJECTS), *thresholds[1:])
        try:
            self._loop()
        except StopSimulation as exc:
            return exc.args[0]
        except EmptySchedule:
            if until is not None:
                assert not until.triggered
                raise RuntimeError(f'No scheduled events left but "until" event was not triggered: {until}') \
                    from None
        finally:
            gc.set_threshold(*thresholds)
            if frozen:
                gc.unfreeze()
        return None

    def _loop(self) -> None:
        queue = self._queue
        while True:
            try:
                self._now, _, _, event = heappop(queue)
            except IndexError:
                raise EmptySchedule from None
            callbacks, event.callbacks = event.callbacks, None
            try:
                for callback in callbacks:
                    callback(event)
            except StopSimulation:
                event.callbacks = callbacks[callbacks.index(callback) + 1:]
                self.schedule(event, EventPriority(-1))
                raise
            if not event._ok and not hasattr(event, "_defused"):
                exc = type(event._value)(*event._value.args)
                exc.__cause__ = event._value
                raise exc


class Kernel:
    """The run's clock and its sources of randomness and record: one per simulation.

    ``env`` is the clock: a ``LoopEnvironment`` (SimPy's, with a tighter ``run``) by default, or one that
    paces virtual time (``fleet.core.paced.PacedEnvironment``) when real devices take part."""

    def __init__(self, seed: int, env: simpy.Environment | None = None) -> None:
        self.env = LoopEnvironment() if env is None else env
        self.rng = RngStreams(seed)
        self.recorder = EventRecorder()
