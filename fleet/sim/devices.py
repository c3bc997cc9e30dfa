"""Simulated devices: the device side of the protocol, driven by ``devices/`` physics.

A task that reaches a device runs as one SimPy process (``SimulatedDevices._run``):

1. **Gates**, in order, at arrival time ``t``: availability (``offline`` / ``failure``), memory
   (the cost model's peak demand against ``ram - reserve - background(t)``), the device's FLOP
   budget (``flops``), its battery (``battery``), and, when the task has a deadline, whether the
   expected compute and upload time can make it (``deadline``). A gated task is refused.
2. **Compute** for ``flops / (flops_per_s / slowdown)`` seconds, ``slowdown`` drawn per task
   (``exp|N(0, slowdown_sigma)|``, thermal and background load). The first interruption in that
   window is found analytically, not by polling: the availability timeline going down
   (``offline`` / ``failure``) or background memory rising past what the task leaves free (an
   OOM, cause ``memory``).
3. **Upload** the update through the ``DeviceLink``, in the same process.

A device that can still talk (memory, FLOP, battery, deadline gates; an OOM) sends a ``Refusal``.
A device that went silent (offline, failed) cannot: the server learns of it from missed heartbeats,
modelled as a ``Leave`` notice ``failure_detection_s`` after the fact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from devices import (
    AllOf,
    Availability,
    DeviceProfile,
    Diurnal,
    battery_level_j,
    energy_j,
    framed_transfer_time_scalar_s,
    joules_per_flop,
)
from fleet.core.kernel import Kernel
from fleet.core.messages import Leave, Refusal, Task, Update
from fleet.core.transport import Delivery, DeviceLink
from fleet.sim.twins import compute_time_scalar_s, free_memory_scalar_bytes


@dataclass(frozen=True, slots=True)
class DeviceRules:
    """Behaviour shared by all simulated devices of a run (scenario section ``devices``)."""

    slowdown_sigma: float = 0.25
    flop_budget_flops: float | None = None
    failure_detection_s: float = 30.0
    refuse_hopeless: bool = True


class _DeviceState:
    """The mutable part of one device: battery, spent FLOPs, spent energy."""

    __slots__ = ("battery_j", "battery_at_s", "flops_spent", "energy_spent_j")

    def __init__(self, battery_j: float | None) -> None:
        self.battery_j = battery_j
        self.battery_at_s = 0.0
        self.flops_spent = 0
        self.energy_spent_j = 0.0


class SimulatedDevices:
    """All simulated devices of a run, attached to a ``DeviceLink`` (the simulated network).

    ``flops_spent_total`` counts the FLOPs devices computed, fleet-wide (interrupted work pro rata)."""

    def __init__(
        self,
        kernel: Kernel,
        link: DeviceLink,
        profiles: Sequence[DeviceProfile],
        availability: Sequence[Availability],
        initial_battery_j: Sequence[float | None],
        rules: DeviceRules,
    ) -> None:
        self._env = kernel.env
        self._record = kernel.recorder.record
        self._link = link
        self._profiles = profiles
        self._availability = availability
        self._rules = rules
        self._state = [_DeviceState(b) for b in initial_battery_j]
        self._j_per_flop = [joules_per_flop(p.compute_power_w, p.flops_per_s) for p in profiles]
        self._slowdown_draws = kernel.rng.device_draws("slowdown", "normal", len(profiles))
        self.flops_spent_total = 0
        link.attach_devices(self._on_message)

    def _on_message(self, msg, delivery: Delivery):
        """A task continues, in the delivering process, as the device's work on it."""
        if isinstance(msg, Task):
            return self._run(msg, delivery)
        return None

    def free_memory_bytes(self, device: int, t_s: float) -> int:
        p = self._profiles[device]
        return free_memory_scalar_bytes(p.trainable_bytes, p.background.at(t_s))

    def battery_j(self, device: int, t_s: float) -> float | None:
        state, p = self._state[device], self._profiles[device]
        if state.battery_j is None:
            return None
        return battery_level_j(state.battery_j, p.battery_j, p.recharge_w, t_s - state.battery_at_s)

    def energy_spent_j(self, device: int) -> float:
        """Joules ``device`` spent on tasks, battery or not: compute and radio (``devices.physics.energy_j`` of
        the task's FLOPs and its download plus upload bytes), an interrupted task's pro rata."""
        return self._state[device].energy_spent_j

    def _spend_energy(self, device: int, t_s: float, joules: float) -> None:
        if joules == 0.0:
            return
        state = self._state[device]
        state.energy_spent_j += joules
        level = self.battery_j(device, t_s)
        if level is not None:
            state.battery_j, state.battery_at_s = max(0.0, level - joules), t_s

    def can_ever_complete(self, task: Task, dispatched_s: float) -> bool:
        """False when ``task``'s device can never complete a task like it (same demand, and the same time
        between dispatch and deadline), whenever it arrives: its peak memory exceeds the device's memory
        even at the background's trough; the FLOPs exceed what is left of the FLOP budget (spending only
        grows); the energy exceeds the battery's capacity, or its charge now when it never recharges; the
        compute time at full speed exceeds the longest time the device stays online; or (with
        ``refuse_hopeless``) the deadline falls before the fastest arrival (link latency) plus the
        expected compute and upload. True means the device may yet complete it."""
        dev = task.device
        p, rules = self._profiles[dev], self._rules
        bg = p.background
        if task.peak_memory_bytes > int(p.trainable_bytes - max(0.0, bg.mean_bytes - bg.amplitude_bytes)):
            return False
        if (rules.flop_budget_flops is not None
                and self._state[dev].flops_spent + task.flops > rules.flop_budget_flops):
            return False
        if p.battery_j is not None:
            joules = energy_j(task.flops, task.payload_bytes + task.bytes_up, self._j_per_flop[dev],
                              p.tx_j_per_byte)
            if joules > p.battery_j or (p.recharge_w == 0 and self.battery_j(dev, self._env.now) < joules):
                return False
        if compute_time_scalar_s(task.flops, p.flops_per_s) > _longest_up_s(self._availability[dev]):
            return False
        if rules.refuse_hopeless and task.deadline_s is not None:
            expected_s = (compute_time_scalar_s(task.flops, p.flops_per_s)
                          + self._expected_upload_s(p, task.bytes_up))
            if dispatched_s + p.latency_s + expected_s > task.deadline_s:
                return False
        return True

    def _expected_upload_s(self, p: DeviceProfile, bytes_up: int) -> float:
        return p.latency_s + framed_transfer_time_scalar_s(bytes_up, p.up_bit_per_s, p.duty_cycle,
                                                           p.max_frame_payload_bytes,
                                                           p.frame_overhead_bytes)

    def _gate(self, task: Task, now: float, free: int) -> tuple[str | None, float]:
        """The first gate ``task`` fails at ``now`` (or None), and the task's energy in joules."""
        dev = task.device
        p = self._profiles[dev]
        cause = self._availability[dev].unavailable_cause(now)
        if cause is not None:
            return cause, 0.0
        if task.peak_memory_bytes > free:
            return "memory", 0.0
        rules = self._rules
        if (rules.flop_budget_flops is not None
                and self._state[dev].flops_spent + task.flops > rules.flop_budget_flops):
            return "flops", 0.0
        joules = energy_j(task.flops, task.payload_bytes + task.bytes_up, self._j_per_flop[dev], p.tx_j_per_byte)
        if p.battery_j is not None and self.battery_j(dev, now) < joules:
            return "battery", joules
        if rules.refuse_hopeless and task.deadline_s is not None:
            expected_s = (compute_time_scalar_s(task.flops, p.flops_per_s)
                          + self._expected_upload_s(p, task.bytes_up))
            if now + expected_s > task.deadline_s:
                return "deadline", joules
        return None, joules

    def _run(self, task: Task, down: Delivery):
        env, dev = self._env, task.device
        p = self._profiles[dev]
        now = env.now
        free = self.free_memory_bytes(dev, now)
        cause, joules = self._gate(task, now, free)
        if cause is not None:
            self._record(now, "refusal", task.round_index, dev, task.task_id, cause,
                         demand_bytes=task.peak_memory_bytes, free_bytes=free)
            if cause in ("offline", "failure"):
                self._link.report_silence(Leave(dev, task.task_id, task.round_index, cause),
                                          self._rules.failure_detection_s)
            else:
                yield from self._link.upload(Refusal(task.task_id, dev, task.round_index, cause,
                                                     task.peak_memory_bytes, free))
            return

        sigma = self._rules.slowdown_sigma
        slowdown = math.exp(abs(sigma * self._slowdown_draws.next(dev))) if sigma > 0 else 1.0
        compute_s = compute_time_scalar_s(task.flops, p.flops_per_s, slowdown)
        end_s = now + compute_s
        stop = self._availability[dev].next_interruption(now, end_s)
        oom_s = p.background.first_exceeding(now, end_s,
                                             p.trainable_bytes - task.peak_memory_bytes)
        if oom_s is not None and (stop is None or oom_s < stop[0]):
            stop = (oom_s, "memory")
        if stop is not None:
            stop_s, cause = stop
            yield env.timeout(stop_s - now)
            self._spend_energy(dev, stop_s, joules * (stop_s - now) / compute_s)
            self.flops_spent_total += int(task.flops * (stop_s - now) / compute_s)
            self._record(stop_s, "dropout", task.round_index, dev, task.task_id, cause,
                         demand_bytes=task.peak_memory_bytes,
                         free_bytes=self.free_memory_bytes(dev, stop_s),
                         compute_s=stop_s - now)
            if cause == "memory":
                yield from self._link.upload(Refusal(task.task_id, dev, task.round_index, cause,
                                                     task.peak_memory_bytes, 0))
            else:
                self._link.report_silence(Leave(dev, task.task_id, task.round_index, cause),
                                          self._rules.failure_detection_s)
            return

        yield env.timeout(compute_s)
        self._spend_energy(dev, env.now, joules)
        self._state[dev].flops_spent += task.flops
        self.flops_spent_total += task.flops
        update = Update(task.task_id, dev, task.round_index, task.model_version, compute_s,
                        down.link_s, down.queue_s, task.bytes_up)
        yield from self._link.upload(update)


def _longest_up_s(availability: Availability) -> float:
    """The longest stretch ``availability`` can stay up (inf when unbounded, as for random failures)."""
    if isinstance(availability, Diurnal):
        return math.inf if availability.on_fraction == 1.0 else availability.on_fraction * availability.period_s
    if isinstance(availability, AllOf):
        return min((_longest_up_s(part) for part in availability.parts), default=math.inf)
    return math.inf
