"""Scenarios: YAML → a validated, frozen ``Scenario``. The only module that parses YAML.

Every knob has a default, a description and physical bounds under which the model computes
(README, "Scenarios"); NaN and infinities are refused everywhere. A file may add ``variants``:
named lists of overrides, run side by side on the same fleet and seed. Unknown keys are errors.
``load_scenario`` raises ``ScenarioError`` with one line (at most a few hundred characters) that
names the field and the problem; the CLI prints it and exits with status 2. Reading refuses
non-regular files, files over ``MAX_FILE_BYTES``, non-UTF-8 text, and YAML that nests deeper than
``MAX_DEPTH`` or expands (aliases counted each time they are used) to more than ``MAX_NODES``
nodes. ``scenario_warnings`` lists what is legal but probably not meant (one line each).
"""

from __future__ import annotations

import copy
import math
import os
import re
import reprlib
import stat
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from algorithms.datasets import DATASETS
from algorithms.registry import ALGORITHMS, check_params
from devices import DEVICE_CLASSES, LINK_CLASSES

MAX_FILE_BYTES = 1 << 20  # a scenario is a page of YAML; 1 MiB is far beyond any real one
MAX_NODES = 100_000  # YAML nodes after expanding aliases (a shipped scenario has ~200)
MAX_DEPTH = 32  # nesting levels of mappings and lists (a scenario uses 5)
MAX_ECHO_CHARS = 200  # longest value echoed into an error message
MAX_DEVICES = 1_000_000  # 1e6 simulated devices take ~1.5 GiB; more would exhaust memory
MAX_TIME_S = 1e9  # ~32 years of virtual time: every time and period stays below it
VARIANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # also a folder name


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

    up_bit_per_s: float | None = Field(None, ge=1, le=1e11, description="Median uplink rate, "
                                       "1 bit/s to 100 Gbit/s.")
    down_bit_per_s: float | None = Field(None, ge=1, le=1e11, description="Median downlink rate, "
                                         "1 bit/s to 100 Gbit/s.")
    bandwidth_sigma: float | None = Field(None, ge=0, le=2, description="Lognormal spread of the "
                                          "rates across devices, 0 to 2.")
    latency_s: float | None = Field(None, ge=0, le=3_600, description="Median access latency, "
                                    "0 to 3600 s.")
    latency_sigma: float | None = Field(None, ge=0, le=2, description="Lognormal spread of the "
                                        "latency across devices, 0 to 2.")
    loss_prob: float | None = Field(None, ge=0, le=0.99, description="Probability that one "
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
        if v not in DEVICE_CLASSES:
            raise ValueError(f"unknown device class {echo(v)}; known: {', '.join(DEVICE_CLASSES)}")
        return v

    @field_validator("link_class")
    @classmethod
    def _known_link(cls, v: str) -> str:
        if v not in LINK_CLASSES:
            raise ValueError(f"unknown link class {echo(v)}; known: {', '.join(LINK_CLASSES)}")
        return v


class FleetConfig(_Strict):
    devices: int = Field(100, gt=0, le=MAX_DEVICES, description="Number of simulated devices, 1 to "
                         "1,000,000 (1e6 devices take ~1.5 GiB of memory).")
    mix: list[MixEntryConfig] = Field(
        default_factory=lambda: [MixEntryConfig(device_class="rpi4_4gb", link_class="wifi",
                                                fraction=1.0)],
        min_length=1, max_length=1_000, description="Device and link classes and their shares.")
    background_period_s: float = Field(3_600.0, ge=1, le=MAX_TIME_S, description="Period of "
                                       "background memory variation, 1 s to 1e9 s.")

    @field_validator("mix")
    @classmethod
    def _sums_to_one(cls, mix: list[MixEntryConfig]) -> list[MixEntryConfig]:
        total = math.fsum(e.fraction for e in mix)
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"fractions sum to {total:g}, must sum to 1")
        return mix


class GatewayConfig(_Strict):
    devices_per_gateway: int = Field(50, gt=0, le=MAX_DEVICES, description="Devices sharing one "
                                     "gateway, 1 to 1,000,000.")
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


class NetworkConfig(_Strict):
    gateways: dict[str, GatewayConfig] = Field(default_factory=_default_gateways, max_length=100,
                                               description="Per gateway kind of the link classes.")
    max_attempts: int = Field(4, gt=0, le=100, description="Transmissions before a message is "
                              "lost, 1 to 100.")
    retry_backoff_s: float = Field(1.0, ge=0, le=86_400, description="Wait before each "
                                   "retransmission, 0 to 86400 s.")


