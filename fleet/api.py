"""The Python API, for notebooks: ``fleet.simulate(scenario, set=..., seed=...)`` runs a scenario in memory.

``simulate`` takes a scenario file's path or a dict of the same keys, validated by the same schema with the
same messages (a bad one raises ``ScenarioError``, one line naming the field), and returns a ``Run`` (one
scenario) or a ``RunSet`` (a scenario whose ``variants`` run side by side: variant name -> ``Run``). A
``Run`` holds the very ``summary`` dict ``summary.json`` gets, the ``event_log_sha256`` the CLI prints,
and the events, rounds, evaluations and devices as pandas DataFrames (pandas is the optional ``pandas``
extra, imported when a table is first read). Nothing is written unless asked: ``out=`` writes what
``python -m fleet.run --out`` writes, as does ``Run.write`` / ``RunSet.write`` afterwards. The CLI
(``fleet.app.run``) calls the same functions: ``load_variants``, ``fleet.app.simulation.run_scenario`` and
``fleet.app.report.write_outputs``; ``tests/app/test_api_cli.py`` holds the two equal for every shipped
scenario.
"""

from __future__ import annotations

import copy
import io
import numbers
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from fleet.app.out_folder import OutFolderError
from fleet.app.scenario import Scenario, ScenarioError

if TYPE_CHECKING:
    import pandas

    from fleet.app.simulation import Simulation

__all__ = ["OutFolderError", "Run", "RunSet", "Scenario", "ScenarioError", "ScenarioWarning", "load", "simulate"]

PANDAS_MISSING = "fleet's DataFrames need pandas: pip install 'fleet-sim[pandas]' (or pandas)"


class ScenarioWarning(UserWarning):
    """What a scenario allows but probably does not mean (``fleet.app.scenario.scenario_warnings``)."""


def _pandas():
    try:
        import pandas
    except ImportError:
        raise ImportError(PANDAS_MISSING) from None
    return pandas


class Run:
    """One finished run: ``name`` (the scenario's or the variant's), ``scenario`` (validated, frozen),
    ``simulation`` (the finished ``fleet.app.simulation.Simulation``), ``summary`` (summary.json's dict),
    ``event_log_sha256``, ``out`` (where it was written, or None), and its tables as DataFrames."""

    def __init__(self, name: str, scenario: Scenario, simulation: Simulation, summary: dict,
                 out: Path | None = None) -> None:
        self.name, self.scenario, self.simulation, self.summary, self.out = name, scenario, simulation, summary, out
        self._tables: dict[str, Any] = {}

    @property
    def event_log_sha256(self) -> str:
        """SHA-256 of the event log's CSV text (events.csv's bytes), as in ``summary``."""
        return self.summary["event_log_sha256"]

    def __repr__(self) -> str:
        from fleet.app.printing import count

        s = self.summary
        return (f"<Run {self.name}: {count(s['devices'], 'device')}, {s['rounds_aggregated']} of "
                f"{count(s['rounds'], 'round')} "
                f"aggregated, {s['sim_time_s']:.1f} s virtual, events {self.event_log_sha256[:12]}>")

    def _table(self, name: str, make: Callable[[], Any]):
        if name not in self._tables:
            self._tables[name] = make()
        return self._tables[name]

    @property
    def events(self) -> pandas.DataFrame:
        """The event log, a row per event (``fleet.core.recorder.EVENT_COLUMNS``): floats with NaN for an empty
        cell, integers as nullable ``Int64``, ``event`` and ``cause`` as categoricals."""
        return self._table("events", self._events)

    def _events(self):
        import numpy as np

        pd = _pandas()
        table = self.simulation.kernel.recorder.table()
        data = {}
        for name, values in table.columns.items():
            if name in table.names:
                data[name] = pd.Categorical.from_codes(values.astype(np.int64), table.names[name])
            elif values.dtype.kind == "i":
                data[name] = pd.arrays.IntegerArray(values, values == -1)
            else:
                data[name] = values
        return pd.DataFrame(data)

    @property
    def rounds(self) -> pandas.DataFrame:
        """rounds.csv as a DataFrame: a row per round (or aggregation), then the one open when the run stopped."""
        return self._table("rounds", lambda: self._csv("rounds"))

    @property
    def evaluations(self) -> pandas.DataFrame:
        """evaluations.csv as a DataFrame (no rows in timing mode)."""
        return self._table("evaluations", lambda: self._csv("evaluations"))

    def _csv(self, which: str):
        """rounds.csv or evaluations.csv, cell for cell, read back as a DataFrame."""
        from fleet.app.report import evaluations_csv, rounds_csv
        from fleet.app.study import analyse

        text = io.StringIO(newline="")
        if which == "rounds":
            rounds_csv(self.simulation, analyse(self.simulation), text)
        else:
            evaluations_csv(self.simulation, text)
        text.seek(0)
        return _pandas().read_csv(text)

    @property
    def devices(self) -> pandas.DataFrame:
        """The fleet, a row per device (``fleet.app.dry_run.fleet_columns``): class, link, speed, rates, memory."""
        def make():
            from fleet.app.dry_run import fleet_columns

            return _pandas().DataFrame(fleet_columns(self.simulation.profiles))

        return self._table("devices", make)

    def write(self, out: str | os.PathLike, *, figures: bool = True, events: str = "auto") -> Path:
        """Write what ``python -m fleet.run --out OUT`` writes for this run (summary.json, events, rounds.csv,
        evaluations.csv when it learned, report.md, figures/ unless ``figures=False``); the folder. A run made in
        memory has no learning checkpoints to write (``simulate(out=...)`` keeps them). The arguments are checked
        before anything is made, as ``simulate``'s; a folder this made is removed again if writing fails while it is
        still empty."""
        from fleet.app.out_folder import out_folder
        from fleet.app.report import write_outputs

        out = _check_writing(out, figures, events)
        with out_folder(out, "out"):
            write_outputs(self.simulation, out, figures=figures, events=events)
        self.out = out
        return out


