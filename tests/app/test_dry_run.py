"""``python -m fleet.run SCENARIO --dry-run``: the run's own fleet, and gates that the run then shows, without
running or writing anything."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fleet.app.dry_run import describe, dry_run, fleet_columns
from fleet.app.run import main
from fleet.app.scenario import load_scenario, load_variants
from fleet.app.simulation import run_scenario
from fleet.app.study import analyse, summary

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "scenarios/smoke.yaml"
STRAGGLERS = ROOT / "scenarios/stragglers.yaml"


def test_dry_run_prints_the_fleet_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main([str(SMOKE), "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and list(tmp_path.iterdir()) == []
    lines = out.splitlines()
    assert lines[0].startswith("smoke: 50 devices, seed 7, timing mode, sync coordination, algorithm zo, 5 rounds")
    rows = {line.split()[0]: line.split() for line in lines if line.split()[0] in ("rpi4_4gb", "mcu_tiny")}
    assert rows["rpi4_4gb"][1] == "25" and rows["mcu_tiny"][1] == "10"  # fractions 0.5 and 0.2 of 50


def test_the_dry_run_samples_the_runs_fleet():
    scenario = load_scenario(SMOKE, ["coordinator.rounds=1"])
    dry = dry_run(scenario)
    ran = fleet_columns(run_scenario(scenario).profiles)
    assert set(dry.columns) == {*ran, "online_at_0"}
    for name, values in ran.items():
        assert np.array_equal(dry.columns[name], values, equal_nan=values.dtype.kind == "f"), name
    other = dry_run(load_scenario(SMOKE, ["seed=8"]))
    assert not np.array_equal(other.columns["flops_per_s"], dry.columns["flops_per_s"])


def test_a_task_that_never_fits_is_refused_for_memory_in_the_run():
    """smoke's mcu_tiny devices have 0.2 MB free at best; zo's task asks 1.75 MB: every one is refused."""
    scenario = load_scenario(SMOKE)
    dry = dry_run(scenario)
    cls = dry.columns["device_class"]
    never = dry.gates["train"]["memory_never"]
    assert never[cls == "mcu_tiny"].all() and not never[cls != "mcu_tiny"].any()
    sim = run_scenario(scenario)
    row = summary(sim, analyse(sim), sim.event_log_sha256)["by_class"]["mcu_tiny"]
    assert row["client_tasks"] > 0 and row["updates_accepted"] == 0
    assert row["dropouts"] == {"memory": row["client_tasks"]}


def test_a_deadline_missed_at_full_speed_is_refused_as_hopeless():
    """stragglers' sync deadline: the ESP32s cannot compute fedavg's task in time even at full speed."""
    [(_, scenario), _] = load_variants(STRAGGLERS, ["coordinator.rounds=3"])
    dry = dry_run(scenario)
    cls, late = dry.columns["device_class"], dry.gates["train"]["deadline"]
    assert late[cls == "esp32_s3_psram"].all() and not late[cls == "jetson_nano"].any()
    sim = run_scenario(scenario)
    row = summary(sim, analyse(sim), sim.event_log_sha256)["by_class"]["esp32_s3_psram"]
    assert row["client_tasks"] > 0 and row["updates_accepted"] == 0
    assert set(row["dropouts"]) == {"deadline"}


def test_every_variant_is_described_under_its_name(capsys):
    assert main([str(STRAGGLERS), "--dry-run", "--set", "fleet.devices=100"]) == 0
    out = capsys.readouterr().out
    assert "stragglers (variant sync_deadline): 100 devices" in out and "stragglers (variant fedbuff)" in out
    assert "deadline" in out.split("(variant fedbuff)")[0] and "flop_budget" not in out.split("\n")[2]


def test_a_flop_budget_below_the_task_is_a_gate():
    dry = dry_run(load_scenario(SMOKE, ["devices.flop_budget_flops=1000"]))
    assert dry.gates["train"]["flop_budget"].all()
    assert "flop_budget" in describe(dry)


@pytest.mark.parametrize("args, words", [
    (["--set", "fleet.devices=-3"], "fleet.devices"),
    (["--set", "coordinator.rounds"], "path.to.key=value"),
])
def test_a_bad_scenario_is_one_line_exit_2(tmp_path, monkeypatch, capsys, args, words):
    monkeypatch.chdir(tmp_path)
    assert main([str(SMOKE), "--dry-run", *args]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and len(lines) == 1 and words in lines[0] and lines[0].startswith("fleet.run: scenario error:")
    assert list(tmp_path.iterdir()) == []
