"""The scenario schema: pydantic models of every section, with defaults, descriptions and bounds.

Every knob has a default, a description and physical bounds under which the model computes (README,
"Scenarios"); NaN and infinities are refused everywhere; unknown keys are errors. Models are frozen.
Reading files, overrides, variants and cross-field checks are ``fleet.app.scenario``'s; ``ScenarioError``
and ``echo`` (a bounded ``repr`` for error lines) live here because the validators use them too.
"""

from __future__ import annotations

import math
import reprlib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from algorithms.datasets import DATASETS
from algorithms.registry import ALGORITHMS, check_params
from devices import DEVICE_CLASSES, LINK_CLASSES
from devices.bounds import MAX_LATENCY_S, MAX_LOSS_PROB, MAX_RATE_BIT_PER_S, MAX_TIME_S, MIN_RATE_BIT_PER_S

MAX_ECHO_CHARS = 200  # longest value echoed into an error message
MAX_DEVICES = 10_000_000  # 1e7 simulated devices take 3-6 GiB in timing mode (docs/benchmarks.md, "Scale")
MAX_REAL_DEVICES = 10_000  # real devices on one bridge hub: far beyond any lab's bench
MAX_WAIT_S = 86_400.0  # wall seconds a bridge waits for its devices: a day


class ScenarioError(ValueError):
    """A scenario that cannot run; the message names the field."""


_ECHO = reprlib.Repr()
_ECHO.maxlevel, _ECHO.maxstring, _ECHO.maxother, _ECHO.maxlong = 3, 80, 80, 40
_ECHO.maxlist = _ECHO.maxtuple = _ECHO.maxdict = _ECHO.maxset = 4


def echo(value: object) -> str:
    """``repr(value)`` cut to at most ``MAX_ECHO_CHARS`` characters, in bounded time and memory (an
    alias bomb's 9^9 leaves are never visited)."""
    text = _ECHO.repr(value)
    return text if len(text) <= MAX_ECHO_CHARS else text[:MAX_ECHO_CHARS - 3] + "..."


def _known(what: str, name: str, catalog) -> str:
    """``name`` if it is a key of ``catalog``, else ``ValueError`` listing the known names."""
    if name not in catalog:
        raise ValueError(f"unknown {what} {echo(name)}; known: {', '.join(catalog)}")
    return name


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class DiurnalConfig(_Strict):
    period_s: float = Field(86_400.0, ge=60, le=MAX_TIME_S, description="Length of one day-night "
                            "cycle, 60 s to 1e9 s.")
    on_fraction: float = Field(0.7, gt=0, le=1, description="Fraction of each period online, (0, 1].")


class FailureConfig(_Strict):
    mtbf_s: float = Field(86_400.0, ge=60, le=MAX_TIME_S, description="Mean time between random "
                          "failures, 60 s to 1e9 s (a device failing every minute never works).")
    mttr_s: float = Field(3_600.0, ge=1, le=MAX_TIME_S, description="Mean time to repair after a "
                          "failure, 1 s to 1e9 s.")


class AvailabilityConfig(_Strict):
    diurnal: DiurnalConfig | None = Field(None, description="On/off daily cycle, random phase.")
    failure: FailureConfig | None = Field(None, description="Random failures (exponential).")


class ChargeRange(_Strict):
    low: float = Field(1.0, ge=0, le=1, description="Lowest initial charge, fraction of capacity.")
    high: float = Field(1.0, ge=0, le=1, description="Highest initial charge, fraction of capacity.")

    @model_validator(mode="after")
    def _ordered(self):
        if self.low > self.high:
            raise ValueError("low must be <= high")
        return self