class AlgorithmConfig(_Strict):
    name: str = Field("fedavg", description="A key of algorithms.registry.ALGORITHMS.")
    params: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments of the "
                                   "algorithm's class; names, types and bounds in "
                                   "algorithms.registry.PARAMETERS.")

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {echo(v)}; known: {', '.join(ALGORITHMS)}")
        return v

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
                                   "round waits for, 1 to 1,000,000.")
    over_selection: float = Field(0.3, ge=0, le=10, description="Sync: extra fraction of K "
                                  "selected, 0 to 10.")
    deadline_s: float | None = Field(None, ge=0.001, le=MAX_TIME_S, description="Sync: round "
                                     "deadline, 1 ms to 1e9 s; null = none.")
    quorum: float = Field(0.5, gt=0, le=1, description="Sync: fraction of K needed to aggregate, "
                          "(0, 1].")
    concurrency: int = Field(20, gt=0, le=MAX_DEVICES, description="Async: tasks kept in flight, "
                             "1 to 1,000,000.")
    buffer_size: int = Field(10, gt=0, le=MAX_DEVICES, description="FedBuff: updates per "
                             "aggregation, 1 to 1,000,000.")
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
        if v not in DATASETS:
            raise ValueError(f"unknown dataset {echo(v)}; known: {', '.join(DATASETS)}")
        return v

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
    backend: Literal["sequential", "vectorized", "process_pool"] = Field(
        "vectorized", description="Where local updates run (results agree; docs/learning.md).")
    workers: int = Field(2, gt=0, le=256, description="process_pool: worker processes, 1 to 256.")


class BridgeConfig(_Strict):
    bind: str = Field("tcp://127.0.0.1:5555", description="The hub's ZeroMQ bind address.")
    expect_devices: int = Field(1, ge=1, description="Real devices to wait for before round 0.")
    wait_s: float = Field(60.0, ge=0, description="How long to wait for them (wall seconds).")
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


def _selection(scenario: Scenario) -> tuple[int, int, int]:
    """(devices that can be selected, updates a sync round needs, devices a sync round selects)."""
    c = scenario.coordinator
    n = scenario.fleet.devices + (scenario.bridge.expect_devices if scenario.bridge else 0)
    return n, math.ceil(c.quorum * c.clients_per_round), \
        min(n, math.ceil(c.clients_per_round * (1.0 + c.over_selection)))


def _cross_check(scenario: Scenario) -> None:
    """Refuse what the fields allow one by one but the model cannot run (``ValueError`` naming the
    field): algorithm parameters against the mode, a quorum no round can reach."""
    a = scenario.algorithm
    try:
        check_params(a.name, a.params, learning=scenario.mode == "learning")
    except ValueError as exc:
        raise ValueError(f"algorithm.params: {exc}") from None
    n, needed, _ = _selection(scenario)
    if scenario.coordinator.mode == "sync" and needed > n:
        raise ValueError(f"coordinator.quorum: a round needs ceil(quorum * K) = {needed} updates "
                         f"but the fleet has {n} devices: no round could ever aggregate")


def scenario_warnings(scenario: Scenario) -> list[str]:
    """What the scenario allows but probably does not mean, one line each naming the field."""
    c = scenario.coordinator
    n, needed, selected = _selection(scenario)
    out = []
    if c.mode == "sync" and c.clients_per_round > n:
        out.append(f"coordinator.clients_per_round: K = {c.clients_per_round} exceeds the {n} "
                   f"devices: each round selects at most {n} and aggregates with {needed} updates")
    elif c.mode == "sync" and math.ceil(c.clients_per_round * (1.0 + c.over_selection)) > n:
        out.append(f"coordinator.over_selection: a round would select "
                   f"{math.ceil(c.clients_per_round * (1.0 + c.over_selection))} devices, but the "
                   f"fleet has only {n}: it selects {selected}")
    if c.mode != "sync" and c.concurrency > n:
        out.append(f"coordinator.concurrency: {c.concurrency} tasks in flight exceed the {n} "
                   f"devices: at most {n} are")
    return out


def _format_error(err: ValidationError) -> str:
    errors = err.errors(include_url=False, include_input=False)
    first = errors[0]
    where = ".".join(echo(p) if not isinstance(p, (str, int)) or len(str(p)) > 60 else str(p)
                     for p in first["loc"]) or "(top level)"
    msg = first["msg"].removeprefix("Value error, ")
    more = len(errors) - 1
    text = f"{where}: {msg}" + (f" (and {more} more problem{'s' * (more > 1)})" if more else "")
    return text if len(text) <= 2 * MAX_ECHO_CHARS else text[:2 * MAX_ECHO_CHARS - 3] + "..."


