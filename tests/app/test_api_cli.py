"""The Python API against the CLI: the same summary and event-log hash for every shipped scenario.

The CLI writes summary.json and events.csv; ``fleet.simulate`` with the same overrides keeps them in memory.
Everything but ``wall_s`` (the wall time the run took) must be equal, and the hash must be the SHA-256 of
the CLI's events.csv. Learning scenarios run one round on a slice of the data; the long ones are slow.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import pytest

import fleet
from fleet.api import Run, RunSet
from fleet.app.run import main

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))
TIMING = ["coordinator.rounds=3"]
LEARNING = ["coordinator.rounds=1", "data.max_train_samples=400", "data.max_test_samples=100"]
LEARNING_ALL_DATA = ["coordinator.rounds=1", "data.max_test_samples=200"]  # fleets too large to split 400
CASES = {  # scenario -> (overrides, variant or None for all, slow)
    "smoke": ([], None, False),
    "stragglers": (TIMING, None, False),
    "trace_small": (TIMING, None, False),
    "digits_20": (LEARNING, "fedavg", False),
    "iot_1000": (LEARNING_ALL_DATA, None, True),
    "compare": (LEARNING_ALL_DATA, None, True),
}


def test_every_shipped_scenario_has_a_case():
    assert {p.stem for p in SCENARIOS} <= set(CASES), "add the new scenario to CASES"


def _without_wall(summary: dict) -> dict:
    return {k: v for k, v in json.loads(json.dumps(summary, allow_nan=False)).items() if k != "wall_s"}


def assert_same_as_cli(run: Run, folder: Path) -> None:
    cli = json.loads((folder / "summary.json").read_text())
    assert _without_wall(run.summary) == _without_wall(cli)
    events = hashlib.sha256((folder / "events.csv").read_bytes()).hexdigest()
    assert run.event_log_sha256 == cli["event_log_sha256"] == events


def _cli_and_api(tmp_path: Path, stem: str) -> tuple[Run | RunSet, Path]:
    overrides, variant, _ = CASES[stem]
    path = ROOT / "scenarios" / f"{stem}.yaml"
    scenario = path
    if variant is not None:  # the CLI runs every variant: give it a file with only this one
        text = path.read_text()
        import yaml

        data = yaml.safe_load(text)
        data["variants"] = {variant: data["variants"][variant]}
        scenario = tmp_path / path.name
        scenario.write_text(yaml.safe_dump(data))
    out = tmp_path / "cli"
    args = [str(scenario), "--out", str(out), "--quiet", "--no-figures"]
    assert main([*args, *(a for o in overrides for a in ("--set", o))]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fleet.simulate(path, set=overrides, variant=variant), out


@pytest.mark.parametrize("stem", [pytest.param(s, marks=pytest.mark.slow) if slow else s
                                  for s, (_, _, slow) in CASES.items()])
def test_the_api_gives_the_cli_summary_and_event_log_hash(tmp_path, stem):
    if not (ROOT / "scenarios" / f"{stem}.yaml").exists():
        pytest.skip(f"scenarios/{stem}.yaml is not shipped")
    result, out = _cli_and_api(tmp_path, stem)
    if isinstance(result, RunSet):
        assert len(result) > 1 and {p.name for p in out.iterdir() if p.is_dir()} >= set(result)
        for name, run in result.items():
            assert_same_as_cli(run, out / name)
    else:
        assert_same_as_cli(result, out)
