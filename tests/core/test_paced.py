"""``PacedEnvironment`` on a fake wall clock: never past the horizon, polls while it waits, services the
outside world while it runs free. No sleeps: the fake ``poll`` advances the fake clock by its timeout.
Times are binary fractions, so every expected value is exact."""

from __future__ import annotations

import math

import pytest
import simpy

from fleet.core.paced import PacedEnvironment


class FakeWorld:
    """A fake wall clock and the poll that waits on it: each ``poll(timeout_s)`` records the timeout, lets
    ``timeout_s`` of wall time pass and runs what is due then (``arrivals``: wall time -> callback)."""

    def __init__(self) -> None:
        self.now_s = 0.0
        self.polls: list[float] = []
        self.arrivals: dict[float, callable] = {}

    def clock(self) -> float:
        return self.now_s

    def poll(self, timeout_s: float) -> None:
        self.polls.append(timeout_s)
        self.now_s += timeout_s
        for at_s in sorted(a for a in self.arrivals if a <= self.now_s):
            self.arrivals.pop(at_s)()


def _log_at(env: simpy.Environment, times_s, log: list) -> None:
    for t in times_s:
        env.timeout(t).callbacks.append(lambda _e, t=t: log.append(t))


def test_without_a_horizon_it_runs_as_a_plain_environment():
    world = FakeWorld()
    paced, plain = PacedEnvironment(clock=world.clock), simpy.Environment()
    logs = ([], [])
    for env, log in zip((paced, plain), logs):
        def proc(env=env, log=log):
            for delay in (0.5, 0.0, 2.25):
                yield env.timeout(delay)
                log.append(("proc", env.now))
        env.process(proc())
        _log_at(env, (0.5, 3.0, 1.0), log)
        env.run()
    assert logs[0] == logs[1] and paced.now == plain.now == 3.0
    assert world.polls == []  # the fake clock never moved: nothing to service


def test_an_event_waits_until_the_horizon_reaches_it_in_bounded_polls():
    """Horizon = wall time since the start while a real task is pending (it answers at 0.625 s). The event
    at 0.625 s waits in polls of at most ``service_every_s`` and never longer than the gap, then runs at
    once; the one at 0 s runs at once."""
    world = FakeWorld()
    pending = [True]
    env = PacedEnvironment(horizon=lambda: world.now_s if pending else math.inf, poll=world.poll,
                           service_every_s=0.25, clock=world.clock)
    log: list = []
    env.timeout(0.625).callbacks.append(lambda _e: log.append((env.now, world.now_s)) or pending.clear())
    env.timeout(0.0).callbacks.append(lambda _e: log.append((env.now, world.now_s)))
    env.run()
    assert world.polls == [0.25, 0.25, 0.125]
    assert log == [(0.0, 0.0), (0.625, 0.625)]


def test_a_reply_taken_in_while_waiting_runs_before_the_later_event():
    """The poll brings in a reply stamped 0.25 s (scheduled then), while the next event was at 1 s; the
    reply lifts the pending bound and the loop runs free again."""
    world = FakeWorld()
    pending = {"since_s": 0.0}

    def horizon() -> float:
        return math.inf if not pending else world.now_s - pending["since_s"]

    env = PacedEnvironment(poll=world.poll, service_every_s=0.125, clock=world.clock)
    env.pace(horizon, world.poll)
    log: list = []

    def reply() -> None:
        pending.clear()
        env.timeout(world.now_s - env.now).callbacks.append(lambda _e: log.append(("reply", env.now)))

    world.arrivals[0.25] = reply
    _log_at(env, (1.0, 5.0), log)
    env.run()
    assert log == [("reply", 0.25), 1.0, 5.0]
    assert world.polls == [0.125, 0.125]  # then nothing pending: no more waiting
    assert world.now_s == 0.25


def test_it_services_the_outside_world_every_interval_while_running_free():
    """Each event takes 0.5 s of (fake) wall time to process; with ``service_every_s`` 1 s, ``poll(0)`` is
    called after every second event."""
    world = FakeWorld()
    env = PacedEnvironment(poll=world.poll, service_every_s=1.0, clock=world.clock)

    def busy(_event) -> None:
        world.now_s += 0.5

    for t in range(6):
        env.timeout(t).callbacks.append(busy)
    env.run()
    assert world.polls == [0.0, 0.0, 0.0]


def test_with_nothing_scheduled_it_waits_for_the_outside_world_while_a_bound_holds():
    """An empty schedule is not the end while the horizon is finite: the poll may still bring an event."""
    world = FakeWorld()
    held = {"on": True}
    env = PacedEnvironment(horizon=lambda: 0.0 if held["on"] else math.inf, poll=world.poll,
                           service_every_s=0.5, clock=world.clock)
    log: list = []

    def arrive() -> None:
        held["on"] = False
        env.timeout(2.0).callbacks.append(lambda _e: log.append(env.now))

    world.arrivals[1.5] = arrive
    env.run()
    assert log == [2.0] and world.polls == [0.5, 0.5, 0.5]


def test_until_stops_at_the_event_as_a_plain_environment_does():
    world = FakeWorld()
    env = PacedEnvironment(horizon=lambda: world.now_s, poll=world.poll, service_every_s=0.5, clock=world.clock)
    stop = env.timeout(1.0, value="done")
    env.timeout(3.0)
    assert env.run(until=stop) == "done"
    assert env.now == 1.0 and world.now_s == 1.0


def test_an_empty_schedule_with_no_bound_ends_the_run():
    env = PacedEnvironment()
    with pytest.raises(RuntimeError, match="No scheduled events left"):
        env.run(until=env.event())


def test_service_interval_must_be_positive():
    with pytest.raises(ValueError, match="service_every_s"):
        PacedEnvironment(service_every_s=0.0)
