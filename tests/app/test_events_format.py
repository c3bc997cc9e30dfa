"""The event log as Parquet for large runs, CSV otherwise and on request; its hash is the CSV text's either way."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import fleet.app.report as report
from fleet.app.build import build_simulation
from fleet.app.run import main
from fleet.app.scenario import load_scenario
from fleet.core.recorder import EVENT_COLUMNS, EventRecorder, ParquetUnavailable

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "scenarios" / "smoke.yaml"


@pytest.fixture(scope="module")
def sim():
    return build_simulation(load_scenario(SMOKE, ["mode=timing"])).run()


def test_parquet_holds_the_rows_and_the_summary_the_csv_hash(sim, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    summ = report.write_outputs(sim, tmp_path, figures=False, events="parquet")
    assert not (tmp_path / "events.csv").exists()
    table = pq.read_table(tmp_path / "events.parquet")
    assert table.column_names == list(EVENT_COLUMNS)
    assert [tuple(row.values()) for row in table.to_pylist()] == sim.kernel.recorder.rows
    assert summ["event_log_sha256"] == sim.kernel.recorder.sha256()
    assert table.schema.field("time_s").type == "double" and table.schema.field("device").type == "int64"


def test_auto_writes_csv_up_to_the_threshold_and_parquet_above(sim, tmp_path, monkeypatch):
    pytest.importorskip("pyarrow")
    assert report.events_format(sim, "auto") == "csv" and report.events_format(sim, "csv") == "csv"
    monkeypatch.setattr(report, "PARQUET_ABOVE_EVENTS", len(sim.kernel.recorder.rows) - 1)
    assert report.events_format(sim, "auto") == "parquet"
    monkeypatch.setattr(report, "parquet_available", lambda: False)
    assert report.events_format(sim, "auto") == "csv"  # large, but nothing to write Parquet with
    with pytest.raises(ValueError, match="events must be one of"):
        report.events_format(sim, "xml")


def test_parquet_without_pyarrow_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if not installed
    with pytest.raises(ParquetUnavailable, match="pip install"):
        EventRecorder().write_parquet(tmp_path / "e.parquet")
    assert main([str(SMOKE), "--out", str(tmp_path / "out"), "--events", "parquet", "--quiet"]) == 2
    assert "--events parquet needs pyarrow" in capsys.readouterr().err
    assert not (tmp_path / "out" / "summary.json").exists()


def test_the_cli_writes_what_events_asks(tmp_path):
    out = tmp_path / "out"
    assert main([str(SMOKE), "--out", str(out), "--events", "csv", "--quiet", "--no-figures"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (out / "events.csv").exists() and summary["events"] > 0
