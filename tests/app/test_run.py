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
import yaml

from fleet.app.run import main
from fleet.app.study import DROPOUT_CAUSES
from tests.accounting import assert_accounting

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
    assert figures == ["completion_cdf.png", "dropouts.png", "energy.png", "memory.png", "participation.png"]
    report = (out / "report.md").read_text()
    assert all(f"figures/{name}" in report for name in figures)
    # Outcomes add up: every dispatched task has exactly one outcome.
    assert_accounting(summary)


@pytest.mark.parametrize("scenario, variant, extra", [
    ("stragglers", "fedbuff", []),
    pytest.param("iot_1000", "fedavg", [], marks=pytest.mark.slow),  # learning mode, 5 variants
])
def test_same_seed_same_log_and_another_seed_another(tmp_path, scenario, variant, extra):
    hashes = []
    for i, seed in enumerate((1, 1, 2)):
        out = tmp_path / f"run{i}"
        assert main([str(ROOT / f"scenarios/{scenario}.yaml"), "--out", str(out), "--seed", str(seed),
                     *SHORT, *extra]) == 0
        hashes.append(json.loads((out / variant / "summary.json").read_text())["event_log_sha256"])
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
        assert_accounting(summary)


def test_variants_run_side_by_side(tmp_path):
    out = _run(tmp_path, ROOT / "scenarios/stragglers.yaml")
    assert {p.name for p in out.iterdir() if p.is_dir()} == {"sync_deadline", "fedbuff"}
    table = (out / "comparison.md").read_text()
    assert "| sync_deadline |" in table and "| fedbuff |" in table
    for variant in ("sync_deadline", "fedbuff"):
        assert_accounting(json.loads((out / variant / "summary.json").read_text()))


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


def _main(capsys, *args):
    """``main(args)`` in-process: (exit status, stdout, stderr lines)."""
    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err.strip().splitlines()


def _scenario(tmp_path, text, name="s.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _one_line(lines, *words):
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0] and all(w in lines[0] for w in words), lines[0]
    assert len(lines[0]) < 500
    return lines[0]


def test_k_above_the_devices_warns_on_stderr_and_quiet_stdout_stays_the_path(tmp_path, capsys):
    path = _scenario(tmp_path, "fleet: {devices: 5}\ncoordinator: {rounds: 1, clients_per_round: 8}\n")
    status, out, err = _main(capsys, path, "--out", tmp_path / "out", "--quiet", "--no-figures")
    assert status == 0
    assert out == f"{tmp_path / 'out'}\n"
    line = _one_line(err, "scenario warning:", "coordinator.clients_per_round", "K = 8", "5 devices")
    assert line.endswith("aggregates with 4 updates")  # ceil(0.5 * 8)


def test_a_quorum_no_round_can_reach_is_a_scenario_error(tmp_path, capsys):
    path = _scenario(tmp_path, "fleet: {devices: 5}\ncoordinator: {clients_per_round: 12, quorum: 0.5}\n")
    status, out, err = _main(capsys, path, "--out", tmp_path / "out", "--quiet")
    assert status == 2 and out == ""
    _one_line(err, "scenario error:", "coordinator.quorum", "= 6 updates", "5 devices")
    assert not (tmp_path / "out").exists()  # refused before anything ran


@pytest.mark.parametrize("assignment, field", [
    ("devices.slowdown_sigma=300", "devices.slowdown_sigma"),
    ("coordinator.over_selection=1e308", "coordinator.over_selection"),
    ("fleet.background_period_s=1e-305", "fleet.background_period_s"),
    ("fleet.devices=1000000000", "fleet.devices"),
    ("fleet.mix.0.availability={failure: {mtbf_s: 1e-300}}", "fleet.mix.0.availability.failure.mtbf_s"),
    ("fleet.mix.0.availability={diurnal: {period_s: 1e-300}}",
     "fleet.mix.0.availability.diurnal.period_s"),
    ("algorithm.params.batch_size=1000000000000000000", "algorithm.params"),
    ("evaluation.interval_s=1e-300", "evaluation.interval_s"),
    ("max_sim_time_s=.inf", "max_sim_time_s"),
    ("devices.failure_detection_s=.nan", "devices.failure_detection_s"),
])
def test_values_outside_the_physical_bounds_are_one_line_exit_2(tmp_path, capsys, assignment, field):
    status, _, err = _main(capsys, ROOT / "scenarios/smoke.yaml", "--out", tmp_path / "out",
                           "--quiet", "--set", assignment)
    assert status == 2
    _one_line(err, "scenario error:", f": {field}: ")


