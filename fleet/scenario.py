"""Scenarios: YAML → a validated, frozen ``Scenario``. The only module that parses YAML.

Every knob has a default and a description (README, "Scenarios"). A file may add ``variants``:
named lists of overrides, run side by side on the same fleet and seed.
Unknown keys are errors. ``load_scenario`` raises ``ScenarioError`` with one line that names the
field and the problem; the CLI prints it and exits with status 2.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from algorithms.datasets import DATASETS
from algorithms.registry import ALGORITHMS
from devices import DEVICE_CLASSES, LINK_CLASSES


class ScenarioError(ValueError):
    """A scenario that cannot run; the message names the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DiurnalConfig(_Strict):
    period_s: float = Field(86_400.0, gt=0, description="Length of one day-night cycle.")
    on_fraction: float = Field(0.7, gt=0, le=1, description="Fraction of each period online.")


class FailureConfig(_Strict):
    mtbf_s: float = Field(86_400.0, gt=0, description="Mean time between random failures.")
    mttr_s: float = Field(3_600.0, gt=0, description="Mean time to repair after a failure.")


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


class MixEntryConfig(_Strict):
    device_class: str = Field(description="A key of devices.DEVICE_CLASSES.")
    link_class: str = Field(description="A key of devices.LINK_CLASSES.")
    fraction: float = Field(ge=0, le=1, description="Share of the fleet; the mix sums to 1.")
    availability: AvailabilityConfig = Field(AvailabilityConfig(), description="Online timeline.")
    battery_charge: ChargeRange = Field(ChargeRange(), description="Initial battery charge range.")

    @field_validator("device_class")
    @classmethod
    def _known_device(cls, v: str) -> str:
        if v not in DEVICE_CLASSES:
            raise ValueError(f"unknown device class {v!r}; known: {', '.join(DEVICE_CLASSES)}")
        return v

    @field_validator("link_class")
    @classmethod
    def _known_link(cls, v: str) -> str:
        if v not in LINK_CLASSES:
            raise ValueError(f"unknown link class {v!r}; known: {', '.join(LINK_CLASSES)}")
        return v


class FleetConfig(_Strict):
    devices: int = Field(100, gt=0, description="Number of simulated devices.")
    mix: list[MixEntryConfig] = Field(
        default_factory=lambda: [MixEntryConfig(device_class="rpi4_4gb", link_class="wifi",
                                                fraction=1.0)],
        min_length=1, description="Device and link classes and their shares.")
    background_period_s: float = Field(3_600.0, gt=0,
                                       description="Period of background memory variation.")

    @field_validator("mix")
    @classmethod
    def _sums_to_one(cls, mix: list[MixEntryConfig]) -> list[MixEntryConfig]:
        total = math.fsum(e.fraction for e in mix)
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"fractions sum to {total:g}, must sum to 1")
        return mix


class GatewayConfig(_Strict):
    devices_per_gateway: int = Field(50, gt=0, description="Devices sharing one gateway.")
    channels: int | None = Field(1, gt=0, description="Concurrent transmissions; null = no contention.")
    backhaul_latency_s: float = Field(0.01, ge=0, description="Gateway to server latency.")
    backhaul_bit_per_s: float = Field(1e9, gt=0, description="Gateway to server rate.")


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


class NetworkConfig(_Strict):
    gateways: dict[str, GatewayConfig] = Field(default_factory=_default_gateways,
                                               description="Per gateway kind of the link classes.")
    max_attempts: int = Field(4, gt=0, description="Transmissions before a message is lost.")
    retry_backoff_s: float = Field(1.0, ge=0, description="Wait before each retransmission.")


class AlgorithmConfig(_Strict):
    name: str = Field("fedavg", description="A key of algorithms.registry.ALGORITHMS.")
    params: dict[str, Any] = Field(default_factory=dict,
                                   description="Keyword arguments of the algorithm's class.")

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {v!r}; known: {', '.join(ALGORITHMS)}")
        return v


