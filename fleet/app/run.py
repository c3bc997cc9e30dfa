"""The command line: ``python -m fleet.run SCENARIO [--out DIR] [--seed N] [--set k=v ...] [--dry-run]``, or
``python -m fleet.run --schema``.

Exit status: 0 when the run finished; 2 for a bad scenario, bad arguments or an ``--out`` that is
not a writable folder (checked before anything runs); 1 when writing fails mid-run (a full disk) or
memory runs out; 130 on Ctrl-C. Every failure is one line on stderr naming the field or the path, no
traceback; a learning run stopped by any of them resumes with ``--resume`` (its checkpoints stay).
Warnings (``scenario_warnings``) are one line each on stderr; stdout stays as ``--quiet`` promises.
An executor that goes away mid-run (``BackendUnavailable``: a Ray cluster lost) is one line, exit 2.

A thin layer over what the Python API (``fleet.simulate``) calls: ``load_variants``, then per variant
``fleet.app.simulation.run_scenario`` and ``fleet.app.report.write_outputs``. ``--schema`` prints the
scenario's JSON schema (``fleet.app.json_schema``); ``--dry-run`` validates a scenario and prints the fleet it
would sample (``fleet.app.dry_run``) without running it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

from fleet.app.out_folder import OutFolderError, check_out_folder, holds_checkpoints, out_path, remove_if_empty
from fleet.app.pipes import quiet_on_closed_pipe

INTERRUPTED = "fleet.run: interrupted"
RESUMABLE = "; the checkpoints so far stay (resume with --resume)"  # said when the run left checkpoints


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fleet.run", description=(
        "Simulate a heterogeneous AIoT fleet doing federated learning, in virtual time."))
    p.add_argument("scenario", nargs="?", help="scenario YAML file (see scenarios/)")
    p.add_argument("--out", type=out_path, help="output folder (default runs/<scenario>-<timestamp>)")
    p.add_argument("--seed", type=int, help="override the scenario's seed")
    p.add_argument("--variant", help="run only this variant (a scenario with variants: default all of them)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
                   help="override a scenario key, e.g. --set coordinator.rounds=5 (repeatable)")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    p.add_argument("--events", choices=("auto", "csv", "parquet"), default="auto", help=(
        "the event log's format: events.csv, or events.parquet (needs pyarrow: the 'parquet' extra); "
        "auto (default) writes Parquet above 1,000,000 events when pyarrow is installed, CSV otherwise"))
    p.add_argument("--quiet", action="store_true", help="no progress bar and no printed study")
    p.add_argument("--resume", action="store_true", help=(
        "learning mode: continue a crashed run in --out from its checkpoints (same scenario)"))
    p.add_argument("--schema", action="store_true", help=(
        "print the scenario's JSON schema (for editor completion) and exit; takes no SCENARIO"))
    p.add_argument("--dry-run", action="store_true", help=(
        "validate SCENARIO and print the fleet it would sample (the same draws as a run), without running"))
    return p


def _run_one(scenario, out: Path, args, console) -> tuple[dict, Sequence]:
    """Run one scenario (``run_scenario``, with a progress bar) and write it (``write_outputs``); its summary
    and its evaluations (none in timing mode)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from fleet.app.report import write_outputs
    from fleet.app.simulation import checkpoint_dir, run_scenario

    checkpoints = checkpoint_dir(scenario, out, args.resume)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True,
                  disable=args.quiet or not console.is_interactive) as progress:  # else rich ends with a blank line
        bar = progress.add_task(f"{out.name}: rounds", total=scenario.coordinator.rounds)
        sim = run_scenario(scenario, checkpoints, on_round=lambda done: progress.update(bar, completed=done))
    summ = write_outputs(sim, out, figures=not args.no_figures, events=args.events)
    return summ, sim.record.evaluations


class _OutputError(Exception):
    """The output folder cannot be used: bad input, exit status 2."""


def _check_out(out: Path) -> Path | None:
    """``check_out_folder``: the topmost folder it made (None: ``out`` was there)."""
    try:
        return check_out_folder(out)
    except OutFolderError as exc:
        raise _OutputError(str(exc)) from None


@quiet_on_closed_pipe
def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.schema:
        if args.scenario is not None:
            parser.error("--schema takes no SCENARIO")
        from fleet.app.json_schema import schema_text

        print(schema_text())
        return 0
    if args.scenario is None:
        parser.error("the following arguments are required: scenario")
    try:
        if args.dry_run:
            return _dry_run(args)
        return _main(args)
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130