def _check_size(data: Any, what: str) -> None:
    """Refuse ``data`` (parsed YAML) nesting deeper than ``MAX_DEPTH`` or expanding to more than
    ``MAX_NODES`` nodes, counting a shared (aliased) node once per use; cycles are refused too.
    Iterative, and each distinct node is visited once: bounded time whatever the expansion."""
    size: dict[int, tuple[int, int]] = {}  # id -> (nodes, levels) of the expanded subtree
    stack: list[tuple[Any, int, bool]] = [(data, 1, False)]
    open_ids: set[int] = set()  # the containers on the path being walked
    while stack:
        node, depth, done = stack.pop()
        if not isinstance(node, (dict, list)):
            continue
        key = id(node)
        children = [*node.keys(), *node.values()] if isinstance(node, dict) else node
        if done:
            open_ids.discard(key)
            below = [size.get(id(c), (1, 1)) for c in children]
            size[key] = (1 + sum(b[0] for b in below), 1 + max((b[1] for b in below), default=0))
            if size[key][0] > MAX_NODES:
                raise ScenarioError(f"{what}: expands to more than {MAX_NODES:,} YAML nodes "
                                    "(aliases count each time they are used)")
            continue
        if key in open_ids:
            raise ScenarioError(f"{what}: a YAML alias refers to the node that contains it")
        if depth + (size[key][1] - 1 if key in size else 0) > MAX_DEPTH:
            raise ScenarioError(f"{what}: nested more than {MAX_DEPTH} levels deep")
        if key in size:
            continue
        open_ids.add(key)
        stack.append((node, depth, True))
        stack.extend((c, depth + 1, False) for c in children)


def _safe_yaml(text: str, what: str) -> Any:
    try:
        return yaml.safe_load(text)
    except RecursionError:
        raise ScenarioError(f"{what}: nested more than {MAX_DEPTH} levels deep") from None


def apply_override(data: dict, assignment: str) -> None:
    """Apply one ``path.to.key=value`` (value parsed as YAML; list items by index) in place."""
    path, sep, raw = assignment.partition("=")
    if not sep or not path:
        raise ScenarioError(f"--set {echo(assignment)}: expected path.to.key=value")
    shown = echo(path)[1:-1]
    try:
        value = _safe_yaml(raw, f"--set {shown}")
    except yaml.YAMLError as exc:
        raise ScenarioError(f"--set {shown}: value is not valid YAML ({exc.problem})") from None
    _check_size(value, f"--set {shown}")
    keys = path.split(".")
    node: Any = data
    for i, key in enumerate(keys):
        last = i == len(keys) - 1
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise ScenarioError(f"--set {shown}: {echo(key)} is not an index of the list "
                                    f"at {echo('.'.join(keys[:i]))[1:-1] or 'top level'}")
            key = int(key)
        elif not isinstance(node, dict):
            raise ScenarioError(f"--set {shown}: {echo('.'.join(keys[:i]))[1:-1]} is not a mapping")
        if last:
            node[key] = value
        else:
            if isinstance(node, dict) and key not in node:
                node[key] = {}
            node = node[key]


def parse_scenario(data: Any, overrides: list[str] = (), source: str = "scenario") -> Scenario:
    """Validate parsed YAML ``data`` after applying ``overrides``; ``ScenarioError`` names the field."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: top level must be a mapping, got {type(data).__name__}")
    for assignment in overrides:
        apply_override(data, assignment)
    _check_size(data, source)
    try:
        scenario = Scenario.model_validate(data)
        _cross_check(scenario)
    except ValidationError as err:
        raise ScenarioError(f"{source}: {_format_error(err)}") from None
    except ValueError as err:
        raise ScenarioError(f"{source}: {err}") from None
    return scenario


def _read_yaml(path: Path) -> Any:
    """Parsed YAML of a regular file of at most ``MAX_FILE_BYTES`` of UTF-8 (a FIFO would block)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ScenarioError(f"{path}: no such scenario file") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        raise ScenarioError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    if not stat.S_ISREG(info.st_mode):
        raise ScenarioError(f"{path}: not a regular file")
    if info.st_size > MAX_FILE_BYTES:
        raise ScenarioError(f"{path}: {info.st_size:,} bytes; a scenario has at most "
                            f"{MAX_FILE_BYTES:,}")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScenarioError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    try:
        data = _safe_yaml(text, str(path))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ScenarioError(f"{path}: not valid YAML{where}") from None
    _check_size(data, str(path))
    return data


def load_scenario(path: str | Path, overrides: list[str] = ()) -> Scenario:
    """Load one scenario (a file with ``variants`` is an error here: use ``load_variants``)."""
    path = Path(path)
    return parse_scenario(_read_yaml(path), overrides, str(path))


def load_variants(path: str | Path, overrides: list[str] = ()) -> list[tuple[str, Scenario]]:
    """Load a scenario and its named ``variants`` (each a list of ``path=value`` overrides).

    A file without ``variants`` gives one entry named after the scenario. Every variant is
    validated in full (algorithm parameters included) before anything runs; the command-line
    ``overrides`` apply to each, after the variant's own. Variant names are folder names
    (``VARIANT_NAME``). Variants share everything else, seed included, so they differ only as stated.
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
        if not isinstance(name, str) or not VARIANT_NAME.fullmatch(name):
            raise ScenarioError(f"{path}: variants: name {echo(name)} must be 1 to 64 letters, "
                                "digits, '_', '.' or '-' (it names a folder)")
        if not isinstance(assignments, list) or not all(isinstance(a, str) for a in assignments):
            raise ScenarioError(f"{path}: variants.{name}: must be a list of 'path=value' strings")
        out.append((name, parse_scenario(copy.deepcopy(data), [*assignments, *overrides],
                                         f"{path} (variant {name})")))
    return out
