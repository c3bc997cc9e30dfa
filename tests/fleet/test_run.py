"""The command line end to end: outputs, determinism, every scenario file, bad input."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fleet.run import main
from fleet.study import DROPOUT_CAUSES

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))
SHORT = ["--set", "coordinator.rounds=3", "--no-figures", "--quiet"]


def _run(tmp_path, scenario, *extra):
    out = tmp_path / "out"
    assert main([str(scenario), "--out", str(out), *SHORT, *extra]) == 0
    return out


def test_smoke_run_writes_every_output(tmp_path):
    out = tmp_path / "out"
    assert main([str(ROOT / "scenarios/smoke.yaml"), "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    for key in ("devices", "rounds", "sim_time_s", "client_tasks", "updates_accepted",
                "dropouts", "round_time_s", "event_log_sha256", "seed", "wall_s"):
        assert key in summary
    assert set(DROPOUT_CAUSES) <= set(summary["dropouts"])
    assert set(summary["round_time_s"]) == {"p50", "p90", "p99"}
    assert summary["devices"] == 50 and summary["rounds"] == 5
    events = (out / "events.csv").read_bytes()
    assert hashlib.sha256(events).hexdigest() == summary["event_log_sha256"]
    header = events.splitlines()[0].decode().split(",")
    assert header[0] == "time_s" and "compute_s" in header and "demand_bytes" in header
    with (out / "rounds.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 5
    figures = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert figures == ["completion_cdf.png", "dropouts.png", "memory.png", "participation.png"]
    report = (out / "report.md").read_text()
    assert all(f"figures/{name}" in report for name in figures)
    # Outcomes add up: every dispatched task ended in one way or is still in flight at the end.
    dropped = sum(summary["dropouts"].values())
    assert summary["updates_accepted"] + dropped <= summary["client_tasks"]


def test_same_seed_same_log_and_another_seed_another(tmp_path):
    scenario = ROOT / "scenarios/iot_1000.yaml"
    hashes = []
    for i, seed in enumerate((1, 1, 2)):
        out = tmp_path / f"run{i}"
        assert main([str(scenario), "--out", str(out), "--seed", str(seed), *SHORT]) == 0
        hashes.append(json.loads((out / "fedavg" / "summary.json").read_text())["event_log_sha256"])
    assert hashes[0] == hashes[1]
    assert hashes[2] != hashes[0]


@pytest.mark.slow
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_every_scenario_file_runs(tmp_path, scenario):
    out = _run(tmp_path, scenario)
    summaries = list(out.rglob("summary.json"))
    assert summaries
    for path in summaries:
        summary = json.loads(path.read_text())
        assert summary["rounds"] == 3 and summary["client_tasks"] > 0


def test_variants_run_side_by_side(tmp_path):
    out = _run(tmp_path, ROOT / "scenarios/stragglers.yaml")
    assert {p.name for p in out.iterdir() if p.is_dir()} == {"sync_deadline", "fedbuff"}
    table = (out / "comparison.md").read_text()
    assert "| sync_deadline |" in table and "| fedbuff |" in table


def _cli(*args, cwd=ROOT):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "fleet.run", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("content, field", [
    ("fleet: {devices: -3}\n", "fleet.devices"),
    ("fleet: {mix: [{device_class: toaster, link_class: wifi, fraction: 1}]}\n",
     "fleet.mix.0.device_class"),
    ("coordinator: {rounds: 2, colour: blue}\n", "coordinator.colour"),
])
def test_cli_bad_scenario_is_one_line_and_exit_2(tmp_path, content, field):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    result = _cli(str(path), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and field in lines[0], result.stderr


def test_cli_missing_file_and_bad_set(tmp_path):
    result = _cli(str(tmp_path / "absent.yaml"))
    assert result.returncode == 2 and "no such scenario file" in result.stderr
    assert "Traceback" not in result.stderr
    result = _cli("scenarios/smoke.yaml", "--set", "coordinator.rounds")
    assert result.returncode == 2 and "path.to.key=value" in result.stderr


def test_default_output_folder_is_under_runs(tmp_path):
    result = _cli(str(ROOT / "scenarios/smoke.yaml"), "--quiet", "--no-figures", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    printed = Path(result.stdout.strip())
    assert printed.parts[0] == "runs" and printed.name.startswith("smoke-")
    assert (tmp_path / printed / "summary.json").exists()


def test_help_does_not_import_torch():
    code = ("import sys, runpy; sys.argv=['fleet.run','--help']\n"
            "try:\n    runpy.run_module('fleet.run', run_name='__main__')\n"
            "except SystemExit: pass\n"
            "assert 'torch' not in sys.modules, 'torch imported by --help'")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
