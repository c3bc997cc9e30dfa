"""Assemble a run from a validated ``Scenario``.

The one place that wires the layers together: devices sampled from the mix, their availability
timelines and batteries, the topology and simulated network, the device processes, the algorithm's
cost model (the task plan), and the coordinator.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from algorithms.base import Algorithm, ResourceDemand, TaskConfig
from algorithms.datasets import DATASETS
from algorithms.registry import create_algorithm
from devices import (
    LINK_CLASSES,
    AllOf,
    AlwaysOn,
    Availability,
    Diurnal,
    MixEntry,
    RandomFailure,
    SampledFleet,
    sample_fleet_arrays,
)
from devices.traces import TraceError, load_traces, select_clients, shown, trace_fleet
from fleet.app.scenario import Scenario, ScenarioError
from fleet.app.simulation import Simulation
from fleet.bridge.view import RealView
from fleet.coordinator.asynchronous import AsyncConfig, AsyncCoordinator
from fleet.coordinator.base import Coordinator
from fleet.coordinator.sync import SyncConfig, SyncCoordinator
from fleet.core.kernel import Kernel
from fleet.core.paced import PacedEnvironment
from fleet.core.transport import Transport
from fleet.core.view import FleetView, JoinedView
from fleet.core.work import NullWork
from fleet.learning.backends import BackendUnavailable, ClientDataSource, make_backend
from fleet.learning.checkpoints import CheckpointStore
from fleet.learning.plane import LearningPlane
from fleet.sim.devices import DeviceRules, SimulatedDevices
from fleet.sim.network import SimulatedNetwork
from fleet.sim.population import LazyAvailability, OptionalFloats
from fleet.sim.topology import GatewaySpec, build_topology_coded
from fleet.sim.view import SimulatedView


def _availability(scenario: Scenario, kernel: Kernel, entry_of: np.ndarray) -> LazyAvailability:
    """Each device's availability timeline, made when first asked for (``LazyAvailability``) from its mix
    entry's settings: always on, diurnal (its phase drawn here, one draw per device), random failures (its
    own ``failure`` stream), or both."""
    phases = kernel.rng.stream("availability").random(len(entry_of))  # one draw per device, used if diurnal
    always = AlwaysOn()
    shared = np.random.Generator(np.random.PCG64())  # lends its methods to every failure timeline

    def maker(cfg) -> Callable[[int], Availability]:
        def make(device: int) -> Availability:
            parts: list[Availability] = []
            if cfg.diurnal is not None:
                d = cfg.diurnal
                parts.append(Diurnal(d.period_s, d.on_fraction, phases.item(device) * d.period_s))
            if cfg.failure is not None:
                f = cfg.failure
                # RandomFailure(f.mtbf_s, f.mttr_s, kernel.rng.stream("failure", device)), without the streams
                parts.append(RandomFailure.from_state(f.mtbf_s, f.mttr_s, shared,
                                                      kernel.rng.first_child_state("failure", device)))
            return always if not parts else parts[0] if len(parts) == 1 else AllOf(tuple(parts))
        return make

    return LazyAvailability(entry_of, [maker(e.availability) for e in scenario.fleet.mix])


def _initial_battery(scenario: Scenario, kernel: Kernel, fleet: SampledFleet) -> OptionalFloats:
    """Each device's charge at t = 0 (None without a battery): a share of its class's capacity drawn
    uniformly between its mix entry's ``battery_charge`` bounds, one draw per device."""
    draws = kernel.rng.stream("availability").random(len(fleet))
    levels = np.full(len(fleet), np.nan)
    for e, (entry, dc) in enumerate(zip(scenario.fleet.mix, fleet.device_class_of_entry)):
        members = fleet.entry_of == e
        if dc.battery_j is not None and members.any():
            charge = entry.battery_charge
            levels[members] = dc.battery_j * (charge.low + (charge.high - charge.low) * draws[members])
    return OptionalFloats(levels)


def make_plan(algorithm: Algorithm) -> Callable[[int, int], tuple[TaskConfig, ResourceDemand]]:
    """Timing mode: (round, device) → (what the round asks of a client, its resource demand), the same for
    every device of a round; cost model cached."""
    demand = lru_cache(maxsize=None)(algorithm.demand)

    @lru_cache(maxsize=8)  # every dispatch of a round asks: configure once per round
    def per_round(round_index: int) -> tuple[TaskConfig, ResourceDemand]:
        config = algorithm.task(round_index)
        return config, demand(config)

    def plan(round_index: int, device: int) -> tuple[TaskConfig, ResourceDemand]:
        return per_round(round_index)

    return plan


