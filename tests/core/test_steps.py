"""SimPy's loop without the per-event call (``fleet.core.kernel.LoopEnvironment``) and steps on SimPy's own
queue (``fleet.core.steps``): the same order, the same ``run`` semantics."""

from __future__ import annotations

import pytest
import simpy

from fleet.core.kernel import LoopEnvironment
from fleet.core.messages import Leave, Refusal, Task, Update
from fleet.core.paced import PacedEnvironment
from fleet.core.steps import NORMAL, URGENT, Step, is_next, schedule


def _script(env, log):
    """Processes, timeouts at equal times, a condition, an interrupt, a failing event that is defused."""
    def worker(name, delays):
        for d in delays:
            yield env.timeout(d)
            log.append((env.now, name))

    def sleeper():
        try:
            yield env.timeout(10)
        except simpy.Interrupt as exc:
            log.append((env.now, "interrupted", exc.cause))

    def boss(victim):
        yield env.timeout(1.5) | env.timeout(3)
        victim.interrupt("stop")
        bad = env.event()
        bad.fail(ValueError("x"))
        bad.defused = True
        log.append((env.now, "boss"))

    env.process(worker("a", [1, 1, 0.5]))
    env.process(worker("b", [2, 0.5, 0]))
    env.process(boss(env.process(sleeper())))


@pytest.mark.parametrize("until", [None, 2.5, "event"])
def test_the_loop_runs_what_simpy_runs_in_the_order_simpy_runs_it(until):
    logs = []
    for cls in (simpy.Environment, LoopEnvironment):
        env, log = cls(), []
        _script(env, log)
        stop = env.timeout(2.0, value="v") if until == "event" else until
        value = env.run(until=stop)
        logs.append((log, env.now, value))
    assert logs[0] == logs[1]


def test_the_loop_raises_a_failed_event_and_an_until_that_never_comes():
    env = LoopEnvironment()
    env.event().fail(KeyError("k"))
    with pytest.raises(KeyError):
        env.run()
    env = LoopEnvironment()
    with pytest.raises(RuntimeError, match="No scheduled events left"):
        env.run(until=env.event())
    with pytest.raises(ValueError):
        LoopEnvironment(initial_time=5).run(until=3)


def test_a_step_takes_the_place_of_the_event_scheduled_at_the_same_moment():
    env, order = simpy.Environment(), []

    class Mark(Step):
        __slots__ = ("name",)

    def mark(name, delay, priority=NORMAL):
        step = Mark()
        step.name, step.callbacks = name, [lambda s: order.append(s.name)]
        schedule(env, step, delay, priority)
        return step

    env.timeout(1).callbacks.append(lambda e: order.append("timeout-1"))
    first = mark("step-1", 1)
    env.timeout(1).callbacks.append(lambda e: order.append("timeout-1b"))
    mark("urgent-1", 1, URGENT)
    env.run()
    assert order == ["urgent-1", "timeout-1", "step-1", "timeout-1b"]
    assert first.key[:2] == (1, NORMAL) and first.callbacks is None


def test_is_next_says_whether_the_loop_would_pop_a_new_event_first():
    env = simpy.Environment()
    assert is_next(env, 5.0)  # an empty queue
    env.timeout(2)  # (2, NORMAL, eid 0)
    assert is_next(env, 1.5) and is_next(env, 1.5, URGENT)
    assert not is_next(env, 2.0)  # a tie at the same priority: the older eid wins
    assert is_next(env, 2.0, URGENT)  # more urgent at the same time
    assert not is_next(env, 2.5, URGENT)
    env.schedule(env.event(), URGENT, 2)  # (2, URGENT, eid 1) is now the head
    assert not is_next(env, 2.0, URGENT) and is_next(env, 1.999)


def test_a_step_run_at_once_where_is_next_allows_keeps_the_order_of_one_scheduled():
    """A callback that schedules its successor as its last act, either way: the same order, the same clock."""
    def trace(fuse):
        env, order = LoopEnvironment(), []

        class Hop(Step):
            __slots__ = ("name", "left")

        def hop(step):
            order.append((env.now, step.name, step.left))
            if step.left:
                step.left -= 1
                t = env._now + 1.0
                if fuse and is_next(env, t):
                    next(env._eid)  # the eid the push would have taken
                    env._now = t
                    hop(step)
                    return
                step.callbacks = [hop]
                schedule(env, step, 1.0)

        for name, start in (("a", 0.0), ("b", 2.5), ("c", 2.0)):
            step = Hop()
            step.name, step.left, step.callbacks = name, 4, [hop]
            schedule(env, step, start)
        env.timeout(3.0).callbacks.append(lambda e: order.append((env.now, "timeout", None)))
        env.run()
        return order, env.now, next(env._eid)

    assert trace(True) == trace(False)


def test_only_the_plain_loop_lets_a_callback_run_the_next_event_itself():
    assert LoopEnvironment.fuses is True
    assert not getattr(PacedEnvironment(), "fuses", False)  # it waits for wall time between events
    assert not getattr(simpy.Environment(), "fuses", False)


def test_messages_made_through_their_slots_are_the_frozen_dataclasses_they_were():
    task = Task(5, 3, 0, 0, "train", 5, 32, 10**8, 10**9, 10**6, None, 10**6)
    same = Task(task_id=5, device=3, round_index=0, model_version=0, phase="train", local_steps=5, batch_size=32,
                peak_memory_bytes=10**8, flops=10**9, bytes_up=10**6, deadline_s=None, payload_bytes=10**6)
    assert task == same and hash(task) == hash(same) and task.mode == "" and task.architecture == ()
    with pytest.raises(AttributeError):
        task.task_id = 1
    with pytest.raises(TypeError):
        Update(1, 2, 3)
    assert Refusal(1, 2, 3, "memory", 4, 5).free_bytes == 5 and Leave(1, 2, 3, "offline").cause == "offline"


@pytest.mark.parametrize("young", [700, 0, 250_000])
def test_the_loop_tunes_the_collector_only_while_it_runs(young):
    """Inside the loop the set-up is frozen and the youngest generation collected every ``GC_YOUNG_OBJECTS``
    allocations (a larger threshold kept, 0 = off kept off); afterwards both are as they were, and so is
    a freeze the caller made itself."""
    import gc

    from fleet.core.kernel import GC_YOUNG_OBJECTS

    saved = gc.get_threshold()
    gc.set_threshold(young, 10, 10)
    try:
        seen = []
        env = LoopEnvironment()
        env.timeout(1).callbacks.append(lambda _e: seen.append((gc.get_threshold(), gc.get_freeze_count() > 0)))
        env.run()
        assert seen == [((max(young, GC_YOUNG_OBJECTS) if young else 0, 10, 10), True)]
        assert gc.get_threshold() == (young, 10, 10) and gc.get_freeze_count() == 0
        gc.freeze()
        env = LoopEnvironment()
        env.timeout(1)
        with pytest.raises(RuntimeError):
            env.run(until=env.event())  # a run that ends in an error puts the settings back too
        assert gc.get_threshold() == (young, 10, 10) and gc.get_freeze_count() > 0  # the caller's freeze kept
    finally:
        gc.unfreeze()
        gc.set_threshold(*saved)
