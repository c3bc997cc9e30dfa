"""SimPy's loop without the per-event call (``fleet.core.kernel.LoopEnvironment``) and steps on SimPy's own
queue (``fleet.core.steps``): the same order, the same ``run`` semantics."""

from __future__ import annotations

import pytest
import simpy

from fleet.core.kernel import LoopEnvironment
from fleet.core.messages import Leave, Refusal, Task, Update
from fleet.core.steps import NORMAL, URGENT, Step, schedule


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