def _learning_plane(scenario: Scenario, kernel: Kernel, algorithm: Algorithm,
                    params: dict, checkpoint_dir: Path | None, n_devices: int) -> LearningPlane:
    """Load the data, give each device its partition, build the backend and the initial global state."""
    import torch

    from algorithms.datasets import DatasetMissing, load_dataset
    from algorithms.partition import partition

    d = scenario.data
    try:
        dataset = load_dataset(d.dataset, d.dir)
    except DatasetMissing as exc:
        raise ScenarioError(f"data: {exc}") from None
    except ValueError as exc:
        raise ScenarioError(f"data: {exc}") from None
    n_train = len(dataset.train_y) if d.max_train_samples is None else min(d.max_train_samples,
                                                                           len(dataset.train_y))
    n_test = len(dataset.test_y) if d.max_test_samples is None else min(d.max_test_samples,
                                                                        len(dataset.test_y))
    try:
        parts = partition(np.asarray(dataset.train_y[:n_train]), n_devices, d.partition,
                          kernel.rng.stream("partition"), alpha=d.alpha, min_size=d.min_samples,
                          shards_per_client=d.shards_per_client)
    except ValueError as exc:
        raise ScenarioError(f"data: {exc}") from None
    e = scenario.executor
    source = ClientDataSource(d.dataset, d.dir, tuple(parts))
    try:
        backend = make_backend(e.backend, scenario.algorithm.name, params, source, e.workers, e.ray_address)
    except BackendUnavailable as exc:
        raise ScenarioError(f"executor: {exc}") from None
    with warnings.catch_warnings():  # the cached arrays are read-only; nothing here writes to them
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        tensors = [torch.from_numpy(np.asarray(a)) for a in
                   (dataset.train_x, dataset.train_y, dataset.test_x[:n_test], dataset.test_y[:n_test])]
    store = None
    if checkpoint_dir is not None:
        fingerprint = hashlib.sha256(scenario.model_dump_json().encode()).hexdigest()
        try:
            store = CheckpointStore(checkpoint_dir, fingerprint)
        except ValueError as exc:
            backend.close()
            raise ScenarioError(f"--resume: {exc}") from None
    try:
        return LearningPlane(algorithm, backend, scenario.seed, *tensors, parts,
                             scenario.evaluation.every_round, store)
    except ValueError as exc:
        backend.close()
        raise ScenarioError(f"algorithm.params: {exc}") from None


@dataclass(frozen=True)
class BuiltFleet:
    """The simulated devices: profiles as arrays, a timeline and an initial charge each, and (a trace fleet)
    each device's client id in the trace."""

    profiles: SampledFleet
    availability: Sequence[Availability]
    battery: OptionalFloats
    client_ids: tuple[str, ...] | None = None


def reference_flops_per_sample(scenario: Scenario, algorithm: Algorithm) -> float:
    """The forward FLOPs per sample a trace's ``computation`` (ms per sample) is read against:
    ``fleet.trace.reference_flops_per_sample``, else the scenario model's (``algorithm.profile``)."""
    trace = scenario.fleet.trace
    if trace is not None and trace.reference_flops_per_sample is not None:
        return trace.reference_flops_per_sample
    profile = getattr(algorithm, "profile", None)
    if profile is None:
        raise ScenarioError(f"fleet.trace.reference_flops_per_sample: {scenario.algorithm.name} has no model "
                            "profile to read the trace's ms per sample against; set it")
    return float(profile.forward_flops_per_sample)