def _warn(source: str, variants) -> None:
    """Each distinct ``scenario_warnings`` line of the variants, once, on stderr."""
    from fleet.app.scenario import scenario_warnings

    warned = set()
    for _, scenario in variants:
        for warning in scenario_warnings(scenario):
            if warning not in warned:
                warned.add(warning)
                print(f"fleet.run: scenario warning: {source}: {warning}", file=sys.stderr)


def _main(args) -> int:
    from fleet.app.scenario import ScenarioError, echo, load_variants, pick_variant

    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    from rich.console import Console

    console = Console(stderr=True, quiet=args.quiet)
    if args.resume and args.out is None:
        print("fleet.run: --resume needs the --out folder of the run to continue", file=sys.stderr)
        return 2
    made = out = None  # the folder _check_out made: removed at the end if the run wrote nothing there
    try:
        variants = pick_variant(load_variants(args.scenario, overrides), args.variant, "--variant")
        if args.resume and all(s.mode != "learning" for _, s in variants):
            raise _OutputError(f"--resume continues a learning run from its checkpoints; {args.scenario} runs in "
                               "timing mode, which keeps none (run it again: the same seed gives the same run)")
        _warn(args.scenario, variants)
        if args.events == "parquet":
            from fleet.app.report import parquet_available

            if not parquet_available():
                raise _OutputError("--events parquet needs pyarrow: pip install 'fleet-sim[parquet]' (or pyarrow), "
                                   "or leave --events at auto or csv")
        base = Path(args.scenario).stem
        out = args.out or Path("runs") / f"{base}-{time.strftime('%Y%m%d-%H%M%S')}"
        made = _check_out(out)
        summaries, evaluations = [], {}
        for name, scenario in variants:
            run_out = out if len(variants) == 1 else out / name
            summ, evaluations[name] = _run_one(scenario, run_out, args, console)
            summaries.append((name, summ))
            if not args.quiet:
                from fleet.app.report import print_study

                print_study(Console(), summaries[-1][1], run_out)  # piped: Markdown tables, never wrapped
        if len(variants) > 1:
            from fleet.app.report import write_comparison

            text = write_comparison(summaries, out, None if args.no_figures else
                                    {k: v for k, v in evaluations.items() if v})
            if not args.quiet:
                from fleet.app.printing import markdown_items, write_items

                comparison = Console()
                if comparison.is_terminal:
                    write_items(comparison, markdown_items(text), markdown=False)
                else:  # piped: comparison.md as it is, one line a table row (rich would read its [..] as markup)
                    print(text)
    except ScenarioError as exc:
        print(f"fleet.run: scenario error: {exc}", file=sys.stderr)
        return 2
    except _OutputError as exc:
        print(f"fleet.run: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, a folder removed mid-run: the checkpoints so far stay
        where = str(exc.filename)[:300] if exc.filename is not None else f"into {str(out)[:300]}"
        print(f"fleet.run: cannot write {where}: {exc.strerror or echo(str(exc))}", file=sys.stderr)
        return 1
    except MemoryError:
        print("fleet.run: out of memory (fewer fleet.devices or a shorter run fits)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(INTERRUPTED + (RESUMABLE if out is not None and holds_checkpoints(out) else ""), file=sys.stderr)
        return 130
    except RuntimeError as exc:
        from fleet.learning.backends import BackendUnavailable  # loaded already when it was raised

        if not isinstance(exc, BackendUnavailable):
            raise
        first = (str(exc).splitlines() or [""])[0][:300]
        print(f"fleet.run: executor: {first}{RESUMABLE if holds_checkpoints(out) else ''}", file=sys.stderr)
        return 2
    finally:
        remove_if_empty(made)
    if args.quiet:
        print(out)
    return 0


def _dry_run(args) -> int:
    """``--dry-run``: validate, sample each variant's fleet and print its summary; nothing runs or is written."""
    from fleet.app.scenario import ScenarioError, load_variants, pick_variant

    overrides = list(args.overrides) + ([f"seed={args.seed}"] if args.seed is not None else [])
    try:
        variants = pick_variant(load_variants(args.scenario, overrides), args.variant, "--variant")
        _warn(args.scenario, variants)
        from rich.console import Console

        from fleet.app.dry_run import describe, describe_items, dry_run
        from fleet.app.printing import write_items

        console = Console()
        for name, scenario in variants:
            result, shown = dry_run(scenario), name if len(variants) > 1 else None
            if console.is_terminal:  # the table fitted to the terminal
                write_items(console, describe_items(result, shown), markdown=False)
            else:  # piped: columns aligned, one line a row
                print(describe(result, shown))
    except ScenarioError as exc:
        print(f"fleet.run: scenario error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
