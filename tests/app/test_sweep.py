"""`python -m fleet.sweep`: the t quantile, the plan (seeds, grid, names, commands), resume, the aggregation of
hand-made summaries, failures and bad input with a fake pool, both backends on trivial commands, and one real
sweep of two seeds end to end."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import shlex
import subprocess
import sys
import types
from pathlib import Path

import pytest

from fleet.app import sweep as sweep_app
from fleet.app.sweep import main
from fleet.app.sweep_backends import LocalPool, Outcome, RayPool, tail
from fleet.app.sweep_plan import (
    PlanError,
    Setting,
    expand_grid,
    parse_grid,
    parse_seeds,
    plan_runs,
    run_summaries,
    split_values,
)
from fleet.app.sweep_report import write_report
from fleet.app.sweep_stats import betainc, describe, t_quantile

ROOT = Path(__file__).resolve().parents[2]
SMOKE = str(ROOT / "scenarios/smoke.yaml")


def _strict_json(text: str):
    def refuse(name):
        raise AssertionError(f"{name} in strict JSON")
    return json.loads(text, parse_constant=refuse)


# --- statistics -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("p, df, expected", [
    (0.975, 1, 12.706), (0.975, 2, 4.303), (0.975, 3, 3.182), (0.975, 4, 2.776), (0.975, 9, 2.262),
    (0.975, 30, 2.042), (0.975, 100_000, 1.960), (0.95, 5, 2.015), (0.995, 10, 3.169), (0.9995, 1, 636.619)])
def test_t_quantile_matches_the_tables(p, df, expected):
    assert round(t_quantile(p, df), 3) == expected


def test_t_quantile_closed_forms_symmetry_and_bounds():
    for p in (0.6, 0.9, 0.975, 0.999):
        assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-11)
        assert t_quantile(p, 2) == pytest.approx((2 * p - 1) * math.sqrt(2 / (4 * p * (1 - p))), rel=1e-11)
        assert t_quantile(1 - p, 7) == -t_quantile(p, 7)
    assert t_quantile(0.5, 3) == 0.0
    assert betainc(2.5, 1.0, 0.3) == pytest.approx(0.3 ** 2.5, rel=1e-12)  # I_x(a, 1) = x^a
    for bad in ((0.0, 3), (1.0, 3), (0.9, 0), (0.9, math.inf)):
        with pytest.raises(ValueError):
            t_quantile(*bad)


def test_t_quantile_agrees_with_scipy_where_installed():
    stats = pytest.importorskip("scipy.stats")
    for p in (0.9, 0.975, 0.995):
        for df in (1, 2, 5, 9, 29, 250):
            assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-9)


def test_describe_exact():
    s = describe([1, 2, 3, 4, None, math.nan])
    sd = math.sqrt(5 / 3)
    half = 3.182446305284263 * sd / 2  # t(0.975, 3)
    assert (s.n, s.mean, s.min, s.max) == (4, 2.5, 1.0, 4.0)
    assert s.sd == pytest.approx(sd, rel=1e-15)
    assert (s.ci_low, s.ci_high) == (pytest.approx(2.5 - half, rel=1e-12), pytest.approx(2.5 + half, rel=1e-12))
    assert describe([]).mean is None and describe([]).n == 0
    one = describe([7])
    assert (one.n, one.mean, one.sd, one.ci_low, one.half_width) == (1, 7.0, None, None, None)
    flat = describe([3, 3, 3])
    assert (flat.sd, flat.ci_low, flat.ci_high) == (0.0, 3.0, 3.0)


# --- the plan ---------------------------------------------------------------------------------------------------

def test_parse_seeds():
    assert parse_seeds("0-9") == list(range(10))
    assert parse_seeds("3") == [3]
    assert parse_seeds("0-2,10, 12-13") == [0, 1, 2, 10, 12, 13]
    for bad in ("5-2", "x", "-3", "1-", "", "1,1", "0-3,2", "1.5", "0-100000"):
        with pytest.raises(PlanError):
            parse_seeds(bad)


def test_grid_values_split_like_set_values():
    assert split_values("0.1,0.3") == ["0.1", "0.3"]
    assert split_values("[1, 2],[3],{a: 1, b: 2},'x,y',null") == ["[1, 2]", "[3]", "{a: 1, b: 2}", "'x,y'", "null"]
    for bad in ("coordinator.rounds", "=1", "a..b=1", "-x=1", "k=[1,2", "k=1,1"):
        with pytest.raises(PlanError):
            parse_grid([bad])
    with pytest.raises(PlanError, match="given twice"):
        parse_grid(["k=1", "k=2"])


def test_grid_expansion_and_names():
    grid = parse_grid(["coordinator.rounds=3,5", "algorithm.params.lr=0.1,0.03", "lr=x"])
    settings = expand_grid(grid)
    assert [s.name for s in settings] == [  # first key slowest; shortest suffix naming no other key
        "rounds=3,params.lr=0.1,lr=x", "rounds=3,params.lr=0.03,lr=x",
        "rounds=5,params.lr=0.1,lr=x", "rounds=5,params.lr=0.03,lr=x"]
    assert settings[1].overrides == ["coordinator.rounds=3", "algorithm.params.lr=0.03", "lr=x"]
    odd = expand_grid(parse_grid(["fleet.mix.0.link.loss_prob=[1, 2],a b/c"]))
    digest = hashlib.sha1(b"[1, 2]").hexdigest()[:6]
    assert [s.name for s in odd] == [f"loss_prob=1-2-{digest}",
                                     f"loss_prob=a-b-c-{hashlib.sha1(b'a b/c').hexdigest()[:6]}"]
    assert [s.name for s in expand_grid([])] == ["default"]


def test_plan_runs_are_fleet_run_commands(tmp_path):
    [setting] = expand_grid(parse_grid(["coordinator.deadline_s=null"]))
    runs = plan_runs("s.yaml", [setting], [4, 5], tmp_path, figures=False)
    assert [r.label for r in runs] == ["deadline_s=null/s4", "deadline_s=null/s5"]
    assert runs[0].out == tmp_path / "deadline_s=null" / "s4"
    assert runs[0].command == (f"{shlex.quote(sys.executable)} -m fleet.run s.yaml --seed 4 --set "
                               f"coordinator.deadline_s=null --out {tmp_path}/deadline_s=null/s4 --quiet --no-figures")


def test_a_run_is_finished_only_with_complete_summaries(tmp_path):
    one, multi = plan_runs("s.yaml", [Setting("a", ()), Setting("b", ())], [3], tmp_path)
    assert run_summaries(one, ["smoke"]) is None
    one.out.mkdir(parents=True)
    (one.out / "summary.json").write_text('{"seed": 3, "event_log_sha256": "ab", "clie')  # killed mid-write
    assert run_summaries(one, ["smoke"]) is None
    (one.out / "summary.json").write_text('{"seed": 4, "event_log_sha256": "ab"}')  # another seed's
    assert run_summaries(one, ["smoke"]) is None
    (one.out / "summary.json").write_text('{"seed": 3, "event_log_sha256": "ab"}')
    assert run_summaries(one, ["smoke"]) == {"smoke": {"seed": 3, "event_log_sha256": "ab"}}
    for v in ("x", "y"):
        (multi.out / v).mkdir(parents=True)
        (multi.out / v / "summary.json").write_text('{"seed": 3, "event_log_sha256": "ab"}')
    assert run_summaries(multi, ["x", "y"]) is None  # comparison.json comes after the last variant
    (multi.out / "comparison.json").write_text("{}")
    assert set(run_summaries(multi, ["x", "y"])) == {"x", "y"}


# --- the report -------------------------------------------------------------------------------------------------

def _summary(seed, acc, ttt, rounds_p50, memory=0):
    return {"seed": seed, "event_log_sha256": "x", "final_accuracy": acc, "best_accuracy": acc,
            "time_to_target_s": ttt, "participation_rate": 0.5, "round_time_s": {"p50": rounds_p50, "p90": None},
            "dropouts": {"memory": memory, "deadline": 0}, "client_flops": 10 * seed, "bytes_up": 1, "bytes_down": 2}


def test_aggregation_of_hand_made_summaries(tmp_path):
    a, b = Setting("lr=0.1", (("algorithm.params.lr", "0.1"),)), Setting("lr=0.3", (("algorithm.params.lr", "0.3"),))
    groups = {(a, "zo"): [_summary(1, 0.5, 100.0, 2.0, 1), _summary(2, 0.7, None, 4.0, 3)],
              (b, "zo"): [_summary(1, 0.9, 50.0, 1.0)], (b, "fedavg"): []}
    text = write_report(groups, ["algorithm.params.lr"], tmp_path, "T", ["intro"], figure=True)
    with (tmp_path / "sweep.csv").open() as f:
        rows = {(r["setting"], r["variant"], r["figure"]): r for r in csv.DictReader(f)}
    assert "nan" not in (tmp_path / "sweep.csv").read_text().lower()
    acc = rows[("lr=0.1", "zo", "final_accuracy")]
    half = 12.706204736174696 * math.sqrt(0.02) / math.sqrt(2)  # t(0.975, 1) * sd / sqrt(n)
    assert acc["algorithm.params.lr"] == "0.1" and (acc["runs"], acc["n"]) == ("2", "2")
    assert float(acc["mean"]) == pytest.approx(0.6) and float(acc["sd"]) == pytest.approx(math.sqrt(0.02))
    assert 0.6 - half < 0 and 0.6 + half > 1  # so the interval is clipped to accuracy's range, [0, 1]
    assert (acc["ci95_low"], acc["ci95_high"], acc["ci95_clipped"]) == ("0.0", "1.0", "true")
    p50 = rows[("lr=0.1", "zo", "round_time_s.p50")]  # 3 ± 12.706: clipped at 0 only
    assert (p50["ci95_low"], p50["ci95_clipped"]) == ("0.0", "true")
    assert float(p50["ci95_high"]) == pytest.approx(3 + 12.706204736174696, rel=1e-12)
    assert rows[("lr=0.1", "zo", "participation_rate")]["ci95_clipped"] == "false"  # sd 0: nothing to clip
    ttt = rows[("lr=0.1", "zo", "time_to_target_s")]
    assert (ttt["n"], ttt["mean"], ttt["sd"], ttt["ci95_low"]) == ("1", "100.0", "", "")  # reached by one seed
    assert rows[("lr=0.1", "zo", "dropouts.memory")]["mean"] == "2.0"
    assert rows[("lr=0.1", "zo", "round_time_s.p90")]["n"] == "0"
    assert rows[("lr=0.3", "fedavg", "final_accuracy")]["runs"] == "0"
    assert {f for _, _, f in rows} >= {"dropouts.offline", "dropouts.flops", "bytes_up", "bytes_down"}
    assert len(rows) == 3 * len({f for _, _, f in rows})
    assert "| lr=0.1 | zo | 2 | 0.6 [0, 1]† | 0.6 [0, 1]† | 100 (1 of 2) | 0.5 ± 0 | 3 [0, 15.7]† |" in text
    assert "| lr=0.1 | zo | 2 | 0.6 | 0.141 | [0, 1]† | 0.5 | 0.7 |" in text  # the final accuracy's table
    assert "† The interval is clipped to the figure's physical range" in text
    assert "| lr=0.3 | fedavg | 0 | n/a |" in text
    assert "Zero in every run: dropouts: deadline" in text and "round time p90 (s)" in text.split("No value")[1]
    assert (tmp_path / "sweep.png").stat().st_size > 0 and text == (tmp_path / "sweep.md").read_text()


# --- the program with a fake pool: resume, failures, bad input --------------------------------------------------

class FakePool:
    """Writes a finished summary for each run, except the seeds in ``fail``."""

    def __init__(self, fail=()):
        self.fail, self.ran = set(fail), []

    def run(self, jobs, cwd):
        for run, argv in jobs:
            self.ran.append(run.label)
            if run.seed in self.fail:
                yield run, Outcome(1, "Traceback...\nValueError: boom", 0.5)
                continue
            run.out.mkdir(parents=True, exist_ok=True)
            (run.out / "summary.json").write_text(json.dumps(_summary(run.seed, 0.1 * run.seed, None, 1.0)))
            yield run, Outcome(0, "", 0.25)


def test_resume_skips_finished_runs_and_failures_are_reported(tmp_path, monkeypatch, capsys):
    pool = FakePool(fail={2})
    monkeypatch.setattr(sweep_app, "_pool", lambda args: (pool, 2))
    args = [SMOKE, "--seeds", "0-2", "--grid", "coordinator.rounds=2,3", "--out", str(tmp_path), "--no-figures"]
    assert main(args) == 1
    assert sorted(pool.ran) == ["rounds=2/s0", "rounds=2/s1", "rounds=2/s2", "rounds=3/s0", "rounds=3/s1",
                                "rounds=3/s2"]
    assert pool.ran[:2] == ["rounds=2/s0", "rounds=3/s0"]  # seed by seed across the settings
    out, err = capsys.readouterr()
    assert "[6/6]" in out and "4 of 6 runs finished, 2 failed" in out
    assert f"run rounds=2/s2 failed (exit 1): {shlex.quote(sys.executable)} -m fleet.run" in err
    assert "    ValueError: boom" in err
    manifest = _strict_json((tmp_path / "manifest.json").read_text())
    by = {(r["setting"], r["seed"]): r for r in manifest["runs"]}
    assert by[("rounds=3", 2)]["status"] == "failed" and by[("rounds=3", 2)]["stderr_tail"].endswith("boom")
    assert by[("rounds=3", 1)]["command"] == (f"{shlex.quote(sys.executable)} -m fleet.run {SMOKE} --seed 1 --set "
                                              f"coordinator.rounds=3 --out {tmp_path}/rounds=3/s1 --quiet --no-figures")
    assert manifest["python"] == sys.executable
    assert manifest["scenario_sha256"] == hashlib.sha256(Path(SMOKE).read_bytes()).hexdigest()
    assert "2 failed (rounds=2/s2, rounds=3/s2)" in (tmp_path / "sweep.md").read_text()

    pool.ran.clear(), pool.fail.clear()
    assert main(args) == 0  # the rerun makes only what is missing
    assert sorted(pool.ran) == ["rounds=2/s2", "rounds=3/s2"]
    statuses = [r["status"] for r in _strict_json((tmp_path / "manifest.json").read_text())["runs"]]
    assert statuses.count("skipped") == 4 and statuses.count("finished") == 2


@pytest.mark.parametrize("extra, message", [
    (["--seeds", "5-2"], "fleet.sweep: --seeds '5-2': the range 5-2 is empty"),
    (["--seeds", "0-1", "--grid", "coordinator.roundz=1,2"],
     "fleet.sweep: scenario error: {smoke}: coordinator.roundz: Extra inputs are not permitted"),
    (["--seeds", "0-1", "--grid", "coordinator.rounds=2,0"], "coordinator.rounds: Input should be greater than 0"),
    (["--seeds", "0-1", "--grid", "coordinator.rounds"], "fleet.sweep: --grid 'coordinator.rounds': expected"),
    (["--seeds", "99999999999999999999"], "fleet.sweep: --seeds"),
    (["--seeds", "9999999999999999999"], "seed: Input should be less than or equal to"),
    (["--seeds", "0", "--backend", "ray"], "fleet.sweep: --backend ray: the ray backend needs the ray package: "
                                           "pip install '.[ray]'"),
])
def test_bad_input_is_one_line_and_status_2(tmp_path, monkeypatch, capsys, extra, message):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails, installed or not
    assert main([SMOKE, "--out", str(tmp_path / "out"), *extra]) == 2
    out, err = capsys.readouterr()
    assert message.format(smoke=SMOKE) in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_broken_scenario_and_a_bad_out(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("fleet: [\n")
    assert main([str(bad), "--seeds", "0"]) == 2
    assert capsys.readouterr().err.strip() == f"fleet.sweep: scenario error: {bad}: not valid YAML at line 2"
    (tmp_path / "file").write_text("")
    assert main([SMOKE, "--seeds", "0", "--out", str(tmp_path / "file")]) == 2
    assert capsys.readouterr().err.strip() == f"fleet.sweep: --out {tmp_path / 'file'}: not a directory"


# --- the backends on trivial commands ---------------------------------------------------------------------------

JOBS = [("ok", ["-c", "pass"]), ("bad", ["-c", "import sys; sys.stderr.write('x\\n' * 50 + 'last'); sys.exit(3)"])]


def test_local_pool_runs_processes_and_keeps_the_stderr_tail(tmp_path):
    got = dict(LocalPool(2).run(JOBS, str(tmp_path)))
    assert got["ok"].returncode == 0 and got["ok"].stderr_tail == ""
    assert got["bad"].returncode == 3 and got["bad"].stderr_tail.splitlines()[-1] == "last"
    assert len(got["bad"].stderr_tail.splitlines()) == 20
    assert tail("y" * 5000).startswith("...") and len(tail("y" * 5000)) == 2000


def test_ray_pool_submits_each_run_as_a_task(tmp_path, monkeypatch):
    calls = []

    class Ref:
        def __init__(self, fn, args):
            self.value = fn(*args)

    def remote(**options):
        calls.append(options)
        return lambda fn: types.SimpleNamespace(remote=lambda *args: Ref(fn, args))

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    fake = types.SimpleNamespace(is_initialized=lambda: False, remote=remote,
                                 init=lambda **options: calls.append(("init", options["address"],
                                                                      options["include_dashboard"])),
                                 wait=lambda refs, num_returns: (refs[:num_returns], refs[num_returns:]),
                                 get=lambda ref: ref.value, cancel=lambda ref, force: None,
                                 shutdown=lambda: calls.append("shutdown"))
    monkeypatch.setitem(sys.modules, "ray", fake)
    got = dict(RayPool(1).run(JOBS, str(tmp_path)))
    # a private local instance without its dashboard, one CPU a task, shut down after the runs
    assert calls == [("init", "local", False), {"num_cpus": 1}, "shutdown"]
    assert got["ok"].returncode == 0 and got["bad"].returncode == 3


# --- end to end -------------------------------------------------------------------------------------------------

TINY = """name: tiny
seed: 1
fleet:
  devices: 12
  mix:
    - {device_class: rpi4_4gb, link_class: wifi, fraction: 0.5}
    - {device_class: esp32_s3_psram, link_class: wifi, fraction: 0.5}
