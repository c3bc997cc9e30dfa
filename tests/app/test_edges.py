"""Issue 8, "tell the truth at the edges": runs through the CLI on tiny fleets where nothing, or not
everything, goes as planned, and what their outputs must say (``docs/study.md``)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from fleet.app.run import main
from tests.accounting import assert_accounting


def _scenario(n=4, mix=None, coordinator=None, **top) -> dict:
    return {"name": "edge", "seed": 1,
            "fleet": {"devices": n,
                      "mix": mix or [{"device_class": "rpi4_4gb", "link_class": "ethernet", "fraction": 1.0}]},
            "algorithm": {"name": "fedavg", "params": {"model": "cnn", "batch_size": 32, "local_steps": 5}},
            "coordinator": coordinator or {}, **top}


def _run(tmp_path: Path, scenario: dict, *extra: str, quiet: bool = True) -> tuple[dict, Path]:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(scenario))
    out = tmp_path / "out"
    args = [str(path), "--out", str(out), "--no-figures", *extra] + (["--quiet"] if quiet else [])
    assert main(args) == 0
    text = (out / "summary.json").read_text()
    summary = json.loads(text, parse_constant=lambda c: pytest.fail(f"summary.json holds {c}"))
    assert_accounting(summary)
    return summary, out


def _rounds_csv(out: Path) -> list[dict]:
    with (out / "rounds.csv").open() as f:
        return list(csv.DictReader(f))


def _events(out: Path) -> list[dict]:
    with (out / "events.csv").open() as f:
        return list(csv.DictReader(f))


MCU_ONLY = [{"device_class": "mcu_tiny", "link_class": "wifi", "fraction": 1.0}]


@pytest.mark.parametrize("mode", ["fedbuff", "fedasync", "sync"])
def test_no_device_can_fit_the_task_ends_the_run_at_once(tmp_path, mode):
    """Defect 1: every device refuses for memory (the CNN's training peak exceeds an MCU's RAM at any
    background level). Each device is asked once; then no update can ever arrive and the run stops,
    where it used to dispatch ~130,000 tasks per virtual hour until max_sim_time_s."""
    coordinator = {"mode": mode, "rounds": 1000, "concurrency": 3, "buffer_size": 2,
                   "clients_per_round": 2, "over_selection": 0.0}
    summary, out = _run(tmp_path, _scenario(4, MCU_ONLY, coordinator))
    assert summary["stopped_by"] == "no_eligible_devices"
    assert summary["client_tasks"] == 4 and summary["dropouts"]["memory"] == 4
    assert summary["updates_accepted"] == summary["rounds_aggregated"] == 0
    refused = sorted(int(e["device"]) for e in _events(out) if e["event"] == "refusal")
    assert refused == [0, 1, 2, 3]
    assert summary["sim_time_s"] < 1.0


def test_no_progress_guard_ends_a_run_that_never_aggregates(tmp_path):
    """Defect 1: every task outlives FedBuff's task timeout, so nothing is ever aggregated although
    devices keep working; ``coordinator.max_idle_s`` of virtual time later the run stops, exactly."""
    coordinator = {"mode": "fedbuff", "rounds": 5, "concurrency": 2, "buffer_size": 2,
                   "task_timeout_s": 0.01, "max_idle_s": 30}
    summary, _ = _run(tmp_path, _scenario(2, coordinator=coordinator, max_sim_time_s=10_000))
    assert summary["stopped_by"] == "no_progress"
    assert summary["sim_time_s"] == 30.0
    assert summary["rounds"] == 0 and summary["rounds_unfinished"] == 1
    # Slots are refilled after every late report: ~30 s / ~0.2 s per task on each of 2 devices.
    assert summary["client_tasks"] > 100
    assert summary["dropouts"]["deadline"] + summary["in_flight_at_end"] == summary["client_tasks"]


def test_fedbuff_refills_slots_after_late_reports(tmp_path):
    """Defect 2: with a task timeout near the median task time, at some point every task in flight has
    expired. Each late report frees its device and must refill its slot; the run used to stall there
    (5 aggregations, 53 tasks, then an empty log until the guard or max_sim_time_s)."""
    coordinator = {"mode": "fedbuff", "rounds": 20, "concurrency": 4, "buffer_size": 2,
                   "task_timeout_s": 0.18, "max_idle_s": 100}
    summary, out = _run(tmp_path, _scenario(4, coordinator=coordinator, devices={"slowdown_sigma": 0.5}))
    assert summary["stopped_by"] == "completed" and summary["rounds_aggregated"] == 20
    assert summary["dropouts"]["deadline"] > 0  # tasks did expire, and their devices came back
    rows = _rounds_csv(out)
    assert [r["status"] for r in rows] == ["aggregated"] * 20


def test_run_cut_by_max_sim_time_reports_the_open_round_as_unfinished(tmp_path):
    """Defect 3: the round open at max_sim_time_s used to end at t = 0 (a negative round time) and
    count as a round. It is a row with status ``unfinished``, no end, no time, out of every statistic."""
    coordinator = {"mode": "sync", "rounds": 10, "clients_per_round": 2, "over_selection": 0.0}
    full, full_out = _run(tmp_path, _scenario(2, coordinator=coordinator))
    ends = [float(r["end_s"]) for r in _rounds_csv(full_out)]
    cut = (ends[2] + ends[3]) / 2  # inside round 3
    summary, out = _run(tmp_path, _scenario(2, coordinator=coordinator, max_sim_time_s=cut))
    assert summary["stopped_by"] == "max_sim_time" and summary["sim_time_s"] == cut
    assert summary["rounds"] == summary["rounds_aggregated"] == 3
    assert summary["rounds_unfinished"] == 1 and summary["unfinished_round_updates"] == 0
    rows = _rounds_csv(out)
    assert [r["status"] for r in rows] == ["aggregated"] * 3 + ["unfinished"]
    assert rows[3]["end_s"] == "" and rows[3]["round_time_s"] == ""
    assert float(rows[3]["start_s"]) == ends[2]
    times = sorted(float(r["round_time_s"]) for r in rows[:3])
    assert summary["round_time_s"]["p50"] == times[1]
    assert summary["in_flight_at_end"] == 2  # the unfinished round's two tasks


@pytest.mark.slow  # learning mode: torch and the digits data, about 3 s on a loaded 2-core machine
def test_diverging_run_writes_strict_json_and_says_where(tmp_path, capsys):
    """Defect 4: a run whose loss overflows wrote ``"final_loss": NaN``. Non-finite metrics are null in
    JSON and empty in CSV, and the study says where it diverged."""
    scenario = {"name": "diverge", "seed": 4, "mode": "learning",
                "fleet": {"devices": 4, "mix": [{"device_class": "rpi4_4gb", "link_class": "wifi",
                                                 "fraction": 1.0}]},
                "data": {"dataset": "digits", "partition": "iid"},
                "algorithm": {"name": "fedavg", "params": {"model": "mlp", "batch_size": 16, "local_steps": 3,
                                                           "lr": 1000, "optimizer": "momentum"}},
                "coordinator": {"mode": "sync", "rounds": 3, "clients_per_round": 4, "over_selection": 0.0},
                "evaluation": {"interval_s": 1.0}, "executor": {"backend": "sequential"}}
    summary, out = _run(tmp_path, scenario, quiet=False)
    assert summary["final_loss"] is None and summary["final_accuracy"] is not None
    assert summary["diverged"] == "diverged at round 0: loss became inf"
    for name in ("rounds.csv", "evaluations.csv"):
        text = (out / name).read_text().lower()
        assert "nan" not in text and "inf" not in text, name
    assert [r["loss"] for r in _rounds_csv(out)] == ["", "", ""]
    assert "diverged at round 0: loss became inf" in (out / "report.md").read_text()
    assert "diverged at round 0: loss became inf" in capsys.readouterr().out


def test_study_says_no_round_aggregated_and_why(tmp_path, capsys):
    """Defect 5: half the fleet cannot fit the task, so a quorum of all four never arrives; the study
    printed only "participation 50 %". It says how many rounds aggregated and why the others did not."""
    mix = [{"device_class": "rpi4_4gb", "link_class": "wifi", "fraction": 0.5},
           {"device_class": "mcu_tiny", "link_class": "wifi", "fraction": 0.5}]
    coordinator = {"mode": "sync", "rounds": 3, "clients_per_round": 4, "over_selection": 0.0, "quorum": 1.0}
    summary, out = _run(tmp_path, _scenario(4, mix, coordinator), quiet=False)
    assert summary["rounds"] == summary["rounds_failed"] == 3 and summary["rounds_aggregated"] == 0
    assert summary["updates_needed"] == 4 and summary["most_updates_in_a_failed_round"] == 2
    story = "0 of 3 rounds aggregated; 3 failed with fewer than the 4 updates needed (at most 2): " \
            "the model never changed"
    assert story in " ".join(capsys.readouterr().out.split())
    assert story in (out / "report.md").read_text()
    assert [r["status"] for r in _rounds_csv(out)] == ["failed"] * 3


def test_rounds_that_select_nobody_are_empty_and_out_of_round_times(tmp_path):
    """Defect 9: a deadline below the link latency leaves every device busy (its refusal is still on
    the way) when the next rounds start; they select nobody, took 0 s, and pulled p50 to 0."""
    mix = [{"device_class": "rpi4_4gb", "link_class": "lte", "fraction": 1.0}]
    coordinator = {"mode": "sync", "rounds": 5, "clients_per_round": 2, "over_selection": 0.0,
                   "deadline_s": 0.001}
    summary, out = _run(tmp_path, _scenario(2, mix, coordinator))
    assert summary["rounds"] == 5 and summary["empty_rounds"] == 4 and summary["rounds_failed"] == 1
    assert summary["round_time_s"] == {"p50": 0.001, "p90": 0.001, "p99": 0.001}
    assert [r["status"] for r in _rounds_csv(out)] == ["failed"] + ["empty"] * 4
    assert summary["dropouts"]["deadline"] == 2 and summary["client_tasks"] == 2


def test_device_refusal_then_coordinator_deadline_counts_once_as_the_device_cause(tmp_path):
    """Defect 8: an offline device refuses at once (its row), but the server hears of it only
    ``failure_detection_s`` later; the round's deadline comes first and the coordinator logs a deadline
    drop of the same task. The study counts the first row (offline); the coordinator's view differs."""
    mix = [{"device_class": "rpi4_4gb", "link_class": "ethernet", "fraction": 1.0,
            "availability": {"diurnal": {"period_s": 1.0e6, "on_fraction": 1.0e-4}}}]
    coordinator = {"mode": "sync", "rounds": 1, "clients_per_round": 3, "over_selection": 0.0,
                   "deadline_s": 5, "quorum": 0.3}
    summary, out = _run(tmp_path, _scenario(3, mix, coordinator))
    rows = [(e["event"], e["task"], e["cause"]) for e in _events(out) if e["event"] in ("refusal", "dropout")]
    assert sorted(rows) == sorted([("refusal", t, "offline") for t in "012"]
                                  + [("dropout", t, "deadline") for t in "012"])
    assert summary["dropouts"]["offline"] == 3 and summary["dropouts"]["deadline"] == 0
    assert summary["dropouts_seen_by_coordinator"]["deadline"] == 3
    assert summary["dropouts_seen_by_coordinator"]["offline"] == 0
    assert summary["client_tasks"] == 3 and summary["in_flight_at_end"] == 0


