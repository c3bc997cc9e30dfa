"""``--variant`` picks one variant of a scenario, in ``fleet.run`` as in ``fleet.simulate`` and ``export_fleet``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fleet.app.run import main
from fleet.app.scenario import ScenarioError, load_variants, pick_variant

ROOT = Path(__file__).resolve().parents[2]
STRAGGLERS = ROOT / "scenarios/stragglers.yaml"
QUICK = ["--set", "coordinator.rounds=1", "--set", "fleet.devices=30", "--no-figures", "--quiet"]


def test_one_variant_runs_into_the_folder_itself(tmp_path):
    assert main([str(STRAGGLERS), "--variant", "fedbuff", "--out", str(tmp_path / "out"), *QUICK]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["coordinator"] == "fedbuff"
    assert not (tmp_path / "out" / "comparison.md").exists() and not (tmp_path / "out" / "fedbuff").exists()


def test_an_unknown_variant_is_one_line_and_exit_2(tmp_path, capsys):
    assert main([str(STRAGGLERS), "--variant", "nope", "--out", str(tmp_path / "out"), *QUICK]) == 2
    err = capsys.readouterr().err
    assert err == ("fleet.run: scenario error: --variant 'nope': not a variant of the scenario; known: "
                   "sync_deadline, fedbuff\n")
    assert not (tmp_path / "out").exists()


def test_pick_variant_says_when_there_are_none():
    variants = load_variants(ROOT / "scenarios/smoke.yaml")
    assert pick_variant(variants, None) == variants == pick_variant(variants, "smoke")
    with pytest.raises(ScenarioError, match=r"^--variant 'x': the scenario has no variants \(its one run is "
                                            r"'smoke'\)$"):
        pick_variant(variants, "x", "--variant")
