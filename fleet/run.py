"""The command line: ``python -m fleet.run SCENARIO [--out DIR] [--seed N] [--set k=v ...]``.

Exit status: 0 when the run finished, 2 for a bad scenario or bad arguments (one line on stderr
naming the field, no traceback).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fleet.run", description=(
        "Simulate a heterogeneous AIoT fleet doing federated learning, in virtual time."))
    p.add_argument("scenario", help="scenario YAML file (see scenarios/)")
    p.add_argument("--out", type=Path, help="output folder (default runs/<scenario>-<timestamp>)")
    p.add_argument("--seed", type=int, help="override the scenario's seed")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
                   help="override a scenario key, e.g. --set coordinator.rounds=5 (repeatable)")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no printed study")
    p.add_argument("--resume", action="store_true", help=(
        "learning mode: continue a crashed run in --out from its checkpoints (same scenario)"))
    return p


def _print_study(console, summ: dict, out: Path) -> None:
    from rich.table import Table

    console.print(f"[bold]{summ['scenario']}[/]: {summ['devices']} devices, "
                  f"{summ['rounds']} rounds, {summ['sim_time_s']:.1f} s virtual "
                  f"in {summ['wall_s']:.2f} s wall ({summ['stopped_by']})")
    console.print(f"tasks {summ['client_tasks']}, accepted {summ['updates_accepted']}, "
                  f"participation {summ['participation_rate']:.1%} of devices; round time "
                  + ", ".join(f"{q} {v:.1f} s" for q, v in summ["round_time_s"].items()
                              if v is not None))
    console.print("dropouts: " + ", ".join(f"{c} {k}" for c, k in summ["dropouts"].items()))
    table = Table(title="by device class (completion s; tail = tasks above overall p90)")
    for col in ("class", "devices", "tasks", "accepted", "dropouts", "p50", "p90", "p99",
                "tail cause"):
        table.add_column(col, overflow="fold")
    fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    for cls, row in summ["by_class"].items():
        comp = row["completion_s"]
        table.add_row(cls, str(row["devices"]), str(row["client_tasks"]),
                      str(row["updates_accepted"]),
                      " ".join(f"{c}:{k}" for c, k in row["dropouts"].items()) or "-",
                      fmt(comp["p50"]), fmt(comp["p90"]), fmt(comp["p99"]),
                      " ".join(f"{c}:{k}" for c, k in row["tail_cause"].items()) or "-")
    console.print(table)
    console.print(f"client FLOPs {summ['client_flops']:.3g}, bytes up {summ['bytes_up']:,}, "
                  f"down {summ['bytes_down']:,}")
    if summ.get("final_accuracy") is not None:
        ttt = summ["time_to_target_s"]
        console.print(f"test accuracy final {summ['final_accuracy']:.4f} (best {summ['best_accuracy']:.4f}); "
                      f"time to {summ['target_accuracy']:.0%}: "
                      + ("not reached" if ttt is None else f"{ttt:.0f} s virtual"))
    console.print(f"event log sha256 {summ['event_log_sha256']}")
    console.print(f"outputs in {out}")


def _run_one(scenario, out: Path, args, console) -> dict:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from fleet.report import write_outputs
    from fleet.scenario import ScenarioError
    from fleet.simulation import build_simulation

    checkpoints = None
    if scenario.mode == "learning":
        checkpoints = out / "checkpoints"
        if checkpoints.exists() and not args.resume:
            shutil.rmtree(checkpoints)  # a fresh run: never mix in another run's states
    try:
        sim = build_simulation(scenario, checkpoints)
    except ValueError as exc:
        raise ScenarioError(str(exc)) from None
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True,
                  disable=args.quiet) as progress:
        bar = progress.add_task(f"{out.name}: rounds", total=scenario.coordinator.rounds)
        sim.run(on_round=lambda done: progress.update(bar, completed=done))
    summ = write_outputs(sim, out, figures=not args.no_figures)
    return summ, (sim.learning.evaluations if sim.learning is not None else None)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from fleet.scenario import ScenarioError, load_variants

    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    from rich.console import Console

    console = Console(stderr=True, quiet=args.quiet)
    if args.resume and args.out is None:
        print("fleet.run: --resume needs the --out folder of the run to continue", file=sys.stderr)
        return 2
    try:
        variants = load_variants(args.scenario, overrides)
        base = Path(args.scenario).stem
        out = args.out or Path("runs") / f"{base}-{time.strftime('%Y%m%d-%H%M%S')}"
        summaries, evaluations = [], {}
        for name, scenario in variants:
            run_out = out if len(variants) == 1 else out / name
            summ, evaluations[name] = _run_one(scenario, run_out, args, console)
            summaries.append((name, summ))
            if not args.quiet:
                _print_study(Console(), summaries[-1][1], run_out)
    except ScenarioError as exc:
        print(f"fleet.run: scenario error: {exc}", file=sys.stderr)
        return 2
    if len(variants) > 1:
        from fleet.report import write_comparison

        text = write_comparison(summaries, out,
                                None if args.no_figures else {k: v for k, v in evaluations.items() if v})
        if not args.quiet:
            Console().print(text)
    if args.quiet:
        print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