class LinkOverride(_Strict):
    """Per-fleet link figures replacing the link class's (null = the class's cited figure)."""

    up_bit_per_s: float | None = Field(None, ge=MIN_RATE_BIT_PER_S, le=MAX_RATE_BIT_PER_S,
                                       description="Median uplink rate, "
                                       "1 bit/s to 100 Gbit/s.")
    down_bit_per_s: float | None = Field(None, ge=MIN_RATE_BIT_PER_S, le=MAX_RATE_BIT_PER_S,
                                         description="Median downlink rate, "
                                         "1 bit/s to 100 Gbit/s.")
    bandwidth_sigma: float | None = Field(None, ge=0, le=2, description="Lognormal spread of the "
                                          "rates across devices, 0 to 2.")
    latency_s: float | None = Field(None, ge=0, le=MAX_LATENCY_S, description="Median access latency, "
                                    "0 to 3600 s.")
    latency_sigma: float | None = Field(None, ge=0, le=2, description="Lognormal spread of the "
                                        "latency across devices, 0 to 2.")
    loss_prob: float | None = Field(None, ge=0, le=MAX_LOSS_PROB, description="Probability that one "
                                    "transmission attempt is lost, 0 to 0.99.")

    def figures(self) -> dict[str, float]:
        """The figures set here, by ``devices.LinkClass`` field name."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


class MixEntryConfig(_Strict):
    device_class: str = Field(description="A key of devices.DEVICE_CLASSES.")
    link_class: str = Field(description="A key of devices.LINK_CLASSES.")
    fraction: float = Field(ge=0, le=1, description="Share of the fleet; the mix sums to 1.")
    availability: AvailabilityConfig = Field(AvailabilityConfig(), description="Online timeline.")
    battery_charge: ChargeRange = Field(ChargeRange(), description="Initial battery charge range.")
    link: LinkOverride = Field(LinkOverride(), description="This entry's link figures where they "
                               "differ from the link class's (e.g. a poor WiFi: loss_prob: 0.3).")

    @field_validator("device_class")
    @classmethod
    def _known_device(cls, v: str) -> str:
        return _known("device class", v, DEVICE_CLASSES)

    @field_validator("link_class")
    @classmethod
    def _known_link(cls, v: str) -> str:
        return _known("link class", v, LINK_CLASSES)


class MemoryShare(_Strict):
    device_class: str = Field(description="A key of devices.DEVICE_CLASSES: memory, power, battery and "
                              "background memory of the trace clients given it.")
    fraction: float = Field(ge=0, le=1, description="Share of the trace clients; the shares sum to 1.")

    @field_validator("device_class")
    @classmethod
    def _known_device(cls, v: str) -> str:
        return _known("device class", v, DEVICE_CLASSES)


def _shares_sum_to_one(cls, shares: list | None) -> list | None:
    """A field validator: the ``fraction``s of a list of shares (a mix) sum to 1, within 1e-6."""
    if shares is not None:
        total = math.fsum(e.fraction for e in shares)
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"fractions sum to {total:g}, must sum to 1")
    return shares


def _trace_path(v: str | None) -> str | None:
    if v is not None and ("\0" in v or not v.strip()):
        raise ValueError("a path cannot be blank or contain a NUL character")
    return v


class TraceConfig(_Strict):
    """Devices from a FedScale-format trace pair (docs/traces.md) instead of a sampled mix."""

    capacity: str = Field(max_length=4096, description="Capacity file (.pkl, .json or .csv): client id -> "
                          "computation (ms per sample) and communication (kbit/s). A relative path is read "
                          "from the scenario file's folder.")
    behaviour: str | None = Field(None, max_length=4096, description="Behaviour file: client id -> active and "
                                  "inactive times (s), finish_time (s), read modulo finish_time as FedScale "
                                  "does; null = every client always available.")
    pairing: Literal["id", "fedscale"] = Field("id", description="id: the two files list the same client "
                                               "ids; fedscale: client c gets the behaviour record at index c "
                                               "mod its length, as FedScale does (its shipped files differ).")
    select: Literal["first", "sample"] = Field("first", description="Which fleet.devices clients: the first "
                                               "in file order, or a sample drawn with the seed.")
    memory_class: str | None = Field(None, description="The device class of every client whose record names "
                                     "none (traces hold no memory): a key of devices.DEVICE_CLASSES. Give it "
                                     "or memory_mix.")
    memory_mix: list[MemoryShare] | None = Field(None, min_length=1, max_length=1_000, description="Device "
                                                 "classes dealt to the clients by a seeded permutation, "
                                                 "instead of one memory_class.")
    link_class: str = Field("wifi", description="The link class (latency, loss, duty cycle, frames, energy "
                            "per byte, gateway) of clients whose record names none; the rates are the trace's.")
    reference_flops_per_sample: float | None = Field(
        None, gt=0, le=1e18, description="Forward FLOPs per sample of the model the computation times were "
        "measured with; null = the scenario model's (flops_per_s = this / (computation_ms / 1000)).")

    @field_validator("capacity", "behaviour")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        return _trace_path(v)

    @field_validator("link_class")
    @classmethod
    def _known_link(cls, v: str) -> str:
        return _known("link class", v, LINK_CLASSES)

    @field_validator("memory_class")
    @classmethod
    def _known_device(cls, v: str | None) -> str | None:
        return v if v is None else _known("device class", v, DEVICE_CLASSES)

    _memory_mix_sums_to_one = field_validator("memory_mix")(_shares_sum_to_one)

    @model_validator(mode="after")
    def _one_memory_source(self):
        if (self.memory_class is None) == (self.memory_mix is None):
            raise ValueError("memory_class or memory_mix: give exactly one (the traces hold no memory)")
        return self

    def memory_shares(self) -> list[tuple[str, float]]:
        """(device class, fraction) pairs: ``memory_mix``, or ``memory_class`` with fraction 1."""
        if self.memory_mix is None:
            return [(self.memory_class, 1.0)]
        return [(m.device_class, m.fraction) for m in self.memory_mix]


class FleetConfig(_Strict):
    devices: int = Field(100, gt=0, le=MAX_DEVICES, description="Number of simulated devices, 1 to "
                         "10,000,000 (1e7 devices take 3 to 6 GiB of memory in timing mode); with a trace, "
                         "the number of trace clients taken.")
    mix: list[MixEntryConfig] = Field(
        default_factory=lambda: [MixEntryConfig(device_class="rpi4_4gb", link_class="wifi",
                                                fraction=1.0)],
        min_length=1, max_length=1_000, description="Device and link classes and their shares.")
    background_period_s: float = Field(3_600.0, ge=1, le=MAX_TIME_S, description="Period of "
                                       "background memory variation, 1 s to 1e9 s.")
    trace: TraceConfig | None = Field(None, description="Devices from FedScale-format traces instead of "
                                      "the mix (docs/traces.md); null = sample the mix.")

    _mix_sums_to_one = field_validator("mix")(_shares_sum_to_one)

    @model_validator(mode="after")
    def _trace_or_mix(self):
        if self.trace is not None and "mix" in self.model_fields_set:
            raise ValueError("trace and mix are exclusive: a trace fleet takes its devices from the trace files "
                             "(name their classes with trace.memory_class or trace.memory_mix)")
        return self


class GatewayConfig(_Strict):
    devices_per_gateway: int = Field(50, gt=0, le=MAX_DEVICES, description="Devices sharing one "
                                     "gateway, 1 to 10,000,000.")
    channels: int | None = Field(1, gt=0, le=100_000, description="Concurrent transmissions, 1 to "
                                 "100,000; null = no contention.")
    backhaul_latency_s: float = Field(0.01, ge=0, le=3_600, description="Gateway to server "
                                      "latency, 0 to 3600 s.")
    backhaul_bit_per_s: float = Field(1e9, ge=1, le=1e13, description="Gateway to server rate, "
                                      "1 bit/s to 10 Tbit/s.")


def _default_gateways() -> dict[str, GatewayConfig]:
    return {
        "switch": GatewayConfig(devices_per_gateway=48, channels=None),
        "access_point": GatewayConfig(devices_per_gateway=30, channels=1),
        "cell": GatewayConfig(devices_per_gateway=200, channels=8, backhaul_latency_s=0.02),
        "lora_gateway": GatewayConfig(devices_per_gateway=500, channels=8, backhaul_latency_s=0.05,
                                      backhaul_bit_per_s=1e7),
        "ble_gateway": GatewayConfig(devices_per_gateway=20, channels=1, backhaul_latency_s=0.02,
                                     backhaul_bit_per_s=1e8),
    }


# The keys network.gateways accepts, in the defaults' order; a test keeps them equal to devices.GATEWAY_KINDS.
GatewayKind = Literal[tuple(_default_gateways())]


def _merged_gateways(given: Any) -> Any:
    """The default gateway specs with ``given`` (raw input: kind -> spec) laid over them, per kind and, where a
    kind's spec is a mapping, per field: ``{access_point: {channels: 2}}`` changes one figure of one kind and
    keeps the rest. Anything else (an unknown kind, a spec that is not a mapping) passes through unchanged for
    the field's own validation to report, with its key."""
    if not isinstance(given, dict):
        return given
    merged: dict[Any, Any] = {kind: spec.model_dump() for kind, spec in _default_gateways().items()}
    for kind, spec in given.items():
        if isinstance(spec, dict) and kind in merged:
            merged[kind] = {**merged[kind], **spec}
        else:
            merged[kind] = spec
    return merged


