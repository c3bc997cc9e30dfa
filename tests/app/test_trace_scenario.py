"""scenarios/trace_small.yaml end to end: a trace fleet runs through ``python -m fleet.run`` from any working
directory, its summary is strict JSON, and its devices are the trace's."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fleet.app.build import build_simulation
from fleet.app.scenario import ScenarioError, load_scenario, parse_scenario

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "scenarios" / "trace_small.yaml"


def _strict(text: str):
    def refuse(name):
        raise ValueError(f"{name} in strict JSON")
    return json.loads(text, parse_constant=refuse)


def test_the_trace_scenario_runs_end_to_end_from_another_folder(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "fleet.run", str(SCENARIO), "--out", str(out), "--quiet",
                             "--no-figures"], capture_output=True, text=True, cwd=tmp_path,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    summary = _strict((out / "summary.json").read_text())
    assert summary["devices"] == 30 and summary["rounds_aggregated"] > 0
    assert set(summary["by_class"]) == {"phone_low", "phone_mid"}
    assert summary["dropouts"]["offline"] > 0  # the behaviour trace keeps devices away


def test_relative_trace_paths_are_read_from_the_scenario_folder():
    trace = load_scenario(SCENARIO).fleet.trace
    assert trace.capacity == str(SCENARIO.parent / "traces" / "example_capacity.pkl")
    assert trace.behaviour == str(SCENARIO.parent / "traces" / "example_behaviour.pkl")


def test_the_simulated_devices_are_the_traces():
    from devices.traces import load_traces

    scenario = load_scenario(SCENARIO)
    sim = build_simulation(scenario)
    clients = {t.client_id: t for t in load_traces(scenario.fleet.trace.capacity, scenario.fleet.trace.behaviour)}
    flops_per_sample = float(sim.algorithm.profile.forward_flops_per_sample)
    assert len(sim.profiles) == 30
    seen = set()
    for d in range(30):
        p = sim.profiles[d]
        matches = [c for c in clients.values()
                   if p.flops_per_s == flops_per_sample / (c.computation_ms / 1000.0)
                   and p.up_bit_per_s == p.down_bit_per_s == 1000.0 * c.communication_kbit_per_s]
        assert len(matches) == 1, d
        b = matches[0].behaviour
        seen.add(matches[0].client_id)
        timeline = sim.availability[d]
        for start, end in zip(b.active_s, b.inactive_s):
            mid = (start + end) / 2
            assert timeline.unavailable_cause(mid) is None
            assert timeline.unavailable_cause(mid + b.finish_time_s) is None  # repeats every finish_time
    assert len(seen) == 30


def test_trace_and_mix_are_exclusive_and_memory_is_required():
    with pytest.raises(ScenarioError, match="trace and mix are exclusive"):
        load_scenario(SCENARIO, ["fleet.mix=[{device_class: esp32, link_class: wifi, fraction: 1}]"])
    with pytest.raises(ScenarioError, match="memory_class or memory_mix"):
        parse_scenario({"fleet": {"devices": 40, "trace": {"capacity": "c.pkl"}}})
    with pytest.raises(ScenarioError, match="fleet.trace.link_class: unknown link class"):
        load_scenario(SCENARIO, ["fleet.trace.link_class=pigeon"])
