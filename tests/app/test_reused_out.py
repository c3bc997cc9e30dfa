"""An ``--out`` folder used again: the new run's files only, never a mix of two runs'; an empty ``--out`` refused."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

import fleet

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = {"name": "reuse", "seed": 1,
            "fleet": {"devices": 20, "mix": [{"device_class": "rpi4_4gb", "link_class": "wifi", "fraction": 1.0}]},
            "algorithm": {"name": "fedavg", "params": {"model": "cnn", "local_steps": 2}},
            "coordinator": {"mode": "sync", "rounds": 2, "clients_per_round": 5}}


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_a_run_without_figures_and_in_parquet_removes_the_earlier_csv_and_figures(tmp_path):
    pytest.importorskip("pyarrow")
    fleet.simulate(SCENARIO, out=tmp_path, figures=True, events="csv")
    assert {"events.csv", "summary.json"} <= _files(tmp_path)
    assert any(name.startswith("figures/") for name in _files(tmp_path))
    (tmp_path / "notes.txt").write_text("mine")  # not an output: left alone

    fleet.simulate(SCENARIO, out=tmp_path, figures=False, events="parquet")
    assert _files(tmp_path) == {"events.parquet", "rounds.csv", "report.md", "summary.json", "notes.txt"}


def test_a_csv_run_after_a_parquet_one_has_a_log_that_matches_its_summary(tmp_path):
    pytest.importorskip("pyarrow")
    fleet.simulate(SCENARIO, out=tmp_path, figures=False, events="parquet")
    fleet.simulate(SCENARIO, out=tmp_path, figures=False, events="csv")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert not (tmp_path / "events.parquet").exists()
    assert hashlib.sha256((tmp_path / "events.csv").read_bytes()).hexdigest() == summary["event_log_sha256"]


@pytest.mark.parametrize("out", ["", " "])
def test_an_empty_out_is_refused_and_nothing_is_written(tmp_path, out):
    scenario = tmp_path / "s.json"
    scenario.write_text(json.dumps(SCENARIO))
    cwd = tmp_path / "here"
    cwd.mkdir()
    done = subprocess.run([sys.executable, "-m", "fleet.run", str(scenario), "--out", out, "--quiet"], cwd=cwd,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert f"error: argument --out: {out!r}: an empty path (use '.' for the working directory)" in done.stderr
    assert list(cwd.iterdir()) == []
