"""Scenarios: YAML → a validated, frozen ``Scenario``. The only module that parses YAML.

The models, their defaults and bounds are ``fleet.app.schema``'s (re-exported here: ``Scenario``,
``ScenarioError``). A file may add ``variants``: named lists of overrides, run side by side on the
same fleet and seed.
``load_scenario`` raises ``ScenarioError`` with one line (at most a few hundred characters) that
names the field and the problem; the CLI prints it and exits with status 2. Reading refuses
non-regular files, files over ``MAX_FILE_BYTES``, non-UTF-8 text, and YAML that nests deeper than
``MAX_DEPTH`` or expands (aliases counted each time they are used) to more than ``MAX_NODES``
nodes. YAML is read as by ``yaml.safe_load`` except that exponent floats read as YAML 1.2 does (``1e-3`` is a
number, ``'1e-3'`` a string) and a mapping that gives a key twice is refused (path and line named); an empty
file (or only comments, or ``null``) is refused too. ``scenario_warnings`` lists what is legal but probably
not meant (one line each).
"""

from __future__ import annotations

import copy
import math
import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from algorithms.registry import check_params
from fleet.app.printing import count
from fleet.app.schema import MAX_DEVICES, MAX_ECHO_CHARS, MAX_TIME_S, Scenario, ScenarioError, echo

__all__ = ["Scenario", "ScenarioError", "echo", "MAX_DEVICES", "MAX_TIME_S", "MAX_FILE_BYTES", "MAX_NODES",
           "MAX_DEPTH", "scenario_warnings", "apply_override", "yaml_text", "read_yaml", "parse_scenario",
           "load_scenario", "load_variants", "pick_variant"]

MAX_FILE_BYTES = 1 << 20  # a scenario is a page of YAML; 1 MiB is far beyond any real one
MAX_NODES = 100_000  # YAML nodes after expanding aliases (a shipped scenario has ~200)
MAX_DEPTH = 32  # nesting levels of mappings and lists (a scenario uses 5)
VARIANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # also a folder name


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
        raise ValueError(f"coordinator.quorum: a round needs ceil(quorum * K) = {count(needed, 'update')} "
                         f"but the fleet has {count(n, 'device')}: no round could ever aggregate")


def scenario_warnings(scenario: Scenario) -> list[str]:
    """What the scenario allows but probably does not mean, one line each naming the field."""
    c = scenario.coordinator
    n, needed, selected = _selection(scenario)
    out = []
    if c.mode == "sync" and c.clients_per_round > n:
        out.append(f"coordinator.clients_per_round: K = {c.clients_per_round} exceeds the "
                   f"{count(n, 'device')}: each round selects at most {n} and aggregates with "
                   f"{count(needed, 'update')}")
    elif (c.mode == "sync" and c.clients_per_round < n  # K = n: every device, nothing to over-select
          and math.ceil(c.clients_per_round * (1.0 + c.over_selection)) > n):
        out.append(f"coordinator.over_selection: a round would select "
                   f"{math.ceil(c.clients_per_round * (1.0 + c.over_selection))} devices, but the "
                   f"fleet has only {n}: it selects {selected}")
    if c.mode != "sync" and c.concurrency > n:
        out.append(f"coordinator.concurrency: {count(c.concurrency, 'task')} in flight exceed the "
                   f"{count(n, 'device')}: only {n} can be")
    return out


def _format_error(err: ValidationError) -> str:
    errors = err.errors(include_url=False, include_input=False)
    first = errors[0]
    loc = first["loc"]
    is_key = bool(loc) and loc[-1] == "[key]"  # pydantic's marker: the mapping's key itself is refused
    where = ".".join(echo(p) if not isinstance(p, (str, int)) or len(str(p)) > 60 else str(p)
                     for p in (loc[:-1] if is_key else loc)) or "(top level)"
    msg = first["msg"].removeprefix("Value error, ")
    if is_key and first["type"] == "literal_error":
        msg = f"unknown key; known: {first['ctx']['expected']}"
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


# YAML 1.2 floats with an exponent that YAML 1.1 (PyYAML) reads as strings: 1e-3, 5E+2, .5e1, -2e3.
_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)[eE][-+]?[0-9]+$")


