"""The plan of a sweep: which runs, where each writes, the command that makes it, and whether it is done.

A sweep is settings × seeds. A setting is one point of the ``--grid`` product: a list of ``--set`` overrides
(``fleet.app.scenario.apply_override`` reads them, so keys and values are exactly ``fleet.run``'s) and a stable,
readable folder name (``rounds=3,lr=0.1``). Each run is the command
``python -m fleet.run SCENARIO --seed S --set k=v ... --out OUT/<setting>/s<S> --quiet``, so any run can be made
again alone; ``run_summaries`` says whether a run's folder already holds its finished outputs.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MAX_RUNS", "PlanError", "Run", "Setting", "argv_to_run", "check_reuse", "content_sha256", "expand_grid",
           "file_sha256", "parse_grid", "parse_seeds", "plan_runs", "recorded_runs", "run_summaries", "split_values"]

MAX_RUNS = 10_000  # settings × seeds; a typo such as 0-99999 fails at once instead of planning for hours
DEFAULT_SETTING = "default"  # the one setting of a sweep without --grid
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")  # a key of the scenario, or a list index
_PLAIN = re.compile(r"[A-Za-z0-9._+-]{1,40}")  # a value that names a folder as it is
_SEEDS = re.compile(r"(\d{1,19})(?:-(\d{1,19}))?")


class PlanError(Exception):
    """Bad --seeds or --grid, or an --out that holds another sweep: one line, exit status 2."""


@dataclass(frozen=True)
class Setting:
    """One point of the grid: ``values`` are (dotted key, raw value) in --grid order; ``name`` its folder."""

    name: str
    values: tuple[tuple[str, str], ...]

    @property
    def overrides(self) -> list[str]:
        return [f"{key}={value}" for key, value in self.values]


@dataclass(frozen=True)
class Run:
    """One whole run: ``argv`` follows the Python interpreter (``python -m fleet.run ...``)."""

    setting: Setting
    seed: int
    out: Path
    argv: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.setting.name}/s{self.seed}"

    @property
    def command(self) -> str:
        """The shell line that makes this run alone (from the sweep's working folder), with the interpreter
        the sweep runs under (``sys.executable``, the manifest's ``python``), quoted for a POSIX shell."""
        return shlex.join([sys.executable or "python", *self.argv])


def parse_seeds(text: str) -> list[int]:
    """``0-9``, ``3``, ``1,4,7`` or ``0-4,10-12``: distinct seeds >= 0 in the order written."""
    seeds: list[int] = []
    for part in text.split(","):
        m = _SEEDS.fullmatch(part.strip())
        if not m:
            raise PlanError(f"--seeds {text!r}: expected seeds >= 0 such as 0-9, 3 or 1,4,7")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise PlanError(f"--seeds {text!r}: the range {part.strip()} is empty (write it low-high)")
        if hi - lo + len(seeds) >= MAX_RUNS:
            raise PlanError(f"--seeds {text!r}: more than {MAX_RUNS:,} seeds")
        seeds.extend(range(lo, hi + 1))
    if len(set(seeds)) != len(seeds):
        raise PlanError(f"--seeds {text!r}: a seed is listed twice")
    return seeds


def split_values(raw: str) -> list[str]:
    """Split ``v1,v2,...`` at the commas outside YAML brackets, braces and quotes (``[1, 2],[3]`` is two)."""
    values, depth, quote, start = [], 0, None, 0
    for i, ch in enumerate(raw):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
            if depth < 0:
                break
        elif ch == "," and depth == 0:
            values.append(raw[start:i].strip())
            start = i + 1
    if depth != 0 or quote:
        raise ValueError("unbalanced brackets or quotes")
    values.append(raw[start:].strip())
    return values


def parse_grid(specs: list[str]) -> list[tuple[str, list[str]]]:
    """Each ``--grid key=v1,v2`` as (key, values); keys distinct, values distinct per key."""
    grid: list[tuple[str, list[str]]] = []
    for spec in specs:
        key, sep, raw = spec.partition("=")
        key = key.strip()
        shown = spec if len(spec) <= 120 else spec[:117] + "..."
        if not sep or not all(_SEGMENT.fullmatch(s) for s in key.split(".")):
            raise PlanError(f"--grid {shown!r}: expected path.to.key=value1,value2,... (a key of the scenario)")
        try:
            values = split_values(raw)
        except ValueError as exc:
            raise PlanError(f"--grid {shown!r}: {exc}") from None
        if len(set(values)) != len(values):
            raise PlanError(f"--grid {shown!r}: a value is listed twice")
        if key == "seed":  # each run's --seed would win over it: every value would run the same seeds
            raise PlanError(f"--grid {shown!r}: the sweep sets the seed; list the seeds in --seeds "
                            f"(--seeds {','.join(values)})")
        if any(key == k for k, _ in grid):
            raise PlanError(f"--grid {key}: given twice (list every value in one --grid)")
        grid.append((key, values))
    return grid


def _short_keys(keys: list[str]) -> dict[str, str]:
    """Each key's shortest dotted suffix that is not a suffix of another key (``algorithm.params.lr`` -> ``lr``)."""
    split = {k: k.split(".") for k in keys}

    def suffix_of(tail: list[str], other: str) -> bool:
        parts = split[other]
        return len(parts) >= len(tail) and parts[len(parts) - len(tail):] == tail

    out = {}
    for key, parts in split.items():
        for k in range(1, len(parts) + 1):
            if not any(suffix_of(parts[-k:], other) for other in keys if other != key):
                break
        out[key] = ".".join(parts[-k:])
    return out


def _token(value: str) -> str:
    """A value as a folder-name token: itself when plain, else its safe characters and a short hash."""
    if _PLAIN.fullmatch(value):
        return value
    safe = re.sub(r"[^A-Za-z0-9._+-]+", "-", value).strip("-")[:32]
    digest = hashlib.sha1(value.encode()).hexdigest()[:6]
    return f"{safe}-{digest}" if safe else digest


def expand_grid(grid: list[tuple[str, list[str]]]) -> list[Setting]:
    """The cartesian product of ``grid`` (the first key varies slowest); one ``default`` setting when empty."""
    if not grid:
        return [Setting(DEFAULT_SETTING, ())]
    short = _short_keys([k for k, _ in grid])
    settings = []
    for combo in itertools.product(*(values for _, values in grid)):
        values = tuple((key, value) for (key, _), value in zip(grid, combo))
        settings.append(Setting(",".join(f"{short[k]}={_token(v)}" for k, v in values), values))
    return settings


def plan_runs(scenario: str, settings: list[Setting], seeds: list[int], out: Path,
              figures: bool = True) -> list[Run]:
    """Every run, setting by setting and seed by seed, each into ``out/<setting>/s<seed>``."""
    runs = []
    for setting in settings:
        for seed in seeds:
            run_out = out / setting.name / f"s{seed}"
            argv = ["-m", "fleet.run", scenario, "--seed", str(seed)]
            for override in setting.overrides:
                argv += ["--set", override]
            argv += ["--out", str(run_out), "--quiet", *([] if figures else ["--no-figures"])]
            runs.append(Run(setting, seed, run_out, tuple(argv)))
    return runs


def _complete(path: Path, seed: int) -> dict | None:
    """The summary at ``path`` when it is whole (it parses, and it is the run of ``seed``), else None."""
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or summary.get("seed") != seed or "event_log_sha256" not in summary:
        return None
    return summary


def run_summaries(run: Run, variants: list[str]) -> dict[str, dict] | None:
    """``{variant: summary}`` of a finished run, or None while any part is missing or incomplete.

    One variant: ``OUT/summary.json``; several (a scenario with ``variants``): ``OUT/<variant>/summary.json`` for
    each and ``OUT/comparison.json``, which ``fleet.run`` writes after the last variant."""
    if len(variants) == 1:
        summary = _complete(run.out / "summary.json", run.seed)
        return None if summary is None else {variants[0]: summary}
    found = {v: _complete(run.out / v / "summary.json", run.seed) for v in variants}
    if any(s is None for s in found.values()) or not (run.out / "comparison.json").is_file():
        return None
    return found


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, in hex (``OSError`` when it cannot be read)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _canonical(node):
    """``node`` (parsed YAML) as JSON-ready data that two values share only when they are equal: mappings as
    their items sorted by key, floats and any non-JSON scalar tagged with their type (``1`` is not ``1.0``)."""
    if isinstance(node, dict):
        items = [(json.dumps(_canonical(k), sort_keys=True), _canonical(v)) for k, v in node.items()]
        return {"map": sorted(items, key=lambda kv: kv[0])}
    if isinstance(node, (list, tuple)):
        return [_canonical(v) for v in node]
    if node is None or isinstance(node, (bool, int, str)):
        return node
    return {type(node).__name__: repr(node)}


def content_sha256(path: str | Path) -> str:
    """The SHA-256 of a scenario file's parsed YAML content (canonical JSON): comments, key order, quoting and
    layout do not count, any value does. ``OSError`` when it cannot be read, ``ValueError`` when it is not
    UTF-8 YAML (read as every scenario is: ``fleet.app.scenario.read_yaml``)."""
    from fleet.app.scenario import read_yaml

    data = read_yaml(Path(path))  # ScenarioError, a ValueError, names the file
    text = json.dumps(_canonical(data), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _same_path(old: str, old_cwd, new: str) -> bool:
    """Whether ``old`` (as recorded, relative to ``old_cwd``) and ``new`` (relative to here) name one file."""
    if old == new:
        return True
    base = Path(old_cwd) if isinstance(old_cwd, str) else Path.cwd()
    return (base / old).resolve() == Path(new).resolve()


def _same_scenario(doc: dict, scenario: str, hashes: dict[str, str], out: Path, fix: str) -> None:
    """Refuse ``doc`` (a manifest) of another scenario: by ``scenario_content_sha256`` when it has one, else (a
    manifest of an older sweep) by ``scenario_sha256`` (the file's bytes), else by the path as recorded."""
    old = doc["scenario"]
    for field in ("scenario_content_sha256", "scenario_sha256"):
        old_sha = doc.get(field)
        if isinstance(old_sha, str):
            if old_sha != hashes[field]:
                raise PlanError(f"--out {out} holds a sweep of another scenario: {old} (sha256 {old_sha[:12]}) "
                                f"there, {scenario} (sha256 {hashes[field][:12]}) here; {fix}")
            return
    if not _same_path(old, doc.get("cwd"), scenario):
        raise PlanError(f"--out {out} holds a sweep of another scenario file: {old} there, {scenario} here; {fix}")


def check_reuse(out: Path, scenario: str, hashes: dict[str, str], settings: list[Setting]) -> dict | None:
    """Refuse (``PlanError``) to reuse ``out`` when its ``manifest.json`` is another sweep's: another scenario
    (``hashes``: ``scenario_content_sha256``, of its parsed content, and ``scenario_sha256``, of its bytes; a
    manifest compared by the first it records, or by its path as recorded when it has neither), or a setting
    folder this sweep would reuse that was made with other overrides. Return the manifest (None without one)."""
    path = out / "manifest.json"
    fix = f"use another --out, or delete {out}"
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise PlanError(f"--out {out}: cannot read its manifest.json ({reason}); {fix}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("scenario"), str) or not isinstance(doc.get("runs"), list):
        raise PlanError(f"--out {out}: its manifest.json is not a sweep's manifest; {fix}")
    _same_scenario(doc, scenario, hashes, out, fix)
    made = {}
    for run in doc["runs"]:
        if isinstance(run, dict) and isinstance(run.get("setting"), str):
            made.setdefault(run["setting"], run.get("overrides"))
    for setting in settings:
        if setting.name in made and made[setting.name] != setting.overrides:
            before = " ".join(made[setting.name]) if isinstance(made[setting.name], list) else "?"
            raise PlanError(f"--out {out}: its setting folder {setting.name} was made with other overrides "
                            f"({before or 'none'} there, {' '.join(setting.overrides) or 'none'} here); {fix}")
    return doc


def _str_list(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _recorded(record, out: Path) -> Run | None:
    """The run a manifest ``record`` describes (its folder ``out/<setting>/s<seed>``, no argv: it is not run
    again), or None when the record is malformed or names no safe folder."""
    if not isinstance(record, dict):
        return None
    name, seed, overrides = record.get("setting"), record.get("seed"), record.get("overrides")
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name:
        return None
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        return None
    if not _str_list(overrides) or not all("=" in o for o in overrides):
        return None
    if not _str_list(record.get("variants")) or not record["variants"]:
        return None
    values = tuple(tuple(o.split("=", 1)) for o in overrides)
    return Run(Setting(name, values), seed, out / name / f"s{seed}", ())


def recorded_runs(doc: dict | None, out: Path, planned: list[Run]) -> list[tuple[Run, dict]]:
    """The runs an earlier sweep into ``out`` recorded in its manifest ``doc`` that this sweep does not plan
    (``planned``) and whose folder is still there, each with its record as written, sorted by setting name and
    seed. A record is left out when it is malformed, lists a run again, or gives a setting name other
    overrides than this sweep or an earlier record does (its folder cannot be both)."""
    values = {run.setting.name: run.setting.values for run in planned}
    taken = {(run.setting.name, run.seed) for run in planned}
    found: dict[tuple[str, int], tuple[Run, dict]] = {}
    for record in (doc or {}).get("runs", []):
        run = _recorded(record, out)
        if run is None or (run.setting.name, run.seed) in taken or not run.out.is_dir():
            continue
        if values.setdefault(run.setting.name, run.setting.values) != run.setting.values:
            continue
        taken.add((run.setting.name, run.seed))
        found[(run.setting.name, run.seed)] = (run, record)
    return [found[key] for key in sorted(found)]


def argv_to_run(run: Run) -> tuple[str, ...]:
    """What to run for ``run`` now: its command, plus ``--resume`` when its folder holds learning checkpoints of
    a round (a run interrupted earlier: ``fleet.run --resume`` continues it to the same result instead of
    starting again)."""
    from fleet.app.out_folder import holds_checkpoints

    if holds_checkpoints(run.out):
        return (*run.argv, "--resume")
    return run.argv