class RunSet(Mapping):
    """A scenario's variants, run side by side: variant name -> ``Run``, in the file's order. ``summaries``,
    and ``events``, ``rounds``, ``evaluations``, ``devices``: each variant's table with a ``variant`` column
    first."""

    def __init__(self, runs: dict[str, Run], out: Path | None = None) -> None:
        self._runs, self.out = dict(runs), out

    def __getitem__(self, name: str) -> Run:
        return self._runs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._runs)

    def __len__(self) -> int:
        return len(self._runs)

    def __repr__(self) -> str:
        return f"<RunSet of {len(self)}: {', '.join(self._runs)}>"

    @property
    def summaries(self) -> dict[str, dict]:
        return {name: run.summary for name, run in self._runs.items()}

    def _joined(self, table: str):
        pd = _pandas()
        return pd.concat([getattr(run, table).assign(variant=name)[["variant", *getattr(run, table).columns]]
                          for name, run in self._runs.items()], ignore_index=True)

    @property
    def events(self) -> pandas.DataFrame:
        return self._joined("events")

    @property
    def rounds(self) -> pandas.DataFrame:
        return self._joined("rounds")

    @property
    def evaluations(self) -> pandas.DataFrame:
        return self._joined("evaluations")

    @property
    def devices(self) -> pandas.DataFrame:
        return self._joined("devices")

    def write(self, out: str | os.PathLike, *, figures: bool = True, events: str = "auto") -> Path:
        """Write what the CLI writes for the variants: one folder each under ``out`` (``out`` itself when there
        is one) and, for several, the comparison (``comparison.md`` and the rest); the folder. Checked and cleaned
        up as ``Run.write``."""
        from fleet.app.out_folder import out_folder

        out = _check_writing(out, figures, events)
        with out_folder(out, "out"):
            for name, run in self._runs.items():
                run.write(out if len(self) == 1 else out / name, figures=figures, events=events)
            _compare(out, self._runs, figures)
        self.out = out
        return out


def _compare(out: Path, runs: dict[str, Run], figures: bool) -> None:
    if len(runs) > 1:
        from fleet.app.report import write_comparison

        evaluations = {name: run.simulation.record.evaluations for name, run in runs.items()}
        write_comparison([(name, run.summary) for name, run in runs.items()], out,
                         {k: v for k, v in evaluations.items() if v} if figures else None)


