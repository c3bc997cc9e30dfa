"""The study's energy (``summary.json``'s ``energy``), its report lines, comparison and figure: exact values on a
hand-made two-device fleet, and the identities a real timing run satisfies."""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import pytest

from fleet.app.build import build_simulation
from fleet.app.comparison import write_comparison
from fleet.app.figures_energy import energy_figure
from fleet.app.report_energy import energy_report_lines, energy_study_lines
from fleet.app.scenario import Scenario
from fleet.app.study import analyse, summary
from fleet.app.timeline import energy_json


class _Fleet:
    """Device 0 a phone (battery), device 1 a Raspberry Pi (mains), both simulated."""

    devices = range(2)

    def device_class(self, d: int) -> str:
        return "rpi4_4gb" if d else "phone_mid"

    def is_real(self, d: int) -> bool:
        return False


def _two_devices(accuracies=(0.25, 0.75)) -> SimpleNamespace:
    """The phone spent 2 J computing, 1 J receiving and 0.5 J sending and ran flat once; the Pi 6 J, 0.25 J and
    0.25 J. The phone had 1 update accepted, the Pi 2."""
    parts = {0: (2.0, 1.0, 0.5, 1), 1: (6.0, 0.25, 0.25, 0)}
    evaluations = [SimpleNamespace(accuracy=a) for a in accuracies]
    return SimpleNamespace(fleet=_Fleet(), devices=SimpleNamespace(energy_parts_by_device=lambda: parts),
                           record=SimpleNamespace(evaluations=evaluations))


def test_energy_figures_of_two_devices_by_hand():
    e = energy_json(_two_devices(), {"phone_mid": 1, "rpi4_4gb": 2})
    phone, pi = e["by_class"]["phone_mid"], e["by_class"]["rpi4_4gb"]
    assert (phone["compute_j"], phone["radio_rx_j"], phone["radio_tx_j"], phone["radio_j"]) == (2.0, 1.0, 0.5, 1.5)
    assert phone["per_accepted_update_j"] == {"compute_j": 2.0, "radio_j": 1.5, "total_j": 3.5}
    assert phone["battery"] and phone["battery_drained_j"] == 3.5  # all it spent came out of its battery
    assert (phone["devices_ran_flat"], phone["battery_flat_events"]) == (1, 1)
    assert pi["per_accepted_update_j"] == {"compute_j": 3.0, "radio_j": 0.25, "total_j": 3.25}
    assert not pi["battery"] and pi["battery_drained_j"] is None and pi["devices_ran_flat"] == 0
    assert (e["compute_j"], e["radio_j"], e["total_j"]) == (8.0, 2.0, 10.0)
    assert e["per_accepted_update_j"]["total_j"] == pytest.approx(10.0 / 3)
    assert e["battery_drained_j"] == 3.5 and e["devices_ran_flat"] == 1
    assert e["accuracy_gain"] == 0.5  # 0.25 -> 0.75: fifty points
    assert e["j_per_accuracy_point"] == pytest.approx(10.0 / 50)
    json.dumps(e, allow_nan=False)


@pytest.mark.parametrize("accuracies", [(0.5, 0.5), (0.5, 0.4), (0.5,), (0.5, float("nan"))])
def test_no_gain_means_no_joules_per_point(accuracies):
    e = energy_json(_two_devices(accuracies), {"phone_mid": 1, "rpi4_4gb": 2})
    assert e["j_per_accuracy_point"] is None
    json.dumps(e, allow_nan=False)


def test_no_accepted_update_means_no_energy_per_update():
    e = energy_json(_two_devices(), {})
    assert e["per_accepted_update_j"] is None and e["by_class"]["phone_mid"]["per_accepted_update_j"] is None
    assert e["total_j"] == 10.0


@pytest.fixture(scope="module")
def timing_summary() -> dict:
    scenario = Scenario.model_validate({
        "name": "energy", "seed": 3, "mode": "timing",
        "fleet": {"devices": 4, "mix": [{"device_class": "esp32_s3_psram", "link_class": "wifi", "fraction": 0.5},
                                        {"device_class": "rpi4_4gb", "link_class": "ethernet", "fraction": 0.5}]},
        "algorithm": {"name": "zo", "params": {"model": "mlp_small", "batch_size": 8, "local_steps": 2,
                                               "queries": 2}},
        "coordinator": {"mode": "sync", "rounds": 3, "clients_per_round": 4, "over_selection": 0.0,
                        "quorum": 0.5}})
    sim = build_simulation(scenario).run()
    return summary(sim, analyse(sim), sim.kernel.recorder.sha256())


def test_a_timing_run_energy_adds_up(timing_summary):
    s = timing_summary
    e = s["energy"]
    json.dumps(e, allow_nan=False)
    assert e["total_j"] == pytest.approx(s["energy_j"], rel=1e-12) and e["total_j"] > 0
    for c, row in e["by_class"].items():
        assert row["total_j"] == pytest.approx(s["by_class"][c]["energy_j"], rel=1e-12)
        assert row["total_j"] == pytest.approx(row["compute_j"] + row["radio_rx_j"] + row["radio_tx_j"])
    assert e["by_class"]["esp32_s3_psram"]["battery"] and not e["by_class"]["rpi4_4gb"]["battery"]
    assert e["battery_drained_j"] == e["by_class"]["esp32_s3_psram"]["total_j"]
    assert e["accuracy_gain"] is None and e["j_per_accuracy_point"] is None  # timing: nothing learned


def test_report_lines_and_the_figure(timing_summary, tmp_path):
    lines = energy_report_lines(timing_summary)
    assert lines[0] == "## Energy" and any(line.startswith("| esp32_s3_psram |") for line in lines)
    assert energy_study_lines(timing_summary)[0].startswith("energy ")
    assert energy_report_lines({}) == [] and energy_study_lines({}) == []
    assert energy_figure(timing_summary["energy"], tmp_path) == ("energy.png", "Energy per device class")
    assert (tmp_path / "energy.png").stat().st_size > 0


def test_the_comparison_gives_joules_per_accuracy_point(timing_summary, tmp_path):
    learned = json.loads(json.dumps(timing_summary))
    learned["energy"].update(accuracy_gain=0.25, j_per_accuracy_point=learned["energy"]["total_j"] / 25)
    text = write_comparison([("timing", timing_summary), ("learned", learned)], tmp_path)
    assert "## Energy" in text
    with (tmp_path / "comparison_energy.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["variant"] for r in rows] == ["timing", "learned"]
    assert rows[0]["j_per_accuracy_point"] == ""  # no gain: an empty cell, never nan
    assert float(rows[1]["j_per_accuracy_point"]) == pytest.approx(learned["energy"]["total_j"] / 25)
    assert float(rows[1]["accuracy_gain_points"]) == 25.0