def _trace_fleet(scenario: Scenario, kernel: Kernel, algorithm: Algorithm) -> BuiltFleet:
    """The devices of ``fleet.trace``: ``fleet.devices`` clients (first, or sampled from the ``fleet`` stream,
    which then deals the memory classes and draws the background phases: devices.traces.mapping)."""
    fleet_cfg, t = scenario.fleet, scenario.fleet.trace
    rng = kernel.rng.stream("fleet")
    try:
        traces = load_traces(t.capacity, t.behaviour, t.pairing)
        chosen = select_clients(traces, fleet_cfg.devices, t.select, rng, where=shown(t.capacity))
        built = trace_fleet(chosen, reference_flops_per_sample(scenario, algorithm), t.memory_shares(),
                            t.link_class, rng, fleet_cfg.background_period_s, where=shown(t.capacity))
    except TraceError as exc:
        raise ScenarioError(f"fleet.trace: {exc}") from None
    levels = built.battery_j_at_start.copy()
    for e, dc in enumerate(built.fleet.device_class_of_entry):
        members = (built.fleet.entry_of == e) & np.isnan(levels)
        if dc.battery_j is not None:
            levels[members] = dc.battery_j  # a trace says nothing of charge: full
    return BuiltFleet(built.fleet, built.availability, OptionalFloats(levels), built.client_ids)


def _fleet(scenario: Scenario, kernel: Kernel) -> tuple[SampledFleet, LazyAvailability, OptionalFloats]:
    """The simulated devices' profiles sampled from the mix (as arrays), their availability and initial
    charge."""
    fleet_cfg = scenario.fleet
    mix = [MixEntry(e.device_class, e.link_class, e.fraction, e.link.figures()) for e in fleet_cfg.mix]
    profiles = sample_fleet_arrays(mix, fleet_cfg.devices, kernel.rng.stream("fleet"),
                                   background_period_s=fleet_cfg.background_period_s)
    availability = _availability(scenario, kernel, profiles.entry_of)
    return profiles, availability, _initial_battery(scenario, kernel, profiles)


def _devices(scenario: Scenario, kernel: Kernel, algorithm: Algorithm) -> BuiltFleet:
    """The simulated devices: from ``fleet.trace``, or sampled from the mix."""
    if scenario.fleet.trace is not None:
        return _trace_fleet(scenario, kernel, algorithm)
    return BuiltFleet(*_fleet(scenario, kernel))


def build_fleet(scenario: Scenario) -> tuple[BuiltFleet, float]:
    """The devices ``build_simulation`` would simulate for ``scenario`` (the same draws), and the forward
    FLOPs per sample of its model (``reference_flops_per_sample``): what ``fleet.export_fleet`` writes."""
    kernel = Kernel(scenario.seed)
    algorithm, _ = scenario_algorithm(scenario)
    return _devices(scenario, kernel, algorithm), reference_flops_per_sample(scenario, algorithm)


def _simulated_world(scenario: Scenario, kernel: Kernel, profiles, availability,
                     battery) -> tuple[SimulatedNetwork, SimulatedDevices]:
    """The topology, the simulated network and the device processes attached to it."""
    net_cfg = scenario.network
    specs = {kind: GatewaySpec(g.devices_per_gateway, g.channels, g.backhaul_latency_s,
                               g.backhaul_bit_per_s) for kind, g in net_cfg.gateways.items()}
    kind_of_entry = [LINK_CLASSES[e.link_class].gateway_kind for e in profiles.entries]
    names = sorted(set(kind_of_entry))
    codes = np.array([names.index(k) for k in kind_of_entry], dtype=np.int32)[profiles.entry_of]
    try:
        topology = build_topology_coded(names, codes, specs, kernel.rng.stream("topology"))
    except ValueError as exc:
        raise ScenarioError(str(exc)) from None
    network = SimulatedNetwork(kernel, profiles, topology, specs, net_cfg.max_attempts,
                               net_cfg.retry_backoff_s)
    d = scenario.devices
    devices = SimulatedDevices(kernel, network, profiles, availability, battery,
                               DeviceRules(d.slowdown_sigma, d.flop_budget_flops,
                                           d.failure_detection_s, d.refuse_hopeless))
    return network, devices


def scenario_algorithm(scenario: Scenario) -> tuple[Algorithm, dict]:
    """The scenario's algorithm, with the dataset's input shape and class count added to its params."""
    params = dict(scenario.algorithm.params)
    spec = DATASETS[scenario.data.dataset]
    for key, value in (("input_shape", spec.input_shape), ("num_classes", spec.num_classes)):
        if key in params:
            raise ScenarioError(f"algorithm.params.{key}: set by the dataset ({scenario.data.dataset}), "
                                "not by the scenario")
        params[key] = value
    try:
        return create_algorithm(scenario.algorithm.name, **params), params
    except ValueError as exc:
        raise ScenarioError(f"algorithm.params: {exc}") from None


