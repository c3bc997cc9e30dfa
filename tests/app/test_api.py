"""``fleet.simulate``: paths and dicts, overrides, errors, nothing written unless asked, the DataFrames, and
``Run.write`` writing the CLI's files byte for byte."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from fleet.api import PANDAS_MISSING, OutFolderError, Run, RunSet, ScenarioError, ScenarioWarning, load, simulate
from fleet.app.run import main
from fleet.core.recorder import EVENT_COLUMNS

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "scenarios/smoke.yaml"
STRAGGLERS = ROOT / "scenarios/stragglers.yaml"
SMALL = {"coordinator.rounds": 2, "fleet.devices": 60}


@pytest.fixture(scope="module")
def smoke() -> Run:
    return simulate(SMOKE)


def test_fleet_simulate_is_the_api_and_import_fleet_stays_light():
    code = ("import sys, fleet\nassert 'fleet.api' not in sys.modules and 'torch' not in sys.modules\n"
            "from fleet.api import simulate\nassert fleet.simulate is simulate and fleet.__all__ == ['simulate']\n"
            "assert 'torch' not in sys.modules, 'fleet.api imports torch'\n"
            "try:\n    fleet.nothing\nexcept AttributeError as e:\n    assert 'nothing' in str(e)\n"
            "else:\n    raise SystemExit('no AttributeError')")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_a_path_and_its_dict_give_one_run_and_the_dict_is_left_as_it_was(smoke):
    data = yaml.safe_load(SMOKE.read_text())
    before = json.dumps(data, sort_keys=True)
    run = simulate(data, set={"seed": smoke.scenario.seed})
    assert json.dumps(data, sort_keys=True) == before
    assert run.event_log_sha256 == smoke.event_log_sha256 and run.name == "smoke"


def test_set_as_a_dict_reads_back_the_python_values():
    values = {"devices.slowdown_sigma": 1e-5, "name": "x: y # z", "fleet.devices": np.int64(12),
              "fleet.mix.0.fraction": 0.5, "fleet.mix.1.fraction": 0.5, "fleet.mix.2.fraction": 0.0,
              "fleet.mix.0.availability": {"diurnal": {"period_s": 3600.0, "on_fraction": 0.25}}}
    [(name, s)] = load(SMOKE, set=values)
    assert s.devices.slowdown_sigma == 1e-5 and s.name == name == "x: y # z" and s.fleet.devices == 12
    assert s.fleet.mix[0].availability.diurnal.on_fraction == 0.25
    as_strings = [f"{k}={v}" for k, v in {"devices.slowdown_sigma": "1.0e-5", "fleet.devices": 12}.items()]
    [(_, t)] = load(SMOKE, set=as_strings)
    assert t.devices.slowdown_sigma == 1e-5 and t.fleet.devices == 12


def test_seed_is_the_clis_seed(smoke):
    assert load(SMOKE, seed=5)[0][1].seed == 5
    assert simulate(SMOKE, seed=smoke.scenario.seed + 1).event_log_sha256 != smoke.event_log_sha256


def test_a_bad_scenario_raises_the_clis_one_line(tmp_path, capsys):
    status = main([str(SMOKE), "--out", str(tmp_path / "o"), "--quiet", "--set", "fleet.devices=-3"])
    line = capsys.readouterr().err.strip()
    assert status == 2
    with pytest.raises(ScenarioError) as caught:
        simulate(SMOKE, set={"fleet.devices": -3})
    assert line == f"fleet.run: scenario error: {caught.value}"
    with pytest.raises(ScenarioError, match=r"^scenario: fleet\.devices: "):
        simulate({"fleet": {"devices": -3}})
    with pytest.raises(ScenarioError, match="no such scenario file"):
        simulate(tmp_path / "absent.yaml")
    with pytest.raises(ScenarioError, match=r"variant 'nope': not a variant of the scenario; known: "
                                            r"sync_deadline, fedbuff"):
        simulate(STRAGGLERS, variant="nope")
    with pytest.raises(ScenarioError, match=r"^variant 'nope': the scenario has no variants \(its one run is "
                                            r"'smoke'\)$"):
        simulate(SMOKE, variant="nope")
    with pytest.raises(ScenarioError, match=r"variants\.a: must be a list"):
        simulate({"variants": {"a": "coordinator.rounds=1"}})
    with pytest.raises(TypeError):
        simulate(3)
    assert not (tmp_path / "o").exists()


def test_a_scenario_warning_is_a_python_warning():
    with pytest.warns(ScenarioWarning, match="coordinator.clients_per_round: K = 8 exceeds the 5 devices"):
        simulate({"fleet": {"devices": 5}, "coordinator": {"rounds": 1, "clients_per_round": 8}})


def test_nothing_is_written_unless_asked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    simulate(SMOKE, set=SMALL)
    simulate(STRAGGLERS, set=SMALL)
    assert list(tmp_path.iterdir()) == []


def test_write_and_out_write_the_clis_files_byte_for_byte(tmp_path, smoke):
    cli = tmp_path / "cli"
    assert main([str(SMOKE), "--out", str(cli), "--quiet", "--no-figures"]) == 0
    smoke.write(tmp_path / "api", figures=False)
    again = simulate(SMOKE, out=tmp_path / "out")
    assert again.out == tmp_path / "out"
    for folder in (tmp_path / "api", tmp_path / "out"):
        assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in cli.iterdir())
        for name in ("events.csv", "rounds.csv"):
            assert (folder / name).read_bytes() == (cli / name).read_bytes(), name
    written = json.loads((tmp_path / "api" / "summary.json").read_text())
    assert written == json.loads(json.dumps(smoke.summary))  # the very dict, wall_s included


def test_a_set_of_variants_writes_the_clis_folders(tmp_path):
    args = ["--set", "coordinator.rounds=2", "--set", "fleet.devices=60"]
    assert main([str(STRAGGLERS), "--out", str(tmp_path / "cli"), "--quiet", "--no-figures", *args]) == 0
    runs = simulate(STRAGGLERS, set=SMALL)
    assert isinstance(runs, RunSet) and list(runs) == ["sync_deadline", "fedbuff"]
    runs.write(tmp_path / "api", figures=False)
    cli_files = sorted(str(p.relative_to(tmp_path / "cli")) for p in (tmp_path / "cli").rglob("*"))
    assert sorted(str(p.relative_to(tmp_path / "api")) for p in (tmp_path / "api").rglob("*")) == cli_files
    for name in runs:
        assert (tmp_path / "api" / name / "events.csv").read_bytes() == \
            (tmp_path / "cli" / name / "events.csv").read_bytes()
    assert isinstance(simulate(STRAGGLERS, set=SMALL, variant="fedbuff"), Run)


def test_the_events_frame_is_the_event_log(tmp_path, smoke):
    pd = pytest.importorskip("pandas")
    events = smoke.events
    assert tuple(events.columns) == EVENT_COLUMNS
    smoke.write(tmp_path, figures=False)
    text = (tmp_path / "events.csv").read_bytes()
    assert hashlib.sha256(text).hexdigest() == smoke.event_log_sha256
    read = pd.read_csv(tmp_path / "events.csv")
    assert len(events) == len(read) == text.count(b"\n") - 1
    for column in EVENT_COLUMNS:
        ours, theirs = events[column], read[column]
        assert (ours.isna() == theirs.isna()).all(), column
        assert (ours.dropna().astype(str if column in ("event", "cause") else float).to_numpy()
                == theirs.dropna().to_numpy()).all(), column
    assert str(events["device"].dtype) == "Int64" and str(events["event"].dtype) == "category"
    assert smoke.events is events  # made once


def test_the_rounds_and_evaluations_frames_are_the_csvs(tmp_path, smoke):
    pd = pytest.importorskip("pandas")
    smoke.write(tmp_path, figures=False)
    pd.testing.assert_frame_equal(smoke.rounds, pd.read_csv(tmp_path / "rounds.csv"))
    assert len(smoke.rounds) == smoke.summary["rounds"] == 5
    assert smoke.evaluations.empty and "accuracy" in smoke.evaluations.columns  # timing mode


def test_the_devices_frame_is_the_fleet(smoke):
    pytest.importorskip("pandas")
    devices = smoke.devices
    assert list(devices["device"]) == list(range(smoke.summary["devices"]))
    counts = devices["device_class"].value_counts().to_dict()
    assert counts == {cls: row["devices"] for cls, row in smoke.summary["by_class"].items()}
    profiles = smoke.simulation.profiles
    assert devices["flops_per_s"].tolist() == [profiles[d].flops_per_s for d in range(len(profiles))]
    assert devices["free_bytes_max"].tolist() == [
        int(p.trainable_bytes - max(0.0, p.background.mean_bytes - p.background.amplitude_bytes)) for p in profiles]


def test_a_run_set_joins_its_tables_with_a_variant_column():
    pytest.importorskip("pandas")
    runs = simulate(STRAGGLERS, set=SMALL)
    rounds = runs.rounds
    assert list(rounds.columns[:2]) == ["variant", "round"]
    assert rounds.groupby("variant", sort=False).size().to_dict() == {
        name: len(run.rounds) for name, run in runs.items()}
    assert set(runs.summaries) == {"sync_deadline", "fedbuff"}


def test_without_pandas_a_table_says_how_to_install_it(smoke, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    run = simulate(SMOKE, set=SMALL)
    assert run.summary["rounds"] == 2  # the run and its summary need no pandas
    with pytest.raises(ImportError) as caught:
        run.rounds
    assert str(caught.value) == PANDAS_MISSING and "pip install 'fleet-sim[pandas]'" in PANDAS_MISSING


def test_on_round_is_called_after_each_round():
    done = []
    simulate(SMOKE, set=SMALL, on_round=done.append)
    assert done == [1, 2]


def test_an_out_that_cannot_be_written_is_refused_before_running(tmp_path, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("ran")

    monkeypatch.setattr("fleet.app.simulation.run_scenario", never)
    with pytest.raises(ValueError, match="events must be one of auto, csv, parquet, got 'xml'"):
        simulate(SMOKE, out=tmp_path / "o", events="xml")
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutFolderError, match=f"^out {tmp_path / 'file'}: not a directory$"):
        simulate(SMOKE, out=tmp_path / "file")
    assert not (tmp_path / "o").exists()
