"""`python -m fleet.sweep` after an outside review: a grid on the seed is refused, a second sweep into the same
--out keeps the first in the manifest and the report, bad trace files are refused before anything runs (and a
report of failed runs says so), the scenario is known by its parsed content, and sweep.md has no variant column
for a scenario without variants."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from fleet.app import build
from fleet.app.sweep_plan import (
    PlanError,
    Run,
    Setting,
    content_sha256,
    file_sha256,
    parse_grid,
    recorded_runs,
)
from tests.app.test_sweep import SMOKE, FakePool, _strict_json
from tests.app.test_sweep_guards import _one_line, _sweep


def _manifest(out: Path) -> dict:
    return _strict_json((out / "manifest.json").read_text())


def _runs(out: Path) -> list[tuple[str, int, str]]:
    return [(r["setting"], r["seed"], r["status"]) for r in _manifest(out)["runs"]]


# --- 1. a grid on the seed -----------------------------------------------------------------------------------------

def test_a_grid_on_the_seed_is_refused(tmp_path, monkeypatch, capsys):
    pool = FakePool()
    out = tmp_path / "out"
    assert _sweep(tmp_path, monkeypatch, pool, SMOKE, "--seeds", "0", "--grid", "seed=1,2", "--out", str(out)) == 2
    assert _one_line(capsys.readouterr().err) == (
        "fleet.sweep: --grid 'seed=1,2': the sweep sets the seed; list the seeds in --seeds (--seeds 1,2)")
    assert pool.ran == [] and not out.exists()
    with pytest.raises(PlanError, match="the sweep sets the seed"):
        parse_grid(["coordinator.rounds=2,3", "seed=4"])
    assert parse_grid(["algorithm.params.seed=1,2"]) == [("algorithm.params.seed", ["1", "2"])]  # not the run's seed


# --- 2. a second sweep into the same --out -------------------------------------------------------------------------

def test_a_second_sweep_into_the_same_out_keeps_the_first_in_the_record(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    grid = (SMOKE, "--seeds", "0", "--grid", "coordinator.rounds=2,3", "--out", str(out))
    assert _sweep(tmp_path, monkeypatch, FakePool(), *grid) == 0
    first = _manifest(out)["runs"]
    pool = FakePool()
    assert _sweep(tmp_path, monkeypatch, pool, SMOKE, "--seeds", "0-1", "--out", str(out)) == 0
    assert pool.ran == ["default/s0", "default/s1"]
    manifest = _manifest(out)
    assert manifest["seeds"] == [0, 1] and manifest["grid"] == {}  # this sweep's
    assert _runs(out) == [("default", 0, "finished"), ("default", 1, "finished"), ("rounds=2", 0, "finished"),
                          ("rounds=3", 0, "finished")]
    assert manifest["runs"][2:] == first  # the earlier runs as they were recorded

    text = (out / "sweep.md").read_text()
    assert ("Also reported: 2 runs of earlier sweeps into this folder (rounds=2, rounds=3), 2 of them finished; "
            "`manifest.json` lists them as they were recorded.") in text
    assert "| default | 2 | 0.05 [0, 0.685]† | 0.05 [0, 0.685]† | 0.5 ± 0 | 1 ± 0 | 5 [0, 68.5]† |" in text  # FakePool
    assert "| rounds=2 | 1 |" in text and "| rounds=3 | 1 |" in text
    with (out / "sweep.csv").open() as f:
        flops = {r["setting"]: (r["coordinator.rounds"], r["runs"], r["mean"])
                 for r in csv.DictReader(f) if r["figure"] == "client_flops"}
    assert flops == {"default": ("", "2", "5.0"), "rounds=2": ("2", "1", "0.0"), "rounds=3": ("3", "1", "0.0")}

    # the first command again: its runs first, skipped; the default runs kept; the same command, the same record
    assert _sweep(tmp_path, monkeypatch, FakePool(), *grid) == 0
    again = _runs(out)
    assert again == [("rounds=2", 0, "skipped"), ("rounds=3", 0, "skipped"), ("default", 0, "finished"),
                     ("default", 1, "finished")]
    assert _sweep(tmp_path, monkeypatch, FakePool(), *grid) == 0 and _runs(out) == again

    # a run whose folder is gone is no longer listed
    shutil.rmtree(out / "default" / "s1")
    assert _sweep(tmp_path, monkeypatch, FakePool(), *grid) == 0
    assert _runs(out)[2:] == [("default", 0, "finished")]
    capsys.readouterr()


def test_recorded_runs_keep_only_sound_records_of_present_folders(tmp_path):
    out = tmp_path / "out"
    for folder in ("a=1/s0", "a=1/s1", "a=1/s2", "b/s0", "default/s3"):
        (out / folder).mkdir(parents=True)
    record = {"setting": "a=1", "seed": 0, "overrides": ["x.a=1"], "variants": ["smoke"], "status": "finished"}
    doc = {"runs": [
        {**record, "seed": 2}, record, {**record, "seed": 1, "status": "failed"},
        {**record, "seed": 0, "status": "duplicate"},  # the same run again: the first record wins
        {**record, "seed": 5},  # no folder
        {**record, "setting": "../a=1"}, {**record, "seed": True}, {**record, "overrides": ["no-equals"]},
        {**record, "variants": []}, "not a record",
        {"setting": "b", "seed": 0, "overrides": ["x.b=2"], "variants": ["smoke"]},  # b: other overrides here
        {"setting": "default", "seed": 3, "overrides": [], "variants": ["smoke"]},  # planned: this sweep makes it
    ]}
    planned = [Run(Setting("b", (("x.b", "1"),)), 9, out / "b" / "s9", ()),
               Run(Setting("default", ()), 3, out / "default" / "s3", ())]
    got = recorded_runs(doc, out, planned)
    assert [(r.label, r.out, rec["status"]) for r, rec in got] == [
        ("a=1/s0", out / "a=1" / "s0", "finished"), ("a=1/s1", out / "a=1" / "s1", "failed"),
        ("a=1/s2", out / "a=1" / "s2", "finished")]
    assert got[0][0].setting == Setting("a=1", (("x.a", "1"),))
    assert recorded_runs(None, out, planned) == []


# --- 3. bad trace files, and a report of failed runs ---------------------------------------------------------------

TRACE_SCENARIO = """name: traced
seed: 1
max_sim_time_s: 3600
fleet:
  devices: 4
  trace: {capacity: cap.csv, memory_class: phone_mid, link_class: lte}
