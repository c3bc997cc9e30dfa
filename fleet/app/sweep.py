"""The command line: ``python -m fleet.sweep SCENARIO --seeds 0-9 [--grid key=v1,v2 ...] [--out DIR]
[--backend local|ray] [--jobs N] [--no-figures]``.

Whole runs over seeds and the ``--grid`` product of settings, as parallel jobs: each is exactly the command
``PYTHON -m fleet.run SCENARIO --seed S --set k=v ... --out DIR/<setting>/s<S> --quiet``, listed in
``DIR/manifest.json`` so it can be made again alone. Runs whose summaries are complete are skipped, so the same
command finishes a killed sweep, and the runs of earlier sweeps into the same folder stay in the manifest. Then
``sweep.md``, ``sweep.csv`` and ``sweep.png`` aggregate the study's figures over the seeds, those runs' too
(``fleet.app.sweep_report``; ``docs/sweep.md``).

Exit status: 0 when every run finished; 1 when a run failed (reported with its stderr tail after the others
finished, and the report of those written) or a write failed; 2 for bad input (``--seeds``, ``--grid``, the
scenario with any setting and its trace files, ``--out``, an ``--out`` that holds another scenario's or another
grid's sweep, a missing Ray or a Ray cluster that does not answer), one line on stderr and nothing run; 130 on
Ctrl-C. The manifest written on the way out (the end, a failure, Ctrl-C) marks finished every run whose outcome
was not reported but whose folder holds its complete summary.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from fleet.app.out_folder import out_path
from fleet.app.pipes import quiet_on_closed_pipe
from fleet.app.printing import count
from fleet.app.sweep_checks import PROG, InputError, check_out, check_ray, scenario_hashes, validate
from fleet.app.sweep_plan import (
    MAX_RUNS,
    PlanError,
    Run,
    argv_to_run,
    check_reuse,
    expand_grid,
    parse_grid,
    parse_seeds,
    plan_runs,
    recorded_runs,
    run_summaries,
)

__all__ = ["main"]

INTERRUPTED = f"{PROG}: interrupted; run the same command again to finish the rest"


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
    p.add_argument("--out", type=out_path, help="sweep folder (default runs/sweep-<scenario>-<timestamp>); "
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


def _pool(args):
    from fleet.app.sweep_backends import LocalPool, RayMissing, RayPool

    if args.backend == "ray":
        try:
            return RayPool(args.jobs), args.jobs or "unlimited"
        except RayMissing as exc:
            raise InputError(str(exc)) from None
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpucount() or 1
    jobs = args.jobs or cpus
    return LocalPool(jobs), jobs


def _write_manifest(out: Path, args, seeds, grid, variants, runs: list[Run], status: dict,
                    earlier: list[tuple[Run, dict]]) -> None:
    """``manifest.json``: this sweep (``seeds``, ``grid``) and its runs, then the runs of earlier sweeps into
    ``out`` that it did not make (``earlier``, their records ``_refreshed``)."""
    doc = {"scenario": args.scenario, **args.hashes, "cwd": os.getcwd(),
           "python": sys.executable, "seeds": seeds,
           "grid": {key: values for key, values in grid}, "backend": args.backend,
           "runs": [*({"setting": r.setting.name, "seed": r.seed, "overrides": r.setting.overrides, "out": str(r.out),
                       "variants": variants[r.setting.name], "command": r.command,
                       **status.get(r, {"status": "pending"})} for r in runs),
                    *(record for _, record in earlier)]}
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
            raise PlanError(f"{count(len(settings), 'setting')} × {count(len(seeds), 'seed')} is more than "
                            f"{MAX_RUNS:,} runs")
        variants, clusters = validate(args.scenario, settings, seeds)
        args.hashes = scenario_hashes(args.scenario)
        out = args.out or Path("runs") / f"sweep-{Path(args.scenario).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        doc = check_reuse(out, args.scenario, args.hashes, settings) if out.is_dir() else None
        check_ray(args.scenario, clusters, args.backend)
        pool, jobs = _pool(args)
        check_out(out)
    except (PlanError, InputError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    runs = plan_runs(args.scenario, settings, seeds, out, figures=not args.no_figures)
    earlier = recorded_runs(doc, out, runs)
    earlier_results = {run: s for run, record in earlier if (s := run_summaries(run, record["variants"])) is not None}
    earlier = [(run, _refreshed(record, run in earlier_results)) for run, record in earlier]
    results = {r: s for r in runs if (s := run_summaries(r, variants[r.setting.name])) is not None}
    status = {r: {"status": "skipped", "note": "finished before this sweep"} for r in results}
    # seed by seed across the settings: a sweep stopped early has some seeds of every setting
    seed_rank = {seed: i for i, seed in enumerate(seeds)}
    order = {run: (seed_rank[run.seed], i) for i, run in enumerate(runs)}
    pending = sorted((r for r in runs if r not in results), key=order.__getitem__)
    print(f"{PROG}: {count(len(runs), 'run')} ({count(len(settings), 'setting')} × {count(len(seeds), 'seed')}) "
          f"in {out}: {len(results)} already finished, {len(pending)} to run ({args.backend}, jobs {jobs})", flush=True)
    failures: list[tuple[Run, int, str]] = []

    def manifest() -> None:
        _write_manifest(out, args, seeds, grid, variants, runs, status, earlier)

    try:
        try:
            manifest()
            with _Progress(len(pending)) as progress:
                for run, outcome in pool.run(((r, argv_to_run(r)) for r in pending), os.getcwd()):
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
        finally:
            _settle(runs, variants, results, status)
        manifest()
        _report(args, out, grid, settings, seeds, variants, runs, results, failures, earlier, earlier_results)
    except OSError as exc:
        _quietly(manifest)
        where = exc.filename if exc.filename is not None else out
        print(f"{PROG}: cannot write {where}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except BaseException:  # Ctrl-C, or anything unforeseen: the manifest says what is done, then it goes on up
        _quietly(manifest)
        raise
    for run, rc, err in failures:
        print(f"{PROG}: run {run.label} failed (exit {rc}): {run.command}", file=sys.stderr)
        for line in err.splitlines():
            print(f"    {line}", file=sys.stderr)
    print(f"{PROG}: {len(results)} of {count(len(runs), 'run')} finished, {len(failures)} failed; "
          f"report in {out / 'sweep.md'}", flush=True)
    return 1 if failures else 0


def _refreshed(record: dict, complete: bool) -> dict:
    """An earlier sweep's ``record`` of a run, marked finished when it was not and its folder now holds its
    complete summaries (``complete``: the run was made again, or finished after that sweep stopped), as the
    report counts it."""
    if record.get("status") == "finished" or not complete:
        return record
    return {**record, "status": "finished", "note": "found complete by a later sweep into this folder"}


def _settle(runs: list[Run], variants, results: dict, status: dict) -> None:
    """On the way out: a run whose outcome was never reported (the sweep stopped, or the pool failed, while it
    ran or just after it wrote its summary) is finished when its folder says so (``run_summaries``)."""
    for run in runs:
        if run in status:  # skipped, finished or failed: its outcome is known
            continue
        summaries = run_summaries(run, variants[run.setting.name])
        if summaries is not None:
            results[run] = summaries
            status[run] = {"status": "finished", "note": "found complete on the way out (its outcome was not "
                                                         "reported before the sweep stopped)"}


def _quietly(write) -> None:
    """``write()``, ignoring ``OSError`` (a manifest written on the way out of another error)."""
    try:
        write()
    except OSError:
        pass


def _report(args, out, grid, settings, seeds, variants, runs, results, failures, earlier, earlier_results) -> None:
    """``sweep.md``, ``sweep.csv`` and ``sweep.png`` over this sweep's finished runs and those of earlier sweeps
    into ``out`` (``earlier``) whose folders hold complete summaries (``earlier_results``)."""
    from fleet.app.sweep_report import write_report

    names = {s.name: variants[s.name] for s in settings}
    finished = [(run, summaries) for run in runs if (summaries := results.get(run)) is not None]
    for run, record in earlier:
        names.setdefault(run.setting.name, record["variants"])
        if run in earlier_results:
            finished.append((run, earlier_results[run]))
    all_settings = list(dict.fromkeys([*settings, *(run.setting for run, _ in earlier)]))
    groups: dict = {(s, v): [] for s in all_settings for v in names[s.name]}
    for run, summaries in finished:
        for variant, summary in summaries.items():
            groups.setdefault((run.setting, variant), []).append(summary)
    keys = list(dict.fromkeys([*(k for k, _ in grid), *(k for s in all_settings for k, _ in s.values)]))
    write_report(groups, keys, out, f"Sweep of `{args.scenario}`",
                 _intro(args, grid, settings, seeds, runs, results, failures, earlier, len(finished) - len(results)),
                 figure=not args.no_figures, show_variant=any(len(v) > 1 for v in names.values()))


def _intro(args, grid, settings, seeds, runs, results, failures, earlier, earlier_finished: int) -> list[str]:
    """The report's first lines: this sweep's runs and failures (where their errors are), its grid, and the
    earlier sweeps' runs reported with them."""
    lines = [f"{count(len(settings), 'setting')} × {count(len(seeds), 'seed')} ({args.seeds}) = "
             f"{count(len(runs), 'run')}: {len(results)} finished, {len(failures)} failed"
             + (" (" + ", ".join(r.label for r, _, _ in failures) + ")" if failures else "") + "."]
    if failures:
        lines[0] += (" Each failed run's command, exit status and last lines of stderr are in `manifest.json` "
                     "(`command`, `returncode`, `stderr_tail`); the sweep printed them too.")
    lines.append("Grid: " + ("; ".join(f"`{k}` = {', '.join(v)}" for k, v in grid) if grid else "none") + ".")
    if earlier:
        names = list(dict.fromkeys(run.setting.name for run, _ in earlier))
        shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        lines.append(f"Also reported: {count(len(earlier), 'run')} of earlier sweeps into this folder "
                     f"({shown}), {earlier_finished} of them finished; `manifest.json` lists them as "
                     "they were recorded.")
    lines.append("Each run is the `fleet.run` command line in `manifest.json`, into `<setting>/s<seed>/`; "
                 "every run can be made again alone with it.")
    return lines


if __name__ == "__main__":
    sys.exit(main())
