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
3. **Upload** the update through the ``DeviceLink``, in the same process. The network asks
   ``upload_stop`` when the update gets the channel: the availability timeline going down from the
   upload's start to the end of its airtime, or the battery running flat during the airtime, cuts it
   (``upload_cut``): the update is lost, a ``dropout`` with that cause, the energy spent so far charged.

Energy (docs/energy.md; the ledger and the battery: ``fleet.sim.battery``): the compute joules
(``devices.physics.compute_energy_j``) and the received download (``radio_energy_j`` of its frame) are
charged when the compute ends (pro rata of the compute when it is interrupted); the upload's transmitted
bytes (every attempt's frame) when its airtime ends.
The battery gate weighs the task's nominal energy (its payloads, no frame headers or retries) against
the charge; when the charge cannot cover what is really spent, the battery runs flat: a
``battery_flat`` row, the task lost (cause ``battery``), and the device silent until it has recharged
to ``devices.catalog.REJOIN_FRACTION`` of its capacity (a ``battery_back`` row then).

A device that can still talk (memory, FLOP, battery, deadline gates; an OOM) sends a ``Refusal``.
A device that went silent (offline, failed, its battery flat) cannot: the server learns of it from
missed heartbeats, modelled as a ``Leave`` notice ``failure_detection_s`` after the fact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from devices import (
    AllOf,
    AlwaysOn,
    Availability,
    DeviceProfile,
    Diurnal,
    framed_transfer_time_scalar_s,
)
from fleet.core.kernel import Kernel
from fleet.core.messages import Leave, Refusal, Task, Update
from fleet.core.transport import Delivery, DeviceLink
from fleet.sim.battery import DeviceState, charge, go_flat, upload_flat_s
from fleet.sim.twins import battery_level_scalar_j, compute_time_scalar_s, energy_scalar_j, free_memory_scalar_bytes

if TYPE_CHECKING:
    from fleet.sim.chain import TaskRun

_SILENT = frozenset(("offline", "failure"))  # causes after which a device cannot tell the server itself


@dataclass(frozen=True, slots=True)
class DeviceRules:
    """Behaviour shared by all simulated devices of a run (scenario section ``devices``)."""

    slowdown_sigma: float = 0.25
    flop_budget_flops: float | None = None
    failure_detection_s: float = 30.0
    refuse_hopeless: bool = True


class SimulatedDevices:
    """All simulated devices of a run, attached to a ``DeviceLink`` (the simulated network).

    ``profiles``, ``availability`` and ``initial_battery_j`` are sequences by device id (lists, or the
    lazy arrays of ``devices.SampledFleet`` and ``fleet.sim.population``): a device's are read when it
    receives its first task, or when asked about. ``flops_spent_total`` counts the FLOPs devices
    computed, fleet-wide (interrupted work pro rata)."""

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
        self._initial_battery_j = initial_battery_j
        self._rules = rules
        self._state: dict[int, DeviceState] = {}
        self._slowdown_draws = kernel.rng.device_draws("slowdown", "normal", len(profiles))
        self.flops_spent_total = 0
        self._on_stopped, self._on_computed = [self._stopped], [self._computed]  # a TaskRun's callbacks
        link.attach_devices(self._on_message)
        attach = getattr(link, "attach_simulated", None)
        if attach is not None:
            attach(self)

    def _state_of(self, device: int) -> DeviceState:
        state = self._state.get(device)
        if state is None:
            state = self._state[device] = DeviceState(self._profiles[device], self._availability[device],
                                                       self._initial_battery_j[device])
        return state

    def _on_message(self, msg, delivery: Delivery):
        """A task continues, in the delivering process, as the device's work on it."""
        if isinstance(msg, Task):
            return self._run(msg, delivery)
        return None

    def free_memory_bytes(self, device: int, t_s: float) -> int:
        p = self._profiles[device]
        return free_memory_scalar_bytes(p.trainable_bytes, p.background.at(t_s))

    def battery_j(self, device: int, t_s: float) -> float | None:
        state = self._state.get(device)
        if state is None:
            level, at_s, p = self._initial_battery_j[device], 0.0, self._profiles[device]
        else:
            level, at_s, p = state.battery_j, state.battery_at_s, state.profile
        if level is None:
            return None
        return battery_level_scalar_j(level, p.battery_j, p.recharge_w, t_s - at_s)

    def energy_spent_j(self, device: int) -> float:
        """Joules ``device`` spent on tasks, battery or not: compute and radio (module docstring), an
        interrupted compute's pro rata, a cut upload's airtime so far; what a flat battery could not give
        is not spent."""
        state = self._state.get(device)
        return 0.0 if state is None else state.energy_spent_j

    def energy_by_device(self) -> dict[int, float]:
        """``energy_spent_j`` of every device that received a task (the others spent nothing), by id."""
        return {device: state.energy_spent_j for device, state in sorted(self._state.items())}

    def energy_parts_by_device(self) -> dict[int, tuple[float, float, float, int]]:
        """Per device that received a task, by id: (compute joules, radio joules received, radio joules
        sent, times its battery ran flat). The three joules sum to ``energy_spent_j``."""
        return {device: (s.compute_j, s.rx_j, s.tx_j, s.flats) for device, s in sorted(self._state.items())}

    def _spend(self, state: DeviceState, t_s: float, task: Task | Update, compute_j: float, rx_j: float,
               tx_j: float, flat: bool = False) -> bool:
        """Charge the parts at ``t_s`` (``fleet.sim.battery.charge``); when the battery runs flat on them, write
        its ``battery_flat`` row and schedule its ``battery_back`` row (never, without recharge power). True
        when it ran flat."""
        if state.battery_j is None:  # mains: what ``charge`` does without a battery, inline (twice a task)
            state.energy_spent_j += compute_j + rx_j + tx_j
            state.compute_j += compute_j
            state.rx_j += rx_j
            state.tx_j += tx_j
            return False
        if not charge(state, t_s, compute_j, rx_j, tx_j, flat):
            return False
        back_s = go_flat(state, t_s)
        dev = task.device
        self._record(t_s, "battery_flat", task.round_index, dev, task.task_id, "battery")
        if math.isfinite(back_s):
            env = self._env

            def back(_event, record=self._record):
                record(env.now, "battery_back", None, dev)
            env.timeout(back_s - t_s).callbacks.append(back)
        return True

    def can_ever_complete(self, task: Task, dispatched_s: float) -> bool:
        """False when ``task``'s device can never complete a task like it (same demand, and the same time
        between dispatch and deadline), whenever it arrives: its peak memory exceeds the device's memory
        even at the background's trough; the FLOPs exceed what is left of the FLOP budget (spending only
        grows); the energy exceeds the battery's capacity, or its charge now when it never recharges; the
        compute time at full speed exceeds the longest time the device stays online; or (with
        ``refuse_hopeless``) the deadline falls before the fastest arrival (link latency) plus the
        expected compute and upload. True means the device may yet complete it."""
        dev = task.device
        state, rules = self._state_of(dev), self._rules
        p = state.profile
        bg = p.background
        if task.peak_memory_bytes > int(p.trainable_bytes - max(0.0, bg.mean_bytes - bg.amplitude_bytes)):
            return False
        if rules.flop_budget_flops is not None and state.flops_spent + task.flops > rules.flop_budget_flops:
            return False
        if p.battery_j is not None:
            joules = energy_scalar_j(task.flops, task.payload_bytes + task.bytes_up, state.j_per_flop,
                                     p.tx_j_per_byte)
            if joules > p.battery_j or (p.recharge_w == 0 and self.battery_j(dev, self._env.now) < joules):
                return False
        if compute_time_scalar_s(task.flops, p.flops_per_s) > _longest_up_s(state.availability):
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

    # --- a task, in the order the reference process runs it; the chain (``TaskRun``) calls the same ---
    def _gate(self, task: Task, state: DeviceState, now: float, free: int) -> str | None:
        """The first gate ``task`` fails at ``now``, or None."""
        p = state.profile
        if state.cuttable:  # AlwaysOn without a battery is never unavailable nor flat
            cause = state.availability.unavailable_cause(now)
            if cause is not None:
                return cause
            if now < state.flat_until_s:
                return "battery"
        if task.peak_memory_bytes > free:
            return "memory"
        rules = self._rules
        if rules.flop_budget_flops is not None and state.flops_spent + task.flops > rules.flop_budget_flops:
            return "flops"
        if p.battery_j is not None:
            joules = energy_scalar_j(task.flops, task.payload_bytes + task.bytes_up, state.j_per_flop,
                                     p.tx_j_per_byte)
            if self.battery_j(task.device, now) < joules:
                return "battery"
        if rules.refuse_hopeless and task.deadline_s is not None:
            expected_s = (compute_time_scalar_s(task.flops, p.flops_per_s)
                          + self._expected_upload_s(p, task.bytes_up))
            if now + expected_s > task.deadline_s:
                return "deadline"
        return None

    def _refused(self, task: Task, now: float) -> tuple[DeviceState, str | None, Refusal | Leave | None]:
        """At the task's arrival: its device's state, the gate it failed (None), and what the device says when
        refused (a ``Refusal`` to upload, or a ``Leave`` the server hears by silence; the refusal is recorded
        here)."""
        dev = task.device
        state = self._state.get(dev)
        if state is None:
            state = self._state_of(dev)
        free = free_memory_scalar_bytes(state.trainable_bytes, state.profile.background.at(now))
        cause = self._gate(task, state, now, free)
        if cause is None:
            return state, None, None
        self._record(now, "refusal", task.round_index, dev, task.task_id, cause,
                     demand_bytes=task.peak_memory_bytes, free_bytes=free)
        if cause in _SILENT or now < state.flat_until_s:  # gone silent, or its battery flat
            return state, cause, Leave(dev, task.task_id, task.round_index, cause)
        return state, cause, Refusal(task.task_id, dev, task.round_index, cause, task.peak_memory_bytes, free)

    def _compute_plan(self, task: Task, state: DeviceState, now: float) -> tuple[float, tuple[float, str] | None]:
        """The task's compute time (a slowdown drawn) and its first interruption (time, cause), if any."""
        p = state.profile
        sigma = self._rules.slowdown_sigma
        slowdown = math.exp(abs(sigma * self._slowdown_draws.next(task.device))) if sigma > 0 else 1.0
        compute_s = compute_time_scalar_s(task.flops, p.flops_per_s, slowdown)
        end_s = now + compute_s
        availability = state.availability
        stop = None if type(availability) is AlwaysOn else availability.next_interruption(now, end_s)
        oom_s = p.background.first_exceeding_unchecked(now, end_s, state.trainable_bytes - task.peak_memory_bytes)
        if oom_s is not None and (stop is None or oom_s < stop[0]):
            stop = (oom_s, "memory")
        return compute_s, stop

    def _interrupted(self, task: Task, state: DeviceState, t0: float, stop_s: float, cause: str,
                     compute_s: float, down_bytes: int) -> Refusal | Leave:
        """The task stopped at ``stop_s``: spend its compute's share and the download received, record the
        dropout; what the device says."""
        dev = task.device
        p = state.profile
        self._spend(state, stop_s, task, float(task.flops) * state.j_per_flop * (stop_s - t0) / compute_s,
                    float(down_bytes) * p.tx_j_per_byte, 0.0)
        self.flops_spent_total += int(task.flops * (stop_s - t0) / compute_s)
        self._record(stop_s, "dropout", task.round_index, dev, task.task_id, cause,
                     demand_bytes=task.peak_memory_bytes, free_bytes=self.free_memory_bytes(dev, stop_s),
                     compute_s=stop_s - t0)
        if cause == "memory":
            return Refusal(task.task_id, dev, task.round_index, cause, task.peak_memory_bytes, 0)
        return Leave(dev, task.task_id, task.round_index, cause)

    def _completed(self, task: Task, state: DeviceState, compute_s: float, down_link_s: float,
                   down_queue_s: float, down_bytes: int) -> Update | Leave:
        """The task computed in full: spend its compute and download energy and its FLOPs; the update to
        upload, or the ``Leave`` of a battery that ran flat on them (the update lost)."""
        now = self._env._now  # env.now without the property's call (every task)
        state.flops_spent += task.flops
        self.flops_spent_total += task.flops
        if self._spend(state, now, task, float(task.flops) * state.j_per_flop,
                       float(down_bytes) * state.profile.tx_j_per_byte, 0.0):
            return self._lost(task, now, "battery", compute_s)
        return Update(task.task_id, task.device, task.round_index, task.model_version, compute_s,
                      down_link_s, down_queue_s, task.bytes_up)

    def _lost(self, task: Task | Update, t_s: float, cause: str, compute_s: float) -> Leave:
        self._record(t_s, "dropout", task.round_index, task.device, task.task_id, cause, compute_s=compute_s)
        return Leave(task.device, task.task_id, task.round_index, cause)

    # --- the upload of an update: the network (``SimulatedNetwork``, process or chain) calls these ---------
    @property
    def failure_detection_s(self) -> float:
        return self._rules.failure_detection_s

    def upload_stop(self, msg: Update, sent_s: float, grant_s: float, hold_s: float,
                    tx_bytes: int) -> tuple[float, str] | None:
        """When the upload of ``msg``, sent at ``sent_s`` and holding the channel from ``grant_s`` for
        ``hold_s`` (every attempt's airtime, ``tx_bytes`` in all), is cut, and why: the availability timeline
        going down in ``[sent_s, grant_s + hold_s)`` (while it waited for the channel: found at ``grant_s``),
        or the battery, drawing ``tx_bytes`` joules' worth evenly over the airtime, running flat in it;
        None when it is sent in full."""
        state = self._state[msg.device]
        end_s = grant_s + hold_s
        availability = state.availability
        stop = None if type(availability) is AlwaysOn else availability.next_interruption(sent_s, end_s)
        if stop is not None and stop[0] < grant_s:
            stop = (grant_s, stop[1])
        if state.battery_j is not None:
            flat_s = upload_flat_s(state, grant_s, hold_s, float(tx_bytes) * state.profile.tx_j_per_byte)
            if flat_s is not None and (stop is None or flat_s < stop[0]):
                stop = (flat_s, "battery")
        return stop

    def upload_aired(self, msg: Update, tx_bytes: int) -> None:
        """The upload's airtime ended (delivered or lost on the link): charge its transmitted bytes."""
        state = self._state[msg.device]
        tx_j = float(tx_bytes) * state.profile.tx_j_per_byte
        if state.battery_j is None:  # ``_spend``'s mains case with no compute nor received part (every task):
            state.energy_spent_j += tx_j  # adding 0.0 changes no sum (none starts at -0.0)
            state.tx_j += tx_j
            return
        self._spend(state, self._env._now, msg, 0.0, 0.0, tx_j)

    def upload_cut(self, msg: Update, cause: str, grant_s: float, hold_s: float, tx_bytes: int) -> Leave:
        """The upload stopped now (``upload_stop``): charge the airtime so far, record the dropout (and the
        flat battery); the device is silent, so the server hears a ``Leave``."""
        now = self._env.now
        state = self._state[msg.device]
        sent = 0.0 if hold_s <= 0.0 else min(1.0, max(0.0, (now - grant_s) / hold_s))
        self._spend(state, now, msg, 0.0, 0.0, float(tx_bytes) * state.profile.tx_j_per_byte * sent,
                    flat=cause == "battery")
        return self._lost(msg, now, cause, msg.compute_s)

    def _run(self, task: Task, down: Delivery):
        """The reference: the device's work on ``task`` as the generator its delivering process runs."""
        env = self._env
        now = env.now
        state, cause, says = self._refused(task, now)
        if cause is not None:
            if isinstance(says, Leave):
                self._link.report_silence(says, self._rules.failure_detection_s)
            else:
                yield from self._link.upload(says)
            return
        compute_s, stop = self._compute_plan(task, state, now)
        if stop is not None:
            stop_s, cause = stop
            yield env.timeout(stop_s - now)
            says = self._interrupted(task, state, now, stop_s, cause, compute_s, down.size_bytes)
        else:
            yield env.timeout(compute_s)
            says = self._completed(task, state, compute_s, down.link_s, down.queue_s, down.size_bytes)
        if isinstance(says, Leave):
            self._link.report_silence(says, self._rules.failure_detection_s)
        else:
            yield from self._link.upload(says)

    def _arrive(self, run: TaskRun, now: float) -> None:
        """``_run`` up to its compute, for a ``TaskRun`` (the same calls, the same events)."""
        task = run.task
        state, cause, says = self._refused(task, now)
        if cause is not None:
            self._say(run, says)
            return
        compute_s, stop = self._compute_plan(task, state, now)
        run.state, run.compute_s, run.t0 = state, compute_s, now
        if stop is not None:
            run.stop_s, run.cause = stop
            run.wait(stop[0] - now, self._on_stopped)
        else:
            run.wait(compute_s, self._on_computed)

    def _stopped(self, run: TaskRun) -> None:
        self._say(run, self._interrupted(run.task, run.state, run.t0, run.stop_s, run.cause, run.compute_s,
                                         run.down_size))

    def _computed(self, run: TaskRun) -> None:
        says = self._completed(run.task, run.state, run.compute_s, run.down_link_s, run.down_queue_s,
                               run.down_size)
        if type(says) is Leave:
            self._link.report_silence(says, self._rules.failure_detection_s)
            run.end()
        else:
            run.begin(says, True, run.key)

    def _say(self, run: TaskRun, says: Refusal | Leave) -> None:
        if isinstance(says, Leave):
            self._link.report_silence(says, self._rules.failure_detection_s)
            run.end()
        else:
            run.begin(says, True, run.key)


def _longest_up_s(availability: Availability) -> float:
    """The longest stretch ``availability`` can stay up (inf when unbounded, as for random failures); a timeline
    with a ``longest_up_s`` attribute (``devices.traces.PeriodicIntervals``) states its own."""
    if isinstance(availability, Diurnal):
        return math.inf if availability.on_fraction == 1.0 else availability.on_fraction * availability.period_s
    if isinstance(availability, AllOf):
        return min((_longest_up_s(part) for part in availability.parts), default=math.inf)
    return getattr(availability, "longest_up_s", math.inf)  # a trace's periodic intervals know theirs