def _attach_bridge(scenario: Scenario, kernel: Kernel, network: SimulatedNetwork, learning: LearningPlane,
                   first_real: int):
    """The bridge session (``fleet.bridge.session.attach``): the mixed transport and the real profiles."""
    from fleet.bridge import session

    b = scenario.bridge
    welcome = session.welcome_for(b, scenario.algorithm.name, scenario.algorithm.params,
                                  scenario.data.dataset, learning.partitions)
    try:
        return session.attach(b, kernel, network, learning, first_real, welcome)
    except session.SessionError as exc:
        raise ScenarioError(str(exc)) from None


def _coordinator(scenario: Scenario, kernel: Kernel, transport: Transport, n: int, plan, learning,
                 can_ever_complete) -> Coordinator:
    """The scenario's coordinator discipline (sync rounds, FedBuff or FedAsync) over ``n`` devices."""
    c = scenario.coordinator
    if c.mode == "sync":
        return SyncCoordinator(
            kernel, transport, n, plan,
            SyncConfig(c.rounds, c.clients_per_round, c.over_selection, c.deadline_s, c.quorum,
                       c.max_idle_s),
            learning, can_ever_complete)
    buffer_size = 1 if c.mode == "fedasync" else c.buffer_size
    return AsyncCoordinator(
        kernel, transport, n, plan,
        AsyncConfig(c.rounds, c.concurrency, buffer_size, c.staleness_exponent,
                    c.max_staleness, c.task_timeout_s, c.max_idle_s), learning, can_ever_complete)


def _describe_demands(sim: Simulation) -> None:
    """The nominal task and demand of each phase of the opening rounds, and the server's own demand."""
    algorithm = sim.algorithm
    nominal = make_plan(algorithm)  # the round's task before fitting it to each device's data
    sim.demands, sim.task_configs = {}, {}
    for r in range(min(sim.scenario.coordinator.rounds, 64)):  # the distinct phases (pruning, training)
        config, demand = nominal(r, 0)
        sim.demands.setdefault(config.phase, demand)
        sim.task_configs.setdefault(config.phase, config)
    sim.server_demand = algorithm.server_demand()


def build_simulation(scenario: Scenario, checkpoint_dir: Path | None = None) -> Simulation:
    """Wire every layer for ``scenario``. Raises ``ScenarioError`` for values only found here.

    In learning mode, ``checkpoint_dir`` keeps every aggregated global state; the same scenario run again
    with the same folder resumes from them (``fleet.learning.checkpoints.CheckpointStore``). With a
    ``bridge`` section the run's clock is a ``PacedEnvironment`` and the real devices attach here."""
    kernel = Kernel(scenario.seed, PacedEnvironment() if scenario.bridge is not None else None)
    algorithm, params = scenario_algorithm(scenario)  # draws nothing; a trace fleet reads its model's FLOPs
    built = _devices(scenario, kernel, algorithm)
    profiles, availability, battery = built.profiles, built.availability, built.battery
    simulated = profiles
    network, devices = _simulated_world(scenario, kernel, profiles, availability, battery)
    first_real = n = scenario.fleet.devices
    learning = None
    if scenario.mode == "learning":
        slots = n + (scenario.bridge.expect_devices if scenario.bridge is not None else 0)
        learning = _learning_plane(scenario, kernel, algorithm, params, checkpoint_dir, slots)
        plan = learning.plan
    else:
        plan = make_plan(algorithm)
    transport: Transport = network
    if scenario.bridge is not None:
        transport, real_profiles = _attach_bridge(scenario, kernel, network, learning, first_real)
        profiles = [*profiles, *real_profiles]
        n = len(profiles)

    def can_ever_complete(task, dispatched_s: float) -> bool:  # a real device's limits are its own to tell
        return task.device >= first_real or devices.can_ever_complete(task, dispatched_s)

    work = learning if learning is not None else NullWork()
    coordinator = _coordinator(scenario, kernel, transport, n, plan, work, can_ever_complete)
    bridge = transport if transport is not network else None
    fleet_view: FleetView = SimulatedView(devices, simulated)
    if bridge is not None:
        fleet_view = JoinedView([fleet_view, RealView(bridge)])
    sim = Simulation(scenario, kernel, profiles, availability, network, devices, algorithm, coordinator,
                     transport, fleet_view, learning=learning, bridge=bridge)
    _describe_demands(sim)
    return sim