class DevicesConfig(_Strict):
    slowdown_sigma: float = Field(0.25, ge=0, description="Per-task slowdown exp|N(0, sigma)|.")
    flop_budget_flops: float | None = Field(None, gt=0, description="FLOPs a device may spend.")
    failure_detection_s: float = Field(30.0, ge=0, description="Heartbeat loss detection delay.")
    refuse_hopeless: bool = Field(True, description="Refuse tasks that cannot meet the deadline.")


class CoordinatorConfig(_Strict):
    mode: Literal["sync", "fedbuff", "fedasync"] = Field("sync", description="Aggregation.")
    rounds: int = Field(20, gt=0, description="Sync rounds, or async aggregations.")
    clients_per_round: int = Field(10, gt=0, description="Sync: updates (K) a round waits for.")
    over_selection: float = Field(0.3, ge=0, description="Sync: extra fraction of K selected.")
    deadline_s: float | None = Field(None, gt=0, description="Sync: round deadline; null = none.")
    quorum: float = Field(0.5, gt=0, le=1, description="Sync: fraction of K needed to aggregate.")
    concurrency: int = Field(20, gt=0, description="Async: tasks kept in flight.")
    buffer_size: int = Field(10, gt=0, description="FedBuff: updates per aggregation.")
    staleness_exponent: float = Field(0.5, ge=0, description="Weight (1 + staleness) ** -a.")
    max_staleness: int | None = Field(None, ge=0, description="Async: discard staler updates.")
    task_timeout_s: float | None = Field(None, gt=0, description="Async: give up on a task.")
    max_idle_s: float | None = Field(
        7 * 86_400.0, gt=0, description="Stop the run when nothing was aggregated for this long "
        "(virtual seconds; stopped_by 'no_progress'); null = never.")


class DataConfig(_Strict):
    dataset: str = Field("fashion_mnist", description="A key of algorithms.datasets.DATASETS.")
    dir: str | None = Field(None, description="Folder of the dataset files; null = $FLEET_DATA_DIR, "
                            "else the Debian package's folder.")
    partition: Literal["iid", "dirichlet", "shards"] = Field(
        "iid", description="How training samples are split over devices.")
    alpha: float = Field(0.5, gt=0, description="Dirichlet concentration (smaller = more label skew).")
    min_samples: int = Field(8, gt=0, description="Fewest samples any device holds.")
    shards_per_client: int = Field(2, gt=0, description="Shards per device (partition: shards).")
    max_train_samples: int | None = Field(None, gt=0, description="Use only the first N training "
                                          "samples (quick studies); null = all.")
    max_test_samples: int | None = Field(None, gt=0, description="Evaluate on the first N test "
                                         "samples; null = all.")

    @field_validator("dataset")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in DATASETS:
            raise ValueError(f"unknown dataset {v!r}; known: {', '.join(DATASETS)}")
        return v


class EvaluationConfig(_Strict):
    interval_s: float = Field(600.0, gt=0, description="Evaluate the global model every this many "
                              "virtual seconds (and at the end).")
    target_accuracy: float = Field(0.7, gt=0, le=1, description="Accuracy whose first virtual time "
                                   "is reported as time-to-target.")
    every_round: bool = Field(True, description="Also evaluate after every aggregation (the "
                              "accuracy column of rounds.csv, and a row of evaluations.csv).")


class ExecutorConfig(_Strict):
    backend: Literal["sequential", "vectorized", "process_pool"] = Field(
        "vectorized", description="Where local updates run (results agree; docs/learning.md).")
    workers: int = Field(2, gt=0, description="process_pool: worker processes.")


