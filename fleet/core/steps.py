"""Steps: the cheapest thing SimPy's loop can process, in SimPy's own order.

SimPy's queue holds ``(time, priority, eid, event)`` and ``Environment.step`` pops the smallest, sets
``event.callbacks`` to None and calls each callback with the event. A ``Step`` is any object with a
``callbacks`` list and ``_ok = True``: pushed by ``schedule`` exactly as ``Environment.schedule`` pushes an
event (same time arithmetic, priority and next eid), it is processed at exactly the point of the loop
where a ``Timeout``, a granted ``Request`` or a process's ``Initialize`` scheduled at the same moment would
be, without the process, the generator frame and the event classes around it.

So code that replaces ``yield env.timeout(d)`` in a process by ``schedule(env, step, d)`` in a callback
keeps every event's place in the loop, and with it every equal-time order, as long as it schedules the
same things at the same moments. And a callback whose last act is to schedule a step that the loop would
pop next (``is_next``) may run it at once instead, setting the clock to its time and taking its eid, under
an environment whose loop allows it (``LoopEnvironment.fuses``): nothing can come between the two, so
nothing changes but the push and the pop saved. ``fleet.sim.chain`` runs a simulated task this way; its tests hold its
event log equal, byte for byte, to the process-per-task reference.
"""

from __future__ import annotations

from heapq import heappush

import simpy

__all__ = ["NORMAL", "URGENT", "Step", "is_next", "schedule", "schedule_at"]

URGENT = 0  # simpy.events.URGENT: a process's Initialize, an Interruption
NORMAL = 1  # simpy.events.NORMAL: timeouts, succeeded events, resource grants


class Step:
    """Base of objects processed by SimPy's loop as events: ``callbacks`` is set before each ``schedule``,
    which sets ``key``, the step's place in the loop (time, priority, eid).

    An object may be scheduled again once processed (``callbacks`` is None then), never twice at once."""

    __slots__ = ("callbacks", "key")
    _ok = True  # Environment.step reads it to tell a failed event


def schedule(env: simpy.Environment, step: Step, delay: float = 0, priority: int = NORMAL) -> None:
    """Put ``step`` on ``env``'s queue as ``env.schedule(step, priority, delay)`` would (same time, same eid
    counter); the loop will call ``step.callbacks``."""
    t, eid = env._now + delay, next(env._eid)
    step.key = (t, priority, eid)
    heappush(env._queue, (t, priority, eid, step))


def schedule_at(env: simpy.Environment, step: Step, key: tuple) -> None:
    """Put ``step`` on ``env``'s queue at ``key``, a place (time, priority, eid) taken earlier with
    ``env._eid`` and not yet passed by the loop: it is processed where an event scheduled then would be."""
    step.key = key
    heappush(env._queue, (*key, step))


def is_next(env: simpy.Environment, t: float, priority: int = NORMAL) -> bool:
    """Whether an event scheduled now at time ``t`` with ``priority`` would be the next one ``env``'s loop
    pops: nothing on the queue is earlier, or at ``t`` with a priority as urgent (a new eid is the largest,
    so it loses every tie)."""
    queue = env._queue
    if not queue:
        return True
    head = queue[0]
    return head[0] > t or (head[0] == t and head[1] > priority)
