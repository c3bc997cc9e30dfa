"""The command line: ``python -m fleet.sweep SCENARIO --seeds 0-9 [--grid key=v1,v2 ...] [--out DIR]
[--backend local|ray] [--jobs N] [--no-figures]``.

Whole runs over seeds and the ``--grid`` product of settings, as parallel jobs: each is exactly the command
``python -m fleet.run SCENARIO --seed S --set k=v ... --out DIR/<setting>/s<S> --quiet``, listed in
``DIR/manifest.json`` so it can be made again alone. Runs whose summaries are complete are skipped, so the same
command finishes a killed sweep. Then ``sweep.md``, ``sweep.csv`` and ``sweep.png`` aggregate the study's
figures over the seeds (``fleet.app.sweep_report``; ``docs/sweep.md``).

Exit status: 0 when every run finished; 1 when a run failed (reported with its stderr tail after the others
finished, and the report of those written) or a write failed; 2 for bad input (``--seeds``, ``--grid``, the
scenario with any setting, ``--out``, a missing Ray), one line on stderr and nothing run; 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from fleet.app.pipes import quiet_on_closed_pipe
from fleet.app.sweep_plan import (
    MAX_RUNS,
    PlanError,
    Run,
    expand_grid,
    parse_grid,
    parse_seeds,
    plan_runs,
    run_summaries,
)

__all__ = ["main"]

PROG = "fleet.sweep"
INTERRUPTED = f"{PROG}: interrupted; run the same command again to finish the rest"


class _InputError(Exception):
    """Bad input found before anything runs: one line, exit status 2."""


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fleet.sweep", description=(
        "Run a scenario over seeds and a grid of settings as parallel whole runs, and aggregate the study."))
    p.add_argument("scenario", help="scenario YAML file (see scenarios/)")
    p.add_argument("--seeds", required=True, help="seeds to run: 0-9, 3, 1,4,7 or 0-4,10-12")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="values of one scenario key, as fleet.run's --set (repeatable: the cartesian product)")
    p.add_argument("--out", type=Path, help="sweep folder (default runs/sweep-<scenario>-<timestamp>); "
                                            "run the same command on it again to finish a killed sweep")
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local: a pool of processes here; ray: Ray tasks on a cluster (pip install '.[ray]')")
    p.add_argument("--jobs", type=_positive, help="runs at once (default: local, the CPUs here; ray, no limit)")
    p.add_argument("--no-figures", action="store_true", help="runs skip their PNG figures; no sweep.png")
    return p


@quiet_on_closed_pipe
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _main(args)
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130


def _validate(path: str, settings, seeds: list[int]) -> dict[str, list[str]]:
    """Every setting's variant names; each setting's scenario (and the seed bounds) checked in full first."""
    from fleet.app.scenario import ScenarioError, load_variants, scenario_warnings

    names, warned = {}, set()
    for i, setting in enumerate(settings):
        where = f" (--grid setting {setting.name})" if setting.values else ""
        try:
            if i == 0 and len(seeds) > 1:
                load_variants(path, [*setting.overrides, f"seed={max(seeds)}"])
            variants = load_variants(path, [*setting.overrides, f"seed={min(seeds)}"])
        except ScenarioError as exc:
            raise _InputError(f"scenario error: {exc}{where}") from None
        for _, scenario in variants:
            for warning in scenario_warnings(scenario):
                if warning not in warned:
                    warned.add(warning)
                    print(f"{PROG}: scenario warning: {path}: {warning}{where}", file=sys.stderr)
        names[setting.name] = [name for name, _ in variants]
    return names


def _check_out(out: Path) -> None:
    from fleet.app.out_folder import OutFolderError, check_out_folder

    try:
        check_out_folder(out)
    except OutFolderError as exc:
        raise _InputError(str(exc)) from None


def _pool(args):
    from fleet.app.sweep_backends import LocalPool, RayMissing, RayPool

    if args.backend == "ray":
        try:
            return RayPool(args.jobs), args.jobs or "unlimited"
        except RayMissing as exc:
            raise _InputError(str(exc)) from None
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    jobs = args.jobs or cpus
    return LocalPool(jobs), jobs


def _write_manifest(out: Path, args, seeds, grid, variants, runs: list[Run], status: dict) -> None:
    doc = {"scenario": args.scenario, "cwd": os.getcwd(), "python": sys.executable, "seeds": seeds,
           "grid": {key: values for key, values in grid}, "backend": args.backend,
           "runs": [{"setting": r.setting.name, "seed": r.seed, "overrides": r.setting.overrides, "out": str(r.out),
                     "variants": variants[r.setting.name], "command": r.command, **status.get(r, {"status": "pending"})}
                    for r in runs]}
    path = out / "manifest.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
    tmp.replace(path)


class _Progress:
    """A rich bar over runs when stdout is a terminal, else one plain line per finished run."""

    def __init__(self, total: int):
        self.total, self.done, self.bar = total, 0, None
        if sys.stdout.isatty() and total:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), TimeRemainingColumn())
            self.task = self.bar.add_task("runs", total=total)

    def __enter__(self):
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()

    def advance(self, run: Run, rc: int, wall_s: float) -> None:
        self.done += 1
        what = f"done in {wall_s:.1f} s" if rc == 0 else f"FAILED (exit {rc}) after {wall_s:.1f} s"
        if self.bar is None:
            print(f"{PROG}: [{self.done}/{self.total}] {run.label}: {what}", flush=True)
            return
        self.bar.update(self.task, advance=1, description=f"runs (last: {run.label})")
        if rc != 0:
            self.bar.console.print(f"{run.label}: {what}", markup=False, highlight=False)


def _main(args) -> int:
    try:
        seeds = parse_seeds(args.seeds)
        grid = parse_grid(args.grid)
        settings = expand_grid(grid)
        if len(settings) * len(seeds) > MAX_RUNS:
            raise PlanError(f"{len(settings)} settings × {len(seeds)} seeds is more than {MAX_RUNS:,} runs")
        variants = _validate(args.scenario, settings, seeds)
        out = args.out or Path("runs") / f"sweep-{Path(args.scenario).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        pool, jobs = _pool(args)
        _check_out(out)
    except (PlanError, _InputError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    runs = plan_runs(args.scenario, settings, seeds, out, figures=not args.no_figures)
    results = {r: s for r in runs if (s := run_summaries(r, variants[r.setting.name])) is not None}
    status = {r: {"status": "skipped", "note": "finished before this sweep"} for r in results}
    # seed by seed across the settings: a sweep stopped early has some seeds of every setting
    seed_rank = {seed: i for i, seed in enumerate(seeds)}
    order = {run: (seed_rank[run.seed], i) for i, run in enumerate(runs)}
    pending = sorted((r for r in runs if r not in results), key=order.__getitem__)
    print(f"{PROG}: {len(runs)} runs ({len(settings)} setting{'s' * (len(settings) > 1)} × {len(seeds)} seeds) "
          f"in {out}: {len(results)} already finished, {len(pending)} to run ({args.backend}, jobs {jobs})", flush=True)
    failures: list[tuple[Run, int, str]] = []
    try:
        _write_manifest(out, args, seeds, grid, variants, runs, status)
        with _Progress(len(pending)) as progress:
            for run, outcome in pool.run(((r, r.argv) for r in pending), os.getcwd()):
                summaries = run_summaries(run, variants[run.setting.name]) if outcome.returncode == 0 else None
                rc, err = outcome.returncode, outcome.stderr_tail
                if summaries is None and rc == 0:
                    rc, err = 1, "exited 0 but left no complete summary.json"
                if summaries is not None:
                    results[run] = summaries
                    status[run] = {"status": "finished", "wall_s": round(outcome.wall_s, 3)}
                else:
                    failures.append((run, rc, err))
                    status[run] = {"status": "failed", "returncode": rc, "wall_s": round(outcome.wall_s, 3),
                                   "stderr_tail": err}
                progress.advance(run, rc, outcome.wall_s)
        _write_manifest(out, args, seeds, grid, variants, runs, status)
        _report(args, out, grid, settings, seeds, variants, runs, results, failures)
    except OSError as exc:
        where = exc.filename if exc.filename is not None else out
        print(f"{PROG}: cannot write {where}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        try:
            _write_manifest(out, args, seeds, grid, variants, runs, status)
        except OSError:
            pass
        raise
    for run, rc, err in failures:
        print(f"{PROG}: run {run.label} failed (exit {rc}): {run.command}", file=sys.stderr)
        for line in err.splitlines():
            print(f"    {line}", file=sys.stderr)
    print(f"{PROG}: {len(results)} of {len(runs)} runs finished, {len(failures)} failed; "
          f"report in {out / 'sweep.md'}", flush=True)
    return 1 if failures else 0


def _report(args, out, grid, settings, seeds, variants, runs, results, failures) -> None:
    from fleet.app.sweep_report import write_report

    groups: dict = {(s, v): [] for s in settings for v in variants[s.name]}
    for run in runs:
        for variant, summary in results.get(run, {}).items():
            groups[(run.setting, variant)].append(summary)
    intro = [f"{len(settings)} setting{'s' * (len(settings) > 1)} × {len(seeds)} seeds ({args.seeds}) = "
             f"{len(runs)} runs: {len(results)} finished, {len(failures)} failed"
             + (" (" + ", ".join(r.label for r, _, _ in failures) + ")" if failures else "") + ".",
             "Grid: " + ("; ".join(f"`{k}` = {', '.join(v)}" for k, v in grid) if grid else "none") + ".",
             "Each run is the `python -m fleet.run` command in `manifest.json`, into `<setting>/s<seed>/`; "
             "every run can be made again alone with it."]
    write_report(groups, [k for k, _ in grid], out, f"Sweep of `{args.scenario}`", intro, figure=not args.no_figures)


if __name__ == "__main__":
    sys.exit(main())