class NetworkConfig(_Strict):
    gateways: dict[GatewayKind, GatewayConfig] = Field(
        default_factory=_default_gateways, description="Per gateway kind of the link classes (switch, "
        "access_point, cell, lora_gateway, ble_gateway): the specs given are laid over the defaults, per kind "
        "and per field (access_point: {channels: 2} changes one figure); other kinds keep their defaults.")
    max_attempts: int = Field(4, gt=0, le=100, description="Transmissions before a message is "
                              "lost, 1 to 100.")
    retry_backoff_s: float = Field(1.0, ge=0, le=86_400, description="Wait before each "
                                   "retransmission, 0 to 86400 s.")

    @field_validator("gateways", mode="before")
    @classmethod
    def _over_defaults(cls, v: Any) -> Any:
        return _merged_gateways(v)


class AlgorithmConfig(_Strict):
    name: str = Field("fedavg", description="A key of algorithms.registry.ALGORITHMS.")
    params: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments of the "
                                   "algorithm's class; names, types and bounds in "
                                   "algorithms.registry.PARAMETERS.")

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        return _known("algorithm", v, ALGORITHMS)

    @field_validator("params")
    @classmethod
    def _checked(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if "name" in info.data:  # else the name's own error is reported
            check_params(info.data["name"], v)
        return v


class DevicesConfig(_Strict):
    slowdown_sigma: float = Field(0.25, ge=0, le=3, description="Per-task slowdown "
                                  "exp|N(0, sigma)|, sigma 0 to 3 (3: p99 slowdown ~2300x).")
    flop_budget_flops: float | None = Field(None, gt=0, le=1e24, description="FLOPs a device may "
                                            "spend, up to 1e24; null = no budget.")
    failure_detection_s: float = Field(30.0, ge=0, le=86_400, description="Heartbeat loss "
                                       "detection delay, 0 to 86400 s.")
    refuse_hopeless: bool = Field(True, description="Refuse tasks that cannot meet the deadline.")


class CoordinatorConfig(_Strict):
    mode: Literal["sync", "fedbuff", "fedasync"] = Field("sync", description="Aggregation.")
    rounds: int = Field(20, gt=0, le=1_000_000, description="Sync rounds, or async aggregations, "
                        "1 to 1,000,000.")
    clients_per_round: int = Field(10, gt=0, le=MAX_DEVICES, description="Sync: updates (K) a "
                                   "round waits for, 1 to 10,000,000.")
    over_selection: float = Field(0.3, ge=0, le=10, description="Sync: extra fraction of K "
                                  "selected, 0 to 10.")
    deadline_s: float | None = Field(None, ge=0.001, le=MAX_TIME_S, description="Sync: round "
                                     "deadline, 1 ms to 1e9 s; null = none.")
    quorum: float = Field(0.5, gt=0, le=1, description="Sync: fraction of K needed to aggregate, "
                          "(0, 1].")
    concurrency: int = Field(20, gt=0, le=MAX_DEVICES, description="Async: tasks kept in flight, "
                             "1 to 10,000,000.")
    buffer_size: int = Field(10, gt=0, le=MAX_DEVICES, description="FedBuff: updates per "
                             "aggregation, 1 to 10,000,000.")
    staleness_exponent: float = Field(0.5, ge=0, le=10, description="Weight (1 + staleness) ** -a, "
                                      "a from 0 to 10.")
    max_staleness: int | None = Field(None, ge=0, le=1_000_000, description="Async: discard "
                                      "staler updates, 0 to 1,000,000; null = never.")
    task_timeout_s: float | None = Field(None, ge=0.001, le=MAX_TIME_S, description="Async: give "
                                         "up on a task, 1 ms to 1e9 s; null = never.")
    max_idle_s: float | None = Field(
        7 * 86_400.0, ge=1, le=MAX_TIME_S, description="Stop the run when nothing was aggregated "
        "for this long (virtual seconds, 1 to 1e9; stopped_by 'no_progress'); null = never.")


class DataConfig(_Strict):
    dataset: str = Field("fashion_mnist", description="A key of algorithms.datasets.DATASETS.")
    dir: str | None = Field(None, max_length=4096, description="Folder of the dataset files; "
                            "null = $FLEET_DATA_DIR, else the Debian package's folder.")
    partition: Literal["iid", "dirichlet", "shards"] = Field(
        "iid", description="How training samples are split over devices.")
    alpha: float = Field(0.5, ge=0.001, le=1e6, description="Dirichlet concentration, 0.001 to "
                         "1e6 (smaller = more label skew).")
    min_samples: int = Field(8, gt=0, le=1_000_000, description="Fewest samples any device holds, "
                             "1 to 1,000,000.")
    shards_per_client: int = Field(2, gt=0, le=10_000, description="Shards per device (partition: "
                                   "shards), 1 to 10,000.")
    max_train_samples: int | None = Field(None, gt=0, le=10**9, description="Use only the first N "
                                          "training samples (quick studies), N up to 1e9; "
                                          "null = all.")
    max_test_samples: int | None = Field(None, gt=0, le=10**9, description="Evaluate on the first "
                                         "N test samples, N up to 1e9; null = all.")

    @field_validator("dataset")
    @classmethod
    def _known(cls, v: str) -> str:
        return _known("dataset", v, DATASETS)

    @field_validator("dir")
    @classmethod
    def _no_nul(cls, v: str | None) -> str | None:
        if v is not None and "\0" in v:
            raise ValueError("a path cannot contain a NUL character")
        return v


class EvaluationConfig(_Strict):
    interval_s: float = Field(600.0, ge=1, le=MAX_TIME_S, description="Evaluate the global model "
                              "every this many virtual seconds (and at the end), 1 s to 1e9 s.")
    target_accuracy: float = Field(0.7, gt=0, le=1, description="Accuracy whose first virtual time "
                                   "is reported as time-to-target, (0, 1].")
    every_round: bool = Field(True, description="Also evaluate after every aggregation (the "
                              "accuracy column of rounds.csv, and a row of evaluations.csv).")


class ExecutorConfig(_Strict):
    backend: Literal["sequential", "vectorized", "process_pool", "ray"] = Field(
        "vectorized", description="Where local updates run (results agree; docs/learning.md). ray needs "
        "pip install '.[ray]'.")
    workers: int = Field(2, gt=0, le=256, description="process_pool and ray: worker processes (Ray actors), "
                         "1 to 256.")
    ray_address: str | None = Field(
        None, min_length=1, max_length=300, description="ray: the cluster to join (host:port of its head, "
        "ray://host:port, or auto); null = the RAY_ADDRESS environment variable if set, else (and with local) "
        "a Ray instance started on this machine for the run, on loopback only.")

    @field_validator("ray_address")
    @classmethod
    def _no_nul(cls, v: str | None) -> str | None:
        if v is not None and ("\0" in v or not v.strip()):
            raise ValueError("an address cannot be blank or contain a NUL character")
        return v


class BridgeConfig(_Strict):
    bind: str = Field("tcp://127.0.0.1:5555", description="The hub's ZeroMQ bind address.")
    expect_devices: int = Field(1, ge=1, le=MAX_REAL_DEVICES, description="Real devices to wait for before "
                                "round 0, 1 to 10,000 (one hub; each is sent dense weights every task).")
    wait_s: float = Field(60.0, ge=0, le=MAX_WAIT_S, description="How long to wait for them, 0 to 86400 wall "
                          "seconds (a day); the run starts then with those attached, none being an error.")
    keys_dir: str | None = Field(None, description="Server keys and allowed/ client certificates "
                                 "(python -m fleet.keys); null = plain TCP.")
    allow_plain: bool = Field(False, description="Allow plain TCP (only on a loopback address).")
    heartbeat_interval_s: float = Field(
        2.0, gt=0, le=3600, description="Heartbeat period, both ways, in seconds; the agents adopt it from "
        "the welcome. With liveness it sets the silence that counts as a death (docs/bridge.md).")
    liveness: int = Field(5, ge=1, le=1000, description="Silent heartbeat periods before a device is purged "
                          "(and before an agent counts the hub gone). The default 2 s x 5 = 10 s rides out "
                          "the TCP stalls of a lossy Wi-Fi link; a dead device is found that much later.")


class Scenario(_Strict):
    name: str = Field("scenario", max_length=200, description="Names the study in its report, "
                      "up to 200 characters.")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="The one seed of the run, 0 to 2**63 - 1.")
    mode: Literal["timing", "learning"] = Field(
        "timing", description="timing: resource demands are real, local updates are skipped; "
        "learning: clients really train on real data.")
    max_sim_time_s: float = Field(30 * 86_400.0, gt=0, le=MAX_TIME_S, description="Stop the run "
                                  "at this virtual time, up to 1e9 s.")
    fleet: FleetConfig = Field(FleetConfig(), description="Devices and their mix.")
    network: NetworkConfig = Field(NetworkConfig(), description="Gateways and retries.")
    algorithm: AlgorithmConfig = Field(AlgorithmConfig(), description="What clients compute.")
    devices: DevicesConfig = Field(DevicesConfig(), description="Device behaviour.")
    coordinator: CoordinatorConfig = Field(CoordinatorConfig(), description="Rounds.")
    data: DataConfig = Field(DataConfig(), description="Learning mode: dataset and partition.")
    evaluation: EvaluationConfig = Field(EvaluationConfig(), description="Learning mode: tests.")
    executor: ExecutorConfig = Field(ExecutorConfig(), description="Learning mode: compute.")
    bridge: BridgeConfig | None = Field(None, description="Real devices over ZeroMQ (learning "
                                        "mode); null = a fully simulated fleet.")

    @model_validator(mode="after")
    def _bridge_needs_learning(self):
        if self.bridge is not None and self.mode != "learning":
            raise ValueError("bridge: real devices do real local work: needs mode: learning")
        return self