class _DuplicateKey(Exception):
    """A mapping gives ``key`` twice: at ``line`` and first at ``first_line`` (1-based)."""

    def __init__(self, mapping: yaml.MappingNode, key: str, first_line: int, line: int):
        super().__init__(key)
        self.mapping, self.key, self.first_line, self.line = mapping, key, first_line, line


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads YAML 1.2's exponent floats as numbers and refuses a mapping that
    gives a key twice (``_DuplicateKey``; keys merged in with ``<<`` may be overridden, as YAML says)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            first_line: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    if key in first_line:
                        raise _DuplicateKey(node, str(key), first_line[key], line)
                    first_line[key] = line
                except TypeError:  # an unhashable key: the base class reports it
                    continue
        return super().construct_mapping(node, deep=deep)


class _Dumper(yaml.SafeDumper):
    """``yaml.SafeDumper`` that quotes the strings ``_Loader`` would read as exponent floats ('1e3')."""


for _cls in (_Loader, _Dumper):
    _cls.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789."))


def yaml_text(value: Any) -> str:
    """``value`` as one line of YAML that ``apply_override`` reads back as the same value (a string such as
    '1e3' stays a string). Raises ``yaml.YAMLError`` for what YAML cannot represent."""
    text = yaml.dump(value, Dumper=_Dumper, default_flow_style=True, width=float("inf"))
    return text.removesuffix("\n").removesuffix("\n...")


def _key_path(root: yaml.Node, target: yaml.Node) -> list[str]:
    """The keys and list indices leading from ``root`` to the node ``target`` (iterative: each node once)."""
    stack: list[tuple[yaml.Node, list[str]]] = [(root, [])]
    seen: set[int] = set()
    while stack:
        node, path = stack.pop()
        if node is target:
            return path
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            stack.extend((v, [*path, str(k.value)]) for k, v in node.value if isinstance(k, yaml.ScalarNode))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((v, [*path, str(i)]) for i, v in enumerate(node.value))
    return []


def _safe_yaml(text: str, what: str, prefix: str = "") -> Any:
    """``text`` parsed as YAML by ``_Loader`` (None for an empty document). A key given twice raises
    ``ScenarioError`` naming ``what``, the key's path (after ``prefix``, the path of the text's node) and
    the line; YAML errors propagate as ``yaml.YAMLError``."""
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        return None if root is None else loader.construct_document(root)
    except RecursionError:
        raise ScenarioError(f"{what}: nested more than {MAX_DEPTH} levels deep") from None
    except _DuplicateKey as dup:
        path = ".".join([*filter(None, [prefix]), *_key_path(root, dup.mapping), dup.key])
        raise ScenarioError(f"{what}: duplicate key {echo(path)[1:-1]} at line {dup.line} (first given at "
                            f"line {dup.first_line}); give each key once") from None
    finally:
        loader.dispose()


def apply_override(data: dict, assignment: str, option: str = "--set") -> None:
    """Apply one ``path.to.key=value`` (value parsed as YAML; list items by index) in place; an error names it
    after ``option``, where it came from (``--set``, the API's ``set``, a variant's list)."""
    path, sep, raw = assignment.partition("=")
    if not sep or not path:
        raise ScenarioError(f"{option} {echo(assignment)}: expected path.to.key=value")
    shown = echo(path)[1:-1]
    try:
        value = _safe_yaml(raw, f"{option} {shown}", path)
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{option} {shown}: value is not valid YAML ({exc.problem})") from None
    _check_size(value, f"{option} {shown}")
    keys = path.split(".")
    node: Any = data
    for i, key in enumerate(keys):
        last = i == len(keys) - 1
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise ScenarioError(f"{option} {shown}: {echo(key)} is not an index of the list "
                                    f"at {echo('.'.join(keys[:i]))[1:-1] or 'top level'}")
            key = int(key)
        elif not isinstance(node, dict):
            raise ScenarioError(f"{option} {shown}: {echo('.'.join(keys[:i]))[1:-1]} is not a mapping")
        if last:
            node[key] = value
        else:
            if isinstance(node, dict) and key not in node:
                node[key] = {}
            node = node[key]


def _resolve_paths(scenario: Scenario, base_dir: Path | None) -> Scenario:
    """``scenario`` with the relative trace paths of ``fleet.trace`` read from ``base_dir`` (the scenario
    file's folder; overrides included), so a scenario runs the same from any working directory."""
    trace = scenario.fleet.trace
    if trace is None or base_dir is None:
        return scenario
    moved = {key: str(base_dir / value) for key in ("capacity", "behaviour")
             if (value := getattr(trace, key)) is not None and not Path(value).is_absolute()}
    if not moved:
        return scenario
    fleet = scenario.fleet.model_copy(update={"trace": trace.model_copy(update=moved)})
    return scenario.model_copy(update={"fleet": fleet})