algorithm: {name: zo, params: {model: mlp_small, batch_size: 8, local_steps: 2, queries: 2}}
coordinator: {mode: sync, rounds: 2, clients_per_round: 4, deadline_s: 600}
variants:
  wide: ["coordinator.clients_per_round=6"]
  narrow: ["coordinator.clients_per_round=3"]
"""


@pytest.mark.slow  # three sweeps of real runs in subprocesses: ~16 s on 2 cores
def test_a_real_sweep_of_two_seeds_then_a_resumed_one(tmp_path):
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(TINY)
    out = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "fleet.sweep", str(scenario), "--seeds", "3-4", "--out", str(out), "--jobs", "2",
           "--no-figures"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "[2/2] default/s" in proc.stdout  # plain lines: stdout is not a terminal
    manifest = _strict_json((out / "manifest.json").read_text())
    assert [(r["seed"], r["status"], r["variants"]) for r in manifest["runs"]] == [
        (3, "finished", ["wide", "narrow"]), (4, "finished", ["wide", "narrow"])]
    with (out / "sweep.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {(r["variant"], r["n"]) for r in rows if r["figure"] == "client_flops"} == {("wide", "2"), ("narrow", "2")}
    assert "nan" not in (out / "sweep.csv").read_text().lower()
    table = (out / "sweep.md").read_text()
    assert "| default | wide | 2 |" in table and "| default | narrow | 2 |" in table

    # a sweep killed while writing s3 (the runner's summary cut short): the same command makes s3 again, the same
    # run as before, byte for byte in its event log; s4 is left alone
    before = {v: json.loads((out / "default" / "s3" / v / "summary.json").read_text())["event_log_sha256"]
              for v in ("wide", "narrow")}
    (out / "default" / "s3" / "narrow" / "summary.json").write_text("{")
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "1 already finished, 1 to run" in proc.stdout and "default/s3: done" in proc.stdout
    assert before == {v: json.loads((out / "default" / "s3" / v / "summary.json").read_text())["event_log_sha256"]
                      for v in ("wide", "narrow")}
    assert manifest["runs"][0]["command"] == (f"{shlex.quote(sys.executable)} -m fleet.run {scenario} --seed 3 "
                                              f"--out {out}/default/s3 --quiet --no-figures")
    # the command can be pasted: the shell splits it back into the argv the sweep ran
    assert shlex.split(manifest["runs"][0]["command"]) == [sys.executable, "-m", "fleet.run", str(scenario), "--seed",
                                                           "3", "--out", f"{out}/default/s3", "--quiet", "--no-figures"]