algorithm: {name: fedavg, params: {model: cnn, batch_size: 20, local_steps: 5}}
coordinator: {mode: sync, rounds: 2, clients_per_round: 2, deadline_s: 900}
"""


def _traced(tmp_path: Path, bad: bool) -> Path:
    rows = ["client_id,computation,communication", *(f"{i},{40 + i},{5000 + i}" for i in range(6))]
    if bad:
        rows[3] = "2,nan,5002"
    (tmp_path / "cap.csv").write_text("\n".join(rows) + "\n")
    path = tmp_path / "traced.yaml"
    path.write_text(TRACE_SCENARIO)
    return path


def test_a_bad_trace_file_is_refused_before_anything_runs(tmp_path, monkeypatch, capsys):
    scenario = _traced(tmp_path, bad=True)
    pool, out = FakePool(), tmp_path / "out"
    assert _sweep(tmp_path, monkeypatch, pool, str(scenario), "--seeds", "0-1", "--out", str(out)) == 2
    assert _one_line(capsys.readouterr().err) == (
        f"fleet.sweep: scenario error: {scenario}: fleet.trace: {tmp_path / 'cap.csv'}: client 2: computation must "
        "be finite and > 0, got nan")
    assert pool.ran == [] and not out.exists()


@pytest.mark.parametrize("grid, builds", [("coordinator.rounds=1,2", 1), ("fleet.devices=3,4", 2)])
def test_the_traces_are_read_once_per_distinct_fleet(tmp_path, monkeypatch, capsys, grid, builds):
    scenario = _traced(tmp_path, bad=False)
    built = []
    real = build.build_fleet
    monkeypatch.setattr(build, "build_fleet", lambda s: built.append(s.fleet.devices) or real(s))
    pool = FakePool()
    assert _sweep(tmp_path, monkeypatch, pool, str(scenario), "--seeds", "0-2", "--grid", grid,
                  "--out", str(tmp_path / "out")) == 0
    assert len(built) == builds and len(pool.ran) == 6  # at the smallest seed, before the runs
    capsys.readouterr()


def test_a_report_of_failed_runs_says_so(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    assert _sweep(tmp_path, monkeypatch, FakePool(fail={0, 1}), SMOKE, "--seeds", "0-1", "--out", str(out)) == 1
    text = (out / "sweep.md").read_text()
    assert ("1 setting × 2 seeds (0-1) = 2 runs: 0 finished, 2 failed (default/s0, default/s1). Each failed run's "
            "command, exit status and last lines of stderr are in `manifest.json` (`command`, `returncode`, "
            "`stderr_tail`); the sweep printed them too.") in text
    assert "No run finished: no figure has a value (the intro above says which runs failed)." in text
    assert "No value in any" not in text
    assert [r["stderr_tail"] for r in _manifest(out)["runs"]] == ["Traceback...\nValueError: boom"] * 2
    capsys.readouterr()
    # some finished: the figures without a value are those of the finished runs
    assert _sweep(tmp_path, monkeypatch, FakePool(fail={1}), SMOKE, "--seeds", "0-1", "--out", str(out)) == 1
    text = (out / "sweep.md").read_text()
    assert "No value in any finished run (timing mode, or never reached): time to target (s)" in text
    assert "No run finished" not in text


# --- 4. the scenario known by its parsed content -------------------------------------------------------------------

def test_comments_and_layout_do_not_change_the_scenario(tmp_path, monkeypatch, capsys):
    out, pool = tmp_path / "out", FakePool()
    assert _sweep(tmp_path, monkeypatch, pool, SMOKE, "--seeds", "0", "--out", str(out)) == 0
    assert _manifest(out)["scenario_content_sha256"] == content_sha256(SMOKE)
    text = Path(SMOKE).read_text()
    commented = tmp_path / "commented.yaml"
    commented.write_text("# one more comment\n" + text.replace("seed: 7", "seed:   7   # the default seed"))
    assert content_sha256(commented) == content_sha256(SMOKE) and file_sha256(commented) != file_sha256(SMOKE)
    capsys.readouterr()
    pool.ran.clear()
    assert _sweep(tmp_path, monkeypatch, pool, str(commented), "--seeds", "0", "--out", str(out)) == 0
    assert "1 already finished, 0 to run" in capsys.readouterr().out and pool.ran == []
    assert _manifest(out)["scenario_sha256"] == file_sha256(commented)

    changed = tmp_path / "changed.yaml"
    changed.write_text(text.replace("rounds: 5", "rounds: 6"))
    assert _sweep(tmp_path, monkeypatch, pool, str(changed), "--seeds", "0", "--out", str(out)) == 2
    err = _one_line(capsys.readouterr().err)
    assert err == (f"fleet.sweep: --out {out} holds a sweep of another scenario: {commented} (sha256 "
                   f"{content_sha256(SMOKE)[:12]}) there, {changed} (sha256 {content_sha256(changed)[:12]}) here; "
                   f"use another --out, or delete {out}")
    assert pool.ran == []


def test_a_manifest_of_an_older_sweep_is_compared_by_the_files_bytes(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    assert _sweep(tmp_path, monkeypatch, FakePool(), SMOKE, "--seeds", "0", "--out", str(out)) == 0
    manifest = _manifest(out)
    del manifest["scenario_content_sha256"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    commented = tmp_path / "commented.yaml"
    commented.write_text("# a comment\n" + Path(SMOKE).read_text())
    capsys.readouterr()
    assert _sweep(tmp_path, monkeypatch, FakePool(), str(commented), "--seeds", "0", "--out", str(out)) == 2
    assert f"(sha256 {file_sha256(SMOKE)[:12]}) there" in _one_line(capsys.readouterr().err)
    assert _sweep(tmp_path, monkeypatch, FakePool(), SMOKE, "--seeds", "0", "--out", str(out)) == 0
    assert _manifest(out)["scenario_content_sha256"] == content_sha256(SMOKE)  # gained on the rewrite


def test_the_content_hash_tells_values_apart(tmp_path):
    def sha(text: str) -> str:
        path = tmp_path / "s.yaml"
        path.write_text(text)
        return content_sha256(path)

    assert sha("a: 1\nb: [x, y]\n") == sha("b: ['x', \"y\"]\n# c\na:   1\n") == sha("{b: [x, y], a: 1}")
    assert len({sha("a: 1"), sha("a: 1.0"), sha("a: '1'"), sha("a: true"), sha("a: null"), sha("a: [1]"),
                sha("a: {1: 1}"), sha("a: {'1': 1}"), sha("a: .nan"), sha("b: 1")}) == 10
    (tmp_path / "bad.yaml").write_bytes(b"\xff\xfe")
    with pytest.raises(ValueError, match="bad.yaml: not UTF-8 text"):
        content_sha256(tmp_path / "bad.yaml")


# --- 5. the variant column -----------------------------------------------------------------------------------------

def test_a_scenario_without_variants_has_no_variant_column(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    assert _sweep(tmp_path, monkeypatch, FakePool(), SMOKE, "--seeds", "0-1", "--out", str(out)) == 0
    text = (out / "sweep.md").read_text()
    assert "| setting | runs | final accuracy | best accuracy | participation | round time p50 (s) | client FLOPs |\n" \
           "|---|---|---|---|---|---|---|\n" \
           "| default | 2 | 0.05 [0, 0.685]† | 0.05 [0, 0.685]† | 0.5 ± 0 | 1 ± 0 | 5 [0, 68.5]† |\n" in text
    assert "| setting | n | mean | sd | 95 % interval | min | max |\n|---|---|---|---|---|---|---|\n" \
           "| default | 2 | 0.5 | 0 | [0.5, 0.5] | 0.5 | 0.5 |\n" in text
    assert "smoke" not in text.split("## Headline")[1]
    with (out / "sweep.csv").open() as f:
        assert {r["variant"] for r in csv.DictReader(f)} == {"smoke"}  # the CSV keeps its columns
    capsys.readouterr()


def test_an_earlier_run_recorded_failed_whose_folder_is_complete_is_recorded_finished(tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert _sweep(tmp_path, monkeypatch, FakePool(), SMOKE, "--seeds", "0", "--grid", "coordinator.rounds=2,3",
                  "--out", str(out)) == 0
    doc = _manifest(out)
    doc["runs"][0] = {**doc["runs"][0], "status": "failed"}  # as a sweep killed before it heard would leave it
    (out / "manifest.json").write_text(json.dumps(doc))
    assert _sweep(tmp_path, monkeypatch, FakePool(), SMOKE, "--seeds", "0", "--out", str(out)) == 0
    earlier = {(r["setting"], r["status"], r.get("note")) for r in _manifest(out)["runs"][1:]}
    assert earlier == {("rounds=2", "finished", "found complete by a later sweep into this folder"),
                       ("rounds=3", "finished", None)}
