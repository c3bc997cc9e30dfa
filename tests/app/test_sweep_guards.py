"""`python -m fleet.sweep`'s guards and reporting details: an --out of another sweep is refused, intervals are
clipped to each figure's physical range, Ray is checked before anything runs, a run found complete on the way
out is marked finished, floating-point noise in the sd is shown as 0, and counts have their plural right."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import matplotlib.axes
import pytest

from fleet.app import sweep as sweep_app
from fleet.app.sweep import main
from fleet.app.sweep_plan import Setting, expand_grid, file_sha256, parse_grid
from fleet.app.sweep_report import RANGES, bounds_of, write_report
from fleet.app.sweep_stats import describe, t_quantile
from fleet.learning import ray_cluster
from fleet.learning.backends import BackendUnavailable
from tests.app.test_sweep import SMOKE, FakePool, _strict_json, _summary

T1 = 12.706204736174696  # t(0.975, 1)


def _sweep(tmp_path, monkeypatch, pool, *args) -> int:
    monkeypatch.setattr(sweep_app, "_pool", lambda a: (pool, 2))
    return main([*args, "--no-figures"])


def _one_line(err: str) -> str:
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err.strip()


# --- 1. an --out made for another scenario or another grid -------------------------------------------------------

def test_an_out_of_another_scenario_is_refused_before_anything_runs(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    pool = FakePool()
    assert _sweep(tmp_path, monkeypatch, pool, SMOKE, "--seeds", "0-1", "--out", str(out)) == 0
    before = (out / "manifest.json").read_text()
    capsys.readouterr()

    other = tmp_path / "other.yaml"
    other.write_text(Path(SMOKE).read_text().replace("name: smoke", "name: other"))
    pool.ran.clear()
    assert _sweep(tmp_path, monkeypatch, pool, str(other), "--seeds", "0-1", "--out", str(out)) == 2
    err = _one_line(capsys.readouterr().err)
    assert err.startswith(f"fleet.sweep: --out {out} holds a sweep of another scenario: {SMOKE} (sha256 ")
    assert f"{other} (sha256 " in err and err.endswith(f"; use another --out, or delete {out}")
    assert pool.ran == [] and (out / "manifest.json").read_text() == before

    # the same content at another path is the same scenario: nothing to run again
    same = tmp_path / "copy.yaml"
    shutil.copyfile(SMOKE, same)
    assert _sweep(tmp_path, monkeypatch, pool, str(same), "--seeds", "0-1", "--out", str(out)) == 0
    assert "2 already finished, 0 to run" in capsys.readouterr().out and pool.ran == []


def test_an_old_manifest_without_the_hash_is_compared_by_path(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    pool = FakePool()
    assert _sweep(tmp_path, monkeypatch, pool, SMOKE, "--seeds", "0", "--out", str(out)) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["scenario_sha256"], manifest["scenario_content_sha256"]  # a manifest from before either hash
    manifest["scenario"] = "scenarios/trace_small.yaml"
    (out / "manifest.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    assert _sweep(tmp_path, monkeypatch, pool, SMOKE, "--seeds", "0", "--out", str(out)) == 2
    assert _one_line(capsys.readouterr().err) == (
        f"fleet.sweep: --out {out} holds a sweep of another scenario file: scenarios/trace_small.yaml there, "
        f"{SMOKE} here; use another --out, or delete {out}")
    manifest["scenario"] = SMOKE  # the same path: reused, and the manifest gains the hash
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert _sweep(tmp_path, monkeypatch, pool, SMOKE, "--seeds", "0", "--out", str(out)) == 0
    assert _strict_json((out / "manifest.json").read_text())["scenario_sha256"] == file_sha256(SMOKE)


def test_a_setting_folder_made_with_other_overrides_is_refused(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    pool = FakePool()
    assert _sweep(tmp_path, monkeypatch, pool, SMOKE, "--seeds", "0", "--grid", "fleet.mix.2.link_class=wifi",
                  "--out", str(out)) == 0
    capsys.readouterr()
    pool.ran.clear()
    # another key with the same short name: the same folder, link_class=wifi, with another meaning
    assert _sweep(tmp_path, monkeypatch, pool, SMOKE, "--seeds", "0", "--grid", "fleet.mix.1.link_class=wifi",
                  "--out", str(out)) == 2
    assert _one_line(capsys.readouterr().err) == (
        f"fleet.sweep: --out {out}: its setting folder link_class=wifi was made with other overrides "
        f"(fleet.mix.2.link_class=wifi there, fleet.mix.1.link_class=wifi here); use another --out, or delete {out}")
    assert pool.ran == []
    # other settings in the same folder are fine: a new setting, and the old one again
    assert _sweep(tmp_path, monkeypatch, pool, SMOKE, "--seeds", "0", "--grid",
                  "fleet.mix.2.link_class=wifi,ble_gateway", "--out", str(out)) == 0
    assert pool.ran == ["link_class=ble_gateway/s0"]


# --- 2. intervals within each figure's physical range ------------------------------------------------------------

def test_intervals_are_clipped_to_the_physical_range_exactly():
    assert t_quantile(0.975, 1) == pytest.approx(T1, rel=1e-12)
    s = describe([0, 10], bounds=(0.0, math.inf))  # 5 ± 12.706 · √50 / √2 = 5 ± 63.53
    assert (s.n, s.mean, s.sd, s.min, s.max) == (2, 5.0, math.sqrt(50), 0.0, 10.0)
    assert s.half_width == pytest.approx(5 * T1, rel=1e-12)
    assert (s.ci_low, s.clipped) == (0.0, True) and s.ci_high == pytest.approx(5 + 5 * T1, rel=1e-12)
    free = describe([0, 10])  # no range: not clipped
    assert free.ci_low == pytest.approx(5 - 5 * T1, rel=1e-12) and not free.clipped
    frac = describe([0.9, 1.0], bounds=(0.0, 1.0))  # 0.95 ± 12.706 · 0.0707 / √2 = 0.95 ± 0.635
    assert frac.ci_high == 1.0 and frac.ci_low == pytest.approx(0.95 - 0.05 * T1, rel=1e-12) and frac.clipped
    inside = describe([0.5, 0.5000001, 0.5000002], bounds=(0.0, 1.0))
    assert not inside.clipped and inside.ci_low == pytest.approx(inside.mean - inside.half_width)
    assert bounds_of("dropouts.memory") == bounds_of("dropouts.some_new_cause") == (0.0, math.inf)
    assert bounds_of("participation_rate") == (0.0, 1.0) and bounds_of("round_time_s.p90") == (0.0, math.inf)
    assert bounds_of("not_a_figure") is None and bounds_of("round_time_s.p99") is None
    assert set(RANGES) >= {"final_accuracy", "best_accuracy", "time_to_target_s", "client_flops", "bytes_up"}


def test_the_report_shows_clipped_intervals_as_such(tmp_path, monkeypatch):
    bars = []
    real = matplotlib.axes.Axes.errorbar

    def errorbar(self, x, y, yerr=None, **kw):
        bars.append((self, list(y), yerr))  # the panel's title is set after its bars
        return real(self, x, y, yerr=yerr, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "errorbar", errorbar)
    a = Setting("default", ())
    runs = [_summary(1, 0.5, 100.0, 2.0, 0), _summary(2, 0.7, 110.0, 4.0, 10)]
    runs[0]["round_time_s"]["p90"], runs[1]["round_time_s"]["p90"] = 0.0, 10.0
    text = write_report({(a, "zo"): runs}, [], tmp_path, "T", [], figure=True)
    # round time p90: values 0 and 10, 5 ± 63.5 → [0, 68.5]; dropouts.memory the same
    assert "| default | zo | 2 | 5 | 7.07 | [0, 68.5]† | 0 | 10 |" in text
    assert "3 [0, 15.7]† | 5 [0, 68.5]† |" in text  # the headline's round times
    assert "| 105 ± 63.5 |" in text  # time to target, 105 ± 63.5, stays above 0: not clipped
    assert "† The interval is clipped to the figure's physical range" in text
    with (tmp_path / "sweep.csv").open() as f:
        p90 = next(r for r in csv.DictReader(f) if r["figure"] == "round_time_s.p90")
    assert (p90["ci95_low"], p90["ci95_clipped"]) == ("0.0", "true")
    assert float(p90["ci95_high"]) == pytest.approx(5 + 5 * T1, rel=1e-12)
    drawn = {ax.get_title(): (y, yerr) for ax, y, yerr in bars}
    y, (below, above) = drawn["round time p90"]  # its ticks carry the unit
    assert y == [5.0] and below == [5.0] and above[0] == pytest.approx(5 * T1)  # down to 0, not to -58.5
    y, (below, above) = drawn["final accuracy"]
    assert below[0] == pytest.approx(0.6) and above[0] == pytest.approx(0.4)  # [0, 1]


# --- 4. Ray checked before anything runs -------------------------------------------------------------------------

@pytest.fixture
def clusters(monkeypatch):
    """A fake ``check_cluster``: records each call; 127.0.0.1:1 does not answer."""
    calls = []

    def check_cluster(address):
        calls.append(address)
        if address == "127.0.0.1:1":
            raise BackendUnavailable("executor.ray_address 127.0.0.1:1: no Ray cluster answers within 5 s "
                                     "(Connection refused)")

    monkeypatch.setattr(ray_cluster, "check_cluster", check_cluster)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return calls


@pytest.fixture
def learning(tmp_path) -> str:
    """smoke in learning mode: only a learning run builds its executor, so only its Ray is checked."""
    path = tmp_path / "smoke_learning.yaml"
    path.write_text(Path(SMOKE).read_text() + "\nmode: learning\n")
    return str(path)


def test_a_ray_cluster_that_does_not_answer_is_refused_up_front(tmp_path, monkeypatch, capsys, clusters, learning):
    pool = FakePool()
    out = tmp_path / "out"
    assert _sweep(tmp_path, monkeypatch, pool, learning, "--seeds", "0-2", "--grid", "executor.backend=ray",
                  "--grid", "executor.ray_address=127.0.0.1:1", "--out", str(out)) == 2
    [setting] = expand_grid(parse_grid(["executor.backend=ray", "executor.ray_address=127.0.0.1:1"]))
    assert _one_line(capsys.readouterr().err) == (
        f"fleet.sweep: scenario error: {learning}: executor: executor.ray_address 127.0.0.1:1: no Ray cluster answers "
        f"within 5 s (Connection refused) (--grid setting {setting.name})")
    assert clusters == ["127.0.0.1:1"] and pool.ran == [] and not out.exists()

    # every setting's address is checked once; settings that do not use Ray are not
    clusters.clear()
    assert _sweep(tmp_path, monkeypatch, pool, learning, "--seeds", "0", "--grid", "executor.backend=ray,vectorized",
                  "--grid", "executor.ray_address=10.0.0.1:6379,local", "--out", str(out)) == 0
    assert clusters == ["10.0.0.1:6379", "local"] and len(pool.ran) == 4

    # a timing-mode run builds no executor: its Ray is not checked
    clusters.clear()
    assert _sweep(tmp_path, monkeypatch, pool, SMOKE, "--seeds", "0", "--grid", "executor.backend=ray",
                  "--grid", "executor.ray_address=127.0.0.1:1", "--out", str(tmp_path / "timing")) == 0
    assert clusters == []


def test_ray_missing_or_the_sweeps_own_cluster_is_refused_up_front(tmp_path, monkeypatch, capsys, clusters, learning):
    pool = FakePool()
    out = tmp_path / "out"
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    assert _sweep(tmp_path, monkeypatch, pool, learning, "--seeds", "0", "--grid", "executor.backend=ray",
                  "--out", str(out)) == 2
    assert _one_line(capsys.readouterr().err) == (
        f"fleet.sweep: scenario error: {learning}: executor: {ray_cluster.RAY_MISSING} (--grid setting backend=ray)")
    assert _sweep(tmp_path, monkeypatch, pool, learning, "--seeds", "0", "--backend", "ray", "--out", str(out)) == 2
    assert _one_line(capsys.readouterr().err) == f"fleet.sweep: --backend ray: {ray_cluster.RAY_MISSING}"
    assert clusters == [] and pool.ran == [] and not out.exists()

    monkeypatch.setattr(importlib.util, "find_spec", real)
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")

    def no_cluster(address):
        clusters.append(address)
        raise BackendUnavailable("RAY_ADDRESS 127.0.0.1:1: no Ray cluster answers within 5 s (Connection refused)")

    monkeypatch.setattr(ray_cluster, "check_cluster", no_cluster)
    assert _sweep(tmp_path, monkeypatch, pool, learning, "--seeds", "0", "--backend", "ray", "--out", str(out)) == 2
    assert _one_line(capsys.readouterr().err) == (
        "fleet.sweep: --backend ray: RAY_ADDRESS 127.0.0.1:1: no Ray cluster answers within 5 s (Connection refused)")
    assert clusters == [None] and pool.ran == [] and not out.exists()


# --- 5. a run found complete on the way out ----------------------------------------------------------------------

class InterruptedPool(FakePool):
    """Ctrl-C arrives after the first run wrote its complete summary, before its outcome reached the sweep."""

    def run(self, jobs, cwd):
        for run, argv in jobs:
            self.ran.append(run.label)
            run.out.mkdir(parents=True, exist_ok=True)
            (run.out / "summary.json").write_text(json.dumps(_summary(run.seed, 0.5, None, 1.0)))
            raise KeyboardInterrupt
        yield from ()


def test_the_manifest_on_the_way_out_marks_complete_runs_finished(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    assert _sweep(tmp_path, monkeypatch, InterruptedPool(), SMOKE, "--seeds", "0-2", "--out", str(out)) == 130
    assert "interrupted; run the same command again" in capsys.readouterr().err
    runs = _strict_json((out / "manifest.json").read_text())["runs"]
    assert [r["status"] for r in runs] == ["finished", "pending", "pending"]
    assert runs[0]["note"].startswith("found complete on the way out")
    pool = FakePool()
    assert _sweep(tmp_path, monkeypatch, pool, SMOKE, "--seeds", "0-2", "--out", str(out)) == 0
    assert pool.ran == ["default/s1", "default/s2"]


# --- 6. floating-point noise in the sd -----------------------------------------------------------------------------

def test_an_sd_of_floating_point_noise_is_zero(tmp_path):
    same = describe([20.1, 20.1, 20.1])
    assert (same.mean, same.sd, same.ci_low, same.ci_high, same.half_width) == (20.1, 0.0, 20.1, 20.1, 0.0)
    noisy = describe([20.0, 20.0, 20.000000000000004])  # the sd is 2e-15: noise of the sums
    assert noisy.sd == 0.0 and noisy.ci_low == noisy.ci_high == noisy.mean
    assert describe([1.0, 1.000001]).sd == pytest.approx(math.sqrt(0.5) * 1e-6, rel=1e-6)  # a real spread stays
    a = Setting("default", ())
    runs = [{**_summary(1, 0.5, None, 1.0), "client_flops": v} for v in (20.0, 20.0, 20.000000000000004)]
    text = write_report({(a, "zo"): runs}, [], tmp_path, "T", [], figure=False)
    assert "| 20 ± 0 |" in text and "e-15" not in text


# --- 7. plurals ------------------------------------------------------------------------------------------------------

def test_counts_of_one_are_singular(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    assert _sweep(tmp_path, monkeypatch, FakePool(), SMOKE, "--seeds", "3", "--out", str(out)) == 0
    printed = capsys.readouterr().out
    assert f"fleet.sweep: 1 run (1 setting × 1 seed) in {out}: 0 already finished, 1 to run" in printed
    assert "fleet.sweep: 1 of 1 run finished, 0 failed" in printed
    assert "1 setting × 1 seed (3) = 1 run: 1 finished, 0 failed." in (out / "sweep.md").read_text()
    assert _sweep(tmp_path, monkeypatch, FakePool(), SMOKE, "--seeds", "3-4", "--grid", "coordinator.rounds=2,3",
                  "--out", str(tmp_path / "b")) == 0
    printed = capsys.readouterr().out
    assert "fleet.sweep: 4 runs (2 settings × 2 seeds)" in printed and "4 of 4 runs finished" in printed



# --- an interrupted learning run continues from its checkpoints --------------------------------------------------

def test_a_run_that_left_checkpoints_is_resumed_not_restarted(tmp_path, monkeypatch, capsys):
    """A learning run killed mid-way keeps its checkpoints; the next sweep runs it with --resume (fleet.run then
    ends with the uninterrupted result) and the others as they are. The manifest keeps the plain command."""
    argvs = {}

    class RecordingPool(FakePool):
        def run(self, jobs, cwd):
            def noted():
                for run, argv in jobs:
                    argvs[run.seed] = argv
                    yield run, argv
            yield from super().run(noted(), cwd)

    out = tmp_path / "out"
    interrupted = out / "default" / "s1" / "checkpoints"  # a sweep without --grid: setting "default"
    interrupted.mkdir(parents=True)
    (interrupted / "scenario.sha256").write_text("x\n")
    (interrupted / "version_000003.ckpt").write_bytes(b"state")
    (out / "default" / "s2" / "checkpoints").mkdir(parents=True)
    (out / "default" / "s2" / "checkpoints" / "scenario.sha256").write_text("x\n")  # no round kept: from scratch
    assert _sweep(tmp_path, monkeypatch, RecordingPool(), SMOKE, "--seeds", "0-2", "--out", str(out)) == 0
    assert argvs[1][-1] == "--resume" and "--resume" not in argvs[1][:-1] and "--resume" not in argvs[0]
    assert argvs[1][:-1] == tuple(a.replace("s0", "s1") if a.endswith("s0") else "1" if a == "0" else a
                                  for a in argvs[0])  # seed 0's command for seed 1, plus --resume
    assert "--resume" not in argvs[2]
    manifest = json.loads((out / "manifest.json").read_text())
    assert not any("--resume" in r["command"] for r in manifest["runs"])