def test_a_lossy_link_override_shows_as_link_dropouts(tmp_path, capsys):
    base = ("seed: 4\nfleet:\n  devices: 30\n  mix: [{device_class: rpi4_4gb, link_class: wifi, "
            "fraction: 1.0{link}}]\ncoordinator: {rounds: 3, clients_per_round: 10}\n")
    dropouts = {}
    for name, link in (("plain", ""), ("lossy", ", link: {loss_prob: 0.9}")):
        path = _scenario(tmp_path, base.replace("{link}", link), f"{name}.yaml")
        status, _, err = _main(capsys, path, "--out", tmp_path / name, "--quiet", "--no-figures")
        assert status == 0, err
        dropouts[name] = json.loads((tmp_path / name / "summary.json").read_text())["dropouts"]["link"]
    # 4 attempts each lost with p = 0.9: a message is lost with p = 0.9**4 = 0.66; WiFi's own 1e-2**4 ~ 0
    assert dropouts["plain"] == 0 and dropouts["lossy"] >= 10


def test_a_bad_later_variant_is_refused_before_torch_or_any_variant_runs(tmp_path):
    """Every variant's algorithm parameters are checked at load time, torch-free (algorithms.registry)."""
    path = _scenario(tmp_path, (ROOT / "scenarios/digits_20.yaml").read_text().replace(
        '"algorithm.params.prune_iters=5"', '"algorithm.params.prune_iters=5", "algorithm.params.mu=-1"'))
    out = tmp_path / "out"
    code = ("import sys\nfrom fleet.app.run import main\nstatus = main(sys.argv[1:])\n"
            "assert 'torch' not in sys.modules, 'torch imported'\nsys.exit(status)")
    result = subprocess.run([sys.executable, "-c", code, str(path), "--out", str(out), "--quiet"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    line = _one_line(result.stderr.strip().splitlines(), "(variant fedfpzo): algorithm.params: mu must be")
    assert line.endswith("got -1")
    assert not out.exists()


def test_learning_only_constraints_are_checked_at_load_time(tmp_path, capsys):
    status, _, err = _main(capsys, ROOT / "scenarios/digits_20.yaml", "--out", tmp_path / "out",
                           "--set", "algorithm.params.density=0.5")
    assert status == 2
    _one_line(err, "(variant fedavg): algorithm.params: density: learning mode needs density 1")


def test_an_executor_lost_mid_run_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    """A Ray cluster that goes away mid-run raises BackendUnavailable from inside the run: one line, exit 2."""
    from fleet.learning.backends import BackendUnavailable

    rounds_kept = []

    def lost(*args, **kwargs):
        for version in rounds_kept:  # what the run checkpointed before its cluster went
            (tmp_path / "out" / "checkpoints").mkdir(parents=True, exist_ok=True)
            (tmp_path / "out" / "checkpoints" / f"version_{version:06d}.ckpt").write_bytes(b"state")
        raise BackendUnavailable("ray: the cluster at 10.0.0.1:6379 went away\n(details)")

    monkeypatch.setattr("fleet.app.simulation.Simulation.run", lost)
    status, out, err = _main(capsys, ROOT / "scenarios/smoke.yaml", "--out", tmp_path / "out", "--quiet")
    assert status == 2 and out == ""
    assert _one_line(err, "fleet.run: executor: ray: the cluster at 10.0.0.1:6379 went away") == (
        "fleet.run: executor: ray: the cluster at 10.0.0.1:6379 went away")  # nothing to resume from
    rounds_kept.append(1)
    status, out, err = _main(capsys, ROOT / "scenarios/smoke.yaml", "--out", tmp_path / "out", "--quiet")
    assert status == 2 and out == ""
    line = _one_line(err, "fleet.run: executor: ray: the cluster at 10.0.0.1:6379 went away;")
    assert line.endswith("the checkpoints so far stay (resume with --resume)")


def test_the_cli_outputs_are_the_same_before_and_after_the_api():
    """The CLI became a layer over what fleet.simulate calls; smoke's event log kept its hash (measured on the
    CLI before the change). A change of the simulated world's physics moves it on purpose: update it then."""
    import fleet

    assert fleet.simulate(ROOT / "scenarios/smoke.yaml").event_log_sha256 == (
        "9be7afa3caca038105ef4c45a9d77fdf3ae5aab5d713753ce1093d70d793f655")


def test_a_run_that_fails_before_writing_leaves_no_out_folder(tmp_path, capsys):
    """A bad trace is found while the fleet is built, after --out was checked (and made): the made folder goes."""
    from tests.app.test_api_args import _broken_trace_scenario

    scenario = tmp_path / "broken.yaml"
    scenario.write_text(yaml.safe_dump(_broken_trace_scenario(tmp_path)))
    out = tmp_path / "new" / "out"
    status, _, err = _main(capsys, scenario, "--out", out, "--quiet")
    assert status == 2 and "must be finite and > 0" in _one_line(err)
    assert not (tmp_path / "new").exists()  # the topmost folder the run made, not only --out
    kept = tmp_path / "kept"
    kept.mkdir()
    status, _, err = _main(capsys, scenario, "--out", kept, "--quiet")
    assert status == 2 and kept.is_dir()  # a folder that was there stays