def parse_scenario(data: Any, overrides: list[str] = (), source: str = "scenario",
                   base_dir: Path | None = None, option: str = "--set") -> Scenario:
    """Validate parsed YAML ``data`` after applying ``overrides`` (an error in one is named after ``option``);
    ``ScenarioError`` names the field. Relative trace paths are read from ``base_dir`` when given (else from the
    working directory)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: top level must be a mapping, got {type(data).__name__}")
    for assignment in overrides:
        apply_override(data, assignment, option)
    _check_size(data, source)
    try:
        scenario = Scenario.model_validate(data)
        _cross_check(scenario)
    except ValidationError as err:
        raise ScenarioError(f"{source}: {_format_error(err)}") from None
    except ValueError as err:
        raise ScenarioError(f"{source}: {err}") from None
    return _resolve_paths(scenario, base_dir)


def read_yaml(path: Path) -> Any:
    """Parsed YAML (read as the module docstring says) of a regular file of at most ``MAX_FILE_BYTES`` of UTF-8
    (a FIFO would block)."""
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
    if data is None:  # empty, only comments, or null: surely not meant to run every default
        raise ScenarioError(f"{path}: the file is empty: a scenario is a mapping of keys, "
                            "see scenarios/smoke.yaml")
    _check_size(data, str(path))
    return data


def load_scenario(path: str | Path, overrides: list[str] = ()) -> Scenario:
    """Load one scenario (a file with ``variants`` is an error here: use ``load_variants``)."""
    path = Path(path)
    return parse_scenario(read_yaml(path), overrides, str(path), path.parent)


def load_variants(path: str | Path, overrides: list[str] = (), option: str = "--set") -> list[tuple[str, Scenario]]:
    """Load a scenario file and its named ``variants`` (``parse_variants``); relative paths in it (traces)
    are read from the file's folder."""
    path = Path(path)
    return parse_variants(read_yaml(path), overrides, str(path), path.parent, option)


def pick_variant(variants: list[tuple[str, Scenario]], name: str | None,
                 what: str = "variant") -> list[tuple[str, Scenario]]:
    """``variants`` (``load_variants``'s) narrowed to the one called ``name`` (None: all of them). A name that is
    none of them is a ``ScenarioError`` naming ``what`` (the option or argument) and the known ones, or saying
    that the scenario has no variants (its one run then bears the scenario's name)."""
    if name is None:
        return variants
    chosen = [(n, s) for n, s in variants if n == name]
    if chosen:
        return chosen
    if len(variants) == 1 and variants[0][0] == variants[0][1].name:
        raise ScenarioError(f"{what} {echo(name)}: the scenario has no variants (its one run is "
                            f"{echo(variants[0][0])})")
    raise ScenarioError(f"{what} {echo(name)}: not a variant of the scenario; known: "
                        f"{', '.join(n for n, _ in variants)}")


def parse_variants(data: object, overrides: list[str] = (), source: str = "scenario",
                   base_dir: Path | None = None, option: str = "--set") -> list[tuple[str, Scenario]]:
    """A scenario's parsed YAML (``data``, changed in place) and its named ``variants`` (each a list of
    ``path=value`` overrides), as (name, ``Scenario``) pairs.

    Data without ``variants`` gives one entry named after the scenario. Every variant is
    validated in full (algorithm parameters included) before anything runs; the command-line
    ``overrides`` apply to each, after the variant's own. Variant names are folder names
    (``VARIANT_NAME``). Variants share everything else, seed included, so they differ only as stated.
    Errors name ``source``, and ``option`` for an override; relative paths resolve against ``base_dir`` (the
    working directory if None).
    """
    if not isinstance(data, dict) or "variants" not in data:
        scenario = parse_scenario(data, overrides, source, base_dir, option)
        return [(scenario.name, scenario)]
    variants = data.pop("variants")
    if not isinstance(variants, dict) or not variants:
        raise ScenarioError(f"{source}: variants: must map variant names to lists of overrides")
    out = []
    for name, assignments in variants.items():
        if not isinstance(name, str) or not VARIANT_NAME.fullmatch(name):
            raise ScenarioError(f"{source}: variants: name {echo(name)} must be 1 to 64 letters, "
                                "digits, '_', '.' or '-' (it names a folder)")
        if not isinstance(assignments, list) or not all(isinstance(a, str) for a in assignments):
            raise ScenarioError(f"{source}: variants.{name}: must be a list of 'path=value' strings")
        variant = copy.deepcopy(data)
        for assignment in assignments:  # the variant's own, then the caller's
            apply_override(variant, assignment, f"{source}: variants.{name}:")
        out.append((name, parse_scenario(variant, overrides, f"{source} (variant {name})", base_dir, option)))
    return out
