"""Run a study scenario over several seeds and tabulate its variants: mean +- sd of the accuracy.

    .venv/bin/python benchmarks/study/run_seeds.py                          # fedfpzo_why.yaml, seed 1
    .venv/bin/python benchmarks/study/run_seeds.py --seeds 2 3 --variants zo ntk ntk_lr02 random_lr02
    .venv/bin/python benchmarks/study/run_seeds.py --out /tmp/why --tabulate   # only read finished runs
    .venv/bin/python benchmarks/study/run_seeds.py --scenario benchmarks/study/fedmef_study.yaml --seeds 1 2 3

Each seed runs ``python -m fleet.run SCENARIO --out OUT/s<seed> --seed <seed> --no-figures --quiet`` (with
``--set`` passed through; with ``--variants``, on a copy of SCENARIO in OUT holding only those), then one
markdown table is printed: per variant, the final and best test accuracy and the accuracy after a quarter, half
and all of the rounds (the evaluated model versions), as mean +- sd over the seeds found, the client FLOPs and
the model's parameters at the end (``final_params``: less than at the start where the model was pruned).
``--out`` defaults to /tmp/<the scenario's file name without .yaml>.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _stat(values: list[float], spec: str = ".3f") -> str:
    if not values:
        return "n/a"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):{spec}} +- {sd:{spec}}"


def _accuracy_at(run: Path, versions: list[int]) -> list[float | None]:
    """Test accuracy of the last evaluation of each model version in ``versions`` (None if not evaluated)."""
    with (run / "evaluations.csv").open() as f:
        by_version = {int(r["model_version"]): float(r["accuracy"]) for r in csv.DictReader(f) if r["accuracy"]}
    return [by_version.get(v) for v in versions]


def tabulate(out: Path) -> str:
    runs: dict[str, list[Path]] = {}
    for summary in sorted(out.glob("s*/*/summary.json")):
        runs.setdefault(summary.parent.name, []).append(summary.parent)
    for summary in sorted(out.glob("s*/summary.json")):  # a one-variant scenario writes into OUT/s<seed>
        runs.setdefault(json.loads(summary.read_text())["scenario"], []).append(summary.parent)
    lines = []
    for variant, dirs in runs.items():
        summaries = [json.loads((d / "summary.json").read_text()) for d in dirs]
        rounds = summaries[0]["rounds_aggregated"]
        marks = [rounds // 4, rounds // 2, rounds]
        at = [_accuracy_at(d, marks) for d in dirs]
        if not lines:
            lines = [f"| variant | seeds | final accuracy | best accuracy | after {marks[0]} rounds | after {marks[1]} "
                     f"| after {marks[2]} | client FLOPs | final params |", "|---|---|---|---|---|---|---|---|---|"]
        cols = [_stat([a[i] for a in at if a[i] is not None]) for i in range(3)]
        lines.append(f"| {variant} | {len(dirs)} | {_stat([s['final_accuracy'] or 0.0 for s in summaries])} | "
                     f"{_stat([s['best_accuracy'] or 0.0 for s in summaries])} | {' | '.join(cols)} | "
                     f"{statistics.mean(s['client_flops'] for s in summaries):.3g} | "
                     f"{_stat([s['final_params'] for s in summaries if 'final_params' in s], '.0f')} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenario", type=Path, default=Path(__file__).with_name("fedfpzo_why.yaml"))
    p.add_argument("--out", type=Path, help="where the runs go (default /tmp/<scenario file stem>)")
    p.add_argument("--seeds", nargs="+", type=int, default=[1])
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE")
    p.add_argument("--variants", nargs="+", help="run only these variants of the scenario")
    p.add_argument("--tabulate", action="store_true", help="only tabulate the runs already in --out")
    args = p.parse_args()
    args.out = args.out or Path("/tmp") / args.scenario.stem
    if args.variants:
        doc = yaml.safe_load(args.scenario.read_text())
        doc["variants"] = {name: doc["variants"][name] for name in args.variants}
        args.out.mkdir(parents=True, exist_ok=True)
        args.scenario = args.out / f"{'-'.join(args.variants)}.yaml"
        args.scenario.write_text(yaml.safe_dump(doc, sort_keys=False))
    if not args.tabulate:
        for seed in args.seeds:
            cmd = [sys.executable, "-m", "fleet.run", str(args.scenario), "--out", str(args.out / f"s{seed}"),
                   "--seed", str(seed), "--no-figures", "--quiet", *(f"--set={o}" for o in args.overrides)]
            if subprocess.run(cmd, cwd=ROOT).returncode != 0:
                return 1
    print(tabulate(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