def test_over_selected_stragglers_are_discarded_late_or_in_flight_at_the_end(tmp_path):
    """Defect 8: a round that got its K updates stops waiting for the over-selected rest. One reports in
    a later round (discarded, ``late``); the last round's straggler is still out when the run ends."""
    mix = [{"device_class": "jetson_nano", "link_class": "ethernet", "fraction": 0.5},
           {"device_class": "rpi4_4gb", "link_class": "ethernet", "fraction": 0.5}]
    coordinator = {"mode": "sync", "rounds": 5, "clients_per_round": 1, "over_selection": 1.0}
    summary, out = _run(tmp_path, _scenario(2, mix, coordinator, devices={"slowdown_sigma": 0.0}))
    # The rpi4 (device 1) takes under twice the Jetson's time: selected in rounds 0, 2 and 4 (in 1 and 3
    # it is still busy), it reports during rounds 1 and 3, and is still out when round 4 ends the run.
    late = [(e["round"], e["device"], e["cause"]) for e in _events(out) if e["event"] == "discard"]
    assert late == [("0", "1", "late"), ("2", "1", "late")]
    assert summary["discarded"] == {"late": 2, "stale": 0} and summary["in_flight_at_end"] == 1
    assert summary["client_tasks"] == 8 and summary["updates_accepted"] == 5
    assert summary["dropouts"] == dict.fromkeys(summary["dropouts"], 0)