class BridgeConfig(_Strict):
    bind: str = Field("tcp://127.0.0.1:5555", description="The hub's ZeroMQ bind address.")
    expect_devices: int = Field(1, ge=1, description="Real devices to wait for before round 0.")
    wait_s: float = Field(60.0, ge=0, description="How long to wait for them (wall seconds).")
    keys_dir: str | None = Field(None, description="Server keys and allowed/ client certificates "
                                 "(python -m fleet.keys); null = plain TCP.")
    allow_plain: bool = Field(False, description="Allow plain TCP (only on a loopback address).")
    heartbeat_interval_s: float = Field(1.0, gt=0, description="Heartbeat period, both ways.")
    liveness: int = Field(3, ge=1, description="Silent heartbeat periods before a device is purged.")


class Scenario(_Strict):
    name: str = Field("scenario", description="Names the output folder.")
    seed: int = Field(0, ge=0, description="The one seed of the run.")
    mode: Literal["timing", "learning"] = Field(
        "timing", description="timing: resource demands are real, local updates are skipped; "
        "learning: clients really train on real data.")
    max_sim_time_s: float = Field(30 * 86_400.0, gt=0, description="Stop the run at this time.")
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


def _format_error(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"].removeprefix("Value error, ")
    more = len(err.errors()) - 1
    return f"{where}: {msg}" + (f" (and {more} more problem{'s' * (more > 1)})" if more else "")


def apply_override(data: dict, assignment: str) -> None:
    """Apply one ``path.to.key=value`` (value parsed as YAML; list items by index) in place."""
    path, sep, raw = assignment.partition("=")
    if not sep or not path:
        raise ScenarioError(f"--set {assignment!r}: expected path.to.key=value")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ScenarioError(f"--set {path}: value is not valid YAML ({exc.problem})") from None
    keys = path.split(".")
    node: Any = data
    for i, key in enumerate(keys):
        last = i == len(keys) - 1
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise ScenarioError(f"--set {path}: {key!r} is not an index of the list "
                                    f"at {'.'.join(keys[:i]) or 'top level'}")
            key = int(key)
        elif not isinstance(node, dict):
            raise ScenarioError(f"--set {path}: {'.'.join(keys[:i])} is not a mapping")
        if last:
            node[key] = value
        else:
            if isinstance(node, dict) and key not in node:
                node[key] = {}
            node = node[key]


def parse_scenario(data: Any, overrides: list[str] = (), source: str = "scenario") -> Scenario:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: top level must be a mapping, got {type(data).__name__}")
    for assignment in overrides:
        apply_override(data, assignment)
    try:
        return Scenario.model_validate(data)
    except ValidationError as err:
        raise ScenarioError(f"{source}: {_format_error(err)}") from None


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ScenarioError(f"{path}: no such scenario file") from None
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ScenarioError(f"{path}: not valid YAML{where}") from None
    return data


def load_scenario(path: str | Path, overrides: list[str] = ()) -> Scenario:
    """Load one scenario (a file with ``variants`` is an error here: use ``load_variants``)."""
    path = Path(path)
    return parse_scenario(_read_yaml(path), overrides, str(path))


def load_variants(path: str | Path, overrides: list[str] = ()) -> list[tuple[str, Scenario]]:
    """Load a scenario and its named ``variants`` (each a list of ``path=value`` overrides).

    A file without ``variants`` gives one entry named after the scenario. Every variant is
    validated before anything runs; the command-line ``overrides`` apply to each, after the
    variant's own. Variants share everything else, seed included, so they differ only as stated.
    """
    path = Path(path)
    data = _read_yaml(path)
    if not isinstance(data, dict) or "variants" not in data:
        scenario = parse_scenario(data, overrides, str(path))
        return [(scenario.name, scenario)]
    variants = data.pop("variants")
    if not isinstance(variants, dict) or not variants:
        raise ScenarioError(f"{path}: variants: must map variant names to lists of overrides")
    out = []
    for name, assignments in variants.items():
        if not isinstance(assignments, list) or not all(isinstance(a, str) for a in assignments):
            raise ScenarioError(f"{path}: variants.{name}: must be a list of 'path=value' strings")
        out.append((str(name), parse_scenario(copy.deepcopy(data), [*assignments, *overrides],
                                              f"{path} (variant {name})")))
    return out