def _assignments(overrides) -> list[str]:
    """``set=`` as ``path=value`` strings: a list of them as is, or a dict of path -> value (a Python value,
    written as YAML so the loader reads it back unchanged)."""
    if overrides is None:
        return []
    if isinstance(overrides, str):
        return [overrides]
    if not isinstance(overrides, Mapping):
        return list(overrides)
    import yaml

    from fleet.app.scenario import yaml_text

    out = []
    for path, value in overrides.items():
        if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
            value = value.tolist()  # a numpy scalar or array: its Python value
        try:
            out.append(f"{path}={yaml_text(value)}")
        except yaml.YAMLError:
            raise ScenarioError(f"set {path}: {type(value).__name__} is not a YAML value") from None
    return out


def _from_dict(data: Mapping, overrides: list[str]) -> list[tuple[str, Scenario]]:
    """``load_variants`` for a dict (relative trace paths read from the working directory); the caller's dict
    is never changed."""
    from fleet.app.scenario import parse_variants

    data = copy.deepcopy(dict(data))
    if isinstance(data.get("variants"), Mapping):
        data["variants"] = dict(data["variants"])
    return parse_variants(data, overrides, "scenario", option="set")


def _type_name(value) -> str:
    return type(value).__name__


def _check_load_args(overrides, seed, variant) -> None:
    """``TypeError``, one line naming the argument and what it takes, for a ``set``, ``seed`` or ``variant`` of
    the wrong type (their values are the schema's to check)."""
    from fleet.app.scenario import echo

    if isinstance(overrides, Mapping):
        for key in overrides:
            if not isinstance(key, str):
                raise TypeError(f"set: key {echo(key)} ({_type_name(key)}) is not a str "
                                f"(a dotted path such as 'coordinator.rounds')")
    elif isinstance(overrides, (list, tuple)):
        for item in overrides:
            if not isinstance(item, str):
                raise TypeError(f"set: {echo(item)} ({_type_name(item)}) is not a 'path=value' str")
    elif overrides is not None and not isinstance(overrides, str):
        raise TypeError(f"set must be a dict of dotted path -> value or a list of 'path=value' strings, "
                        f"got {_type_name(overrides)}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise TypeError(f"seed must be an int or None, got {_type_name(seed)}")
    if variant is not None and not isinstance(variant, str):
        raise TypeError(f"variant must be a variant's name (a str) or None, got {_type_name(variant)}")


def _check_writing(out, figures, events) -> Path | None:
    """``out`` as a Path (None stays None), once ``figures`` and ``events`` are known good and ``events`` is
    writable: ``TypeError`` for a wrong type, ``ValueError`` for an ``events`` not in ``EVENT_FORMATS``,
    ``OutFolderError`` for an empty ``out``, ``ImportError`` for Parquet without pyarrow. Nothing is made
    here: ``check_out_folder`` proves the folder writable."""
    from fleet.app.report import EVENT_FORMATS, parquet_available

    if not isinstance(figures, bool):
        raise TypeError(f"figures must be True or False, got {figures!r}"[:300])
    if not isinstance(events, str) or events not in EVENT_FORMATS:
        raise ValueError(f"events must be one of {', '.join(EVENT_FORMATS)}, got {events!r}"[:300])
    if out is None:
        return None
    if not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out must be a folder's path (a str or a Path), got {_type_name(out)}")
    if isinstance(out, str) and not out.strip():
        raise OutFolderError(f"out {out!r}: an empty path (use '.' for the working directory)")
    out = Path(out)
    if events == "parquet" and not parquet_available():
        raise ImportError("events='parquet' needs pyarrow: pip install 'fleet-sim[parquet]' (or pyarrow)")
    return out


def load(scenario: str | os.PathLike | Mapping, set=None, seed: int | None = None,  # set: the CLI's --set
         variant: str | None = None) -> list[tuple[str, Scenario]]:
    """The validated scenarios ``simulate`` would run, as (name, ``Scenario``) pairs: every variant (or the
    one named), the overrides applied after each variant's own, as the CLI applies ``--set`` and ``--seed``.
    ``TypeError`` (one line naming the argument) for a ``scenario``, ``set``, ``seed`` or ``variant`` of the
    wrong type; ``ScenarioError`` for a bad value."""
    from fleet.app.scenario import load_variants, pick_variant

    if not isinstance(scenario, (Mapping, str, os.PathLike)):
        raise TypeError(f"scenario must be a path or a dict, got {_type_name(scenario)}")
    _check_load_args(set, seed, variant)
    overrides = _assignments(set) + ([f"seed={int(seed)}"] if seed is not None else [])
    if isinstance(scenario, Mapping):
        variants = _from_dict(scenario, overrides)
    elif isinstance(scenario, (str, os.PathLike)):
        variants = load_variants(scenario, overrides, "set")
    else:
        raise TypeError(f"scenario must be a path or a dict, got {type(scenario).__name__}")
    return pick_variant(variants, variant)


def simulate(scenario: str | os.PathLike | Mapping, *, set=None, seed: int | None = None,
             variant: str | None = None, out: str | os.PathLike | None = None, figures: bool = False,
             events: str = "auto", on_round: Callable[[int], None] | None = None) -> Run | RunSet:
    """Run ``scenario`` (a YAML file's path, or a dict of its keys) to the end, in memory.

    ``set``: overrides, a dict ``{"coordinator.rounds": 5}`` or a list of ``"path=value"`` strings (the CLI's
    ``--set``); ``seed``: the CLI's ``--seed``; ``variant``: run only that variant. ``out``: also write what
    ``python -m fleet.run --out OUT`` writes (``figures`` and ``events`` as ``--no-figures`` and ``--events``;
    learning checkpoints under ``OUT/checkpoints``). ``on_round(done)`` is called after each round.

    Returns a ``Run``, or a ``RunSet`` when several variants run (the CLI's rule for one folder per variant).
    Every argument is checked before anything is made or run, each error one line naming the argument:
    ``TypeError`` for a wrong type (``set`` a dict with str keys, a list of str or one str, ``seed`` an int,
    ``figures`` a bool, ``out`` a str or Path, ``on_round`` callable), ``ValueError`` for an ``events`` not auto, csv or
    parquet, ``ScenarioError`` for a bad scenario or override, ``fleet.app.out_folder.OutFolderError`` (a
    ``ValueError``) for an ``out`` that is not or cannot be a writable folder, ``ImportError`` for
    ``events="parquet"`` without pyarrow. A run that fails (a trace found bad while building the fleet raises
    ``ScenarioError``) removes the ``out`` folder it made if that is still empty. Raises
    ``fleet.learning.backends.BackendUnavailable`` when the executor goes away mid-run. Warns
    ``ScenarioWarning`` for what is legal but probably not meant."""
    from fleet.app.out_folder import out_folder
    from fleet.app.scenario import scenario_warnings

    base = _check_writing(out, figures, events)
    if on_round is not None and not callable(on_round):
        raise TypeError(f"on_round must be a function of the rounds done, or None, got {_type_name(on_round)}")
    variants = load(scenario, set, seed, variant)
    said: list[str] = []
    for _, s in variants:
        for line in scenario_warnings(s):
            if line not in said:
                said.append(line)
                warnings.warn(line, ScenarioWarning, stacklevel=2)
    if base is None:
        return _run_all(variants, None, figures, events, on_round)
    with out_folder(base, "out"):
        return _run_all(variants, base, figures, events, on_round)


def _run_all(variants: list[tuple[str, Scenario]], base: Path | None, figures: bool, events: str,
             on_round: Callable[[int], None] | None) -> Run | RunSet:
    """Run ``variants`` in turn, writing each under ``base`` unless it is None; ``simulate``'s result."""
    from fleet.app.simulation import checkpoint_dir, run_scenario

    runs: dict[str, Run] = {}
    for name, s in variants:
        run_out = None if base is None else base if len(variants) == 1 else base / name
        sim = run_scenario(s, None if run_out is None else checkpoint_dir(s, run_out), on_round)
        if run_out is None:
            from fleet.app.study import analyse, summary

            summ = summary(sim, analyse(sim), sim.event_log_sha256)
        else:
            from fleet.app.report import write_outputs

            summ = write_outputs(sim, run_out, figures=figures, events=events)
        runs[name] = Run(name, s, sim, summ, run_out)
    if base is not None:
        _compare(base, runs, figures)
    return next(iter(runs.values())) if len(runs) == 1 else RunSet(runs, base)
