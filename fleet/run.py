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
                from fleet.report import print_study

                print_study(Console(), summaries[-1][1], run_out)
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
