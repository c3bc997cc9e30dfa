"""Scale in timing mode: a fleet of millions of devices, its build, its run, its study, its peak memory.

    python benchmarks/scale.py                          # 1M and 10M devices, ~100k tasks each, then 1k/100k ratios
    python benchmarks/scale.py --sizes 1000000 --tasks 20000 --no-ratios
    python benchmarks/scale.py --sizes 10000000 --tasks 1300000 --events parquet   # a log of millions of events

Each size runs in a fresh subprocess (its peak RSS is its own): the fleet of ``scenarios/iot_1000.yaml`` (12
device/link classes, random failures, diurnal phones, batteries, LoRaWAN's duty cycle, a 30 s deadline) in
timing mode with ``--devices`` devices and 10 synchronous rounds sized to dispatch about ``--tasks`` tasks;
the child builds it (``build s``), runs it (``loop s``, and tasks per second of the loop), writes every output
but the figures (``study s``: the analysis, summary.json, rounds.csv and the event log as ``--events``), and
reports its peak RSS. Then, unless ``--no-ratios``, ``benchmarks/throughput.py`` measures simulated tasks per
second against the bare SimPy loop at 1,000 and 100,000 devices. Targets: 10M devices within 16 GiB peak RSS;
fleet/bare >= 1.0 at 1k and 100k devices.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROUNDS = 10
GIB = 2**30


def scenario(n: int, tasks: int) -> dict:
    """``scenarios/iot_1000.yaml``'s fleet and coordinator, in timing mode, ``n`` devices, ~``tasks`` tasks."""
    import yaml

    data = yaml.safe_load((ROOT / "scenarios" / "iot_1000.yaml").read_text())
    for key in ("variants", "executor", "data", "evaluation"):
        data.pop(key, None)
    data.update(name=f"scale-{n}", mode="timing")
    data["fleet"]["devices"] = n
    per_round = max(1, tasks // ROUNDS)
    over = data["coordinator"].get("over_selection", 0.0)
    data["coordinator"].update(rounds=ROUNDS, clients_per_round=max(1, round(per_round / (1.0 + over))))
    return data


def _child(n: int, tasks: int, events: str) -> None:
    sys.path.insert(0, str(ROOT))
    from fleet.app.build import build_simulation
    from fleet.app.report import write_outputs
    from fleet.app.scenario import parse_scenario

    t0 = time.perf_counter()
    sim = build_simulation(parse_scenario(scenario(n, tasks)))
    build_s = time.perf_counter() - t0
    sim.run()
    t1 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        summary = write_outputs(sim, Path(out), figures=False, events=events)
        written = sorted(p.name for p in Path(out).iterdir())
    study_s = time.perf_counter() - t1
    print(json.dumps({"n": n, "tasks": summary["client_tasks"], "events": summary["events"], "build_s": build_s,
                      "loop_s": sim.wall_s, "study_s": study_s, "files": written,
                      "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                      "event_log_sha256": summary["event_log_sha256"]}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--tasks", type=int, default=100_000, help="tasks to dispatch, about (default 100,000)")
    parser.add_argument("--events", choices=("auto", "csv", "parquet"), default="auto")
    parser.add_argument("--no-ratios", action="store_true", help="skip the 1k/100k ratios to bare SimPy")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.tasks, args.events)
        return 0
    print(f"{'devices':>10} {'tasks':>9} {'events':>9} {'build s':>8} {'loop s':>8} {'tasks/s':>8} "
          f"{'study s':>8} {'total s':>8} {'peak RSS GiB':>13}  event log")
    ok = True
    for n in args.sizes:
        started = time.perf_counter()
        out = subprocess.run([sys.executable, __file__, "--child", str(n), "--tasks", str(args.tasks),
                              "--events", args.events], check=True, capture_output=True, text=True).stdout
        total_s = time.perf_counter() - started
        r = json.loads(out.splitlines()[-1])
        rss = r["peak_rss_bytes"] / GIB
        ok &= n < 10_000_000 or rss <= 16
        log = next((f for f in r["files"] if f.startswith("events.")), "?")
        print(f"{n:>10,} {r['tasks']:>9,} {r['events']:>9,} {r['build_s']:>8.1f} {r['loop_s']:>8.1f} "
              f"{r['tasks'] / r['loop_s']:>8.0f} {r['study_s']:>8.1f} {total_s:>8.1f} {rss:>13.2f}  {log}",
              flush=True)
    if not args.no_ratios:
        print()
        ratios = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--sizes", "1000",
                                 "100000"], check=True, capture_output=True, text=True).stdout
        print(ratios, end="")
    print("target (10M devices within 16 GiB peak RSS):", "met" if ok else "NOT met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
