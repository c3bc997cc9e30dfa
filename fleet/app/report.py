"""Write what a run leaves behind: summary.json, events.csv, rounds.csv, figures/, report.md.

Outputs are strict: JSON is written with ``allow_nan=False`` (a NaN or infinity is a bug and fails
loudly) and a CSV cell never holds ``nan`` or ``inf`` (an empty cell means "no value": not measured,
not finite, or the round unfinished; ``docs/study.md``)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Callable, Sequence, TextIO

from fleet.app.comparison import write_comparison
from fleet.app.figures import draw_figures
from fleet.app.out_folder import clear_outputs
from fleet.app.printing import Line, Table, count, seconds, share, write_items
from fleet.app.report_energy import energy_report_lines, energy_study_lines, write_energy_outputs
from fleet.app.simulation import Simulation
from fleet.app.study import DROPOUT_CAUSES, Study, analyse, summary

__all__ = ["EVENT_FORMATS", "PARQUET_ABOVE_EVENTS", "REPORT_SECTIONS", "STUDY_CLASS_COLUMNS", "STUDY_SECTIONS",
           "evaluations_csv", "events_format", "parquet_available", "print_study", "rounds_csv", "write_comparison",
           "write_events", "write_outputs"]

ROUND_COLUMNS = ("round", "status", "start_s", "end_s", "round_time_s", "selected", "accepted",
                 "aggregated", "model_version", "mean_staleness",
                 *(f"dropouts_{c}" for c in DROPOUT_CAUSES), "accuracy", "loss")
#: The printed study's table: one row per device class.
STUDY_CLASS_COLUMNS = ("class", "devices", "tasks", "accepted", "dropouts", "discarded", "in flight", "p50", "p90",
                       "p99", "tail cause")
EVALUATION_COLUMNS = ("time_s", "model_version", "accuracy", "loss", "client_flops", "bytes_up",
                      "bytes_down")


def cell(value: float | None) -> str:
    """A float CSV cell: ``repr`` (exact), or empty for None, NaN and infinities."""
    return "" if value is None or not math.isfinite(value) else repr(value)


def write_rounds(sim: Simulation, study: Study, path: Path) -> None:
    """``rounds.csv``: ``rounds_csv`` into ``path``."""
    with path.open("w", newline="") as f:
        rounds_csv(sim, study, f)


def rounds_csv(sim: Simulation, study: Study, f: TextIO) -> None:
    """One row per round (or aggregation), then the round open when the run stopped (``status``
    ``unfinished``: ``end_s`` and ``round_time_s`` empty), as CSV into the text stream ``f``. ``accuracy`` and
    ``loss`` of the model the row ends with are empty in timing mode, when the version was not evaluated, or
    when not finite."""
    metrics = sim.record.metrics_by_version
    rows = list(sim.coordinator.rounds)
    if sim.coordinator.unfinished_round is not None:
        rows.append(sim.coordinator.unfinished_round)
    w = csv.writer(f)
    w.writerow(ROUND_COLUMNS)
    for r in rows:
        m = metrics.get(r.model_version, {})
        w.writerow([r.round_index, r.status, repr(r.start_s), cell(r.end_s),
                    "" if r.end_s is None else repr(r.end_s - r.start_s),
                    r.selected, r.accepted, int(r.aggregated), r.model_version,
                    repr(r.mean_staleness),
                    *(study.dropouts_by_round.get(r.round_index, {}).get(c, 0)
                      for c in DROPOUT_CAUSES),
                    cell(m.get("accuracy")), cell(m.get("loss"))])


def write_evaluations(sim: Simulation, path: Path) -> None:
    """``evaluations.csv``: ``evaluations_csv`` into ``path``."""
    with path.open("w", newline="") as f:
        evaluations_csv(sim, f)


def evaluations_csv(sim: Simulation, f: TextIO) -> None:
    """The global model on the test set at each evaluation time, with the work spent until then, as CSV into
    the text stream ``f``."""
    w = csv.writer(f)
    w.writerow(EVALUATION_COLUMNS)
    for e in sim.record.evaluations:
        w.writerow([repr(e.time_s), e.model_version, cell(e.accuracy), cell(e.loss), e.client_flops,
                    e.bytes_up, e.bytes_down])


STOP_REASONS = {
    "completed": "every round ran",
    "max_sim_time": "stopped at max_sim_time_s",
    "no_eligible_devices": "no update could ever arrive: every device refused the task for a reason "
                           "that cannot pass (see the dropouts)",
    "no_progress": "nothing was aggregated for coordinator.max_idle_s",
}


def rounds_story(summ: dict) -> str:
    """One sentence: how many rounds aggregated and why the others did not (printed and in report.md)."""
    sync = summ["coordinator"] == "sync"
    rounds, done, needed = summ["rounds"], summ["rounds_aggregated"], summ["updates_needed"]
    parts = [f"{done} of {count(rounds, 'round')} aggregated" if sync else count(done, "aggregation")]
    if summ["rounds_failed"]:
        parts.append(f"{summ['rounds_failed']} failed with fewer than the {count(needed, 'update')} needed "
                     f"(at most {summ['most_updates_in_a_failed_round']})")
    if summ["empty_rounds"]:
        parts.append(f"{summ['empty_rounds']} selected nobody (every device busy or hopeless)")
    if summ["rounds_unfinished"]:
        what = "a round" if sync else f"a buffer of {needed}"
        parts.append(f"{what} was unfinished when the run stopped ({count(summ['unfinished_round_updates'], 'update')}"
                     " in it)")
    text = "; ".join(parts)
    if done == 0:
        text += ": the model never changed"
    return f"{text} ({summ['stopped_by']}: {STOP_REASONS.get(summ['stopped_by'], summ['stopped_by'])})"


def _accounting(summ: dict) -> str:
    return (f"{count(summ['client_tasks'], 'task')} = {summ['updates_accepted']} accepted + "
            f"{count(sum(summ['dropouts'].values()), 'dropout')} + {sum(summ['discarded'].values())} discarded ("
            + ", ".join(f"{c} {k}" for c, k in summ["discarded"].items())
            + f") + {summ['in_flight_at_end']} in flight at the end")


def _md_headline(summ: dict) -> list[str]:
    return [f"# Run of `{summ['scenario']}` (seed {summ['seed']})", "",
            f"{count(summ['devices'], 'device')}, {summ['coordinator']} coordination, algorithm "
            f"`{summ['algorithm']}` ({summ['mode']} mode); {count(summ['rounds'], 'round')} in "
            f"{seconds(summ['sim_time_s'])} s of virtual time ({summ['stopped_by']}).", ""]


def _md_facts(summ: dict) -> list[str]:
    return [f"- rounds: {rounds_story(summ)}",
            f"- client tasks dispatched: {summ['client_tasks']}; updates accepted: "
            f"{summ['updates_accepted']}; devices that took part: {summ['participants']} "
            f"({share(summ['participation_rate'])})",
            f"- outcomes: {_accounting(summ)}",
            "- dropouts: " + ", ".join(f"{c} {k}" for c, k in summ["dropouts"].items()),
            "- round time (s): " + ", ".join(f"{q} {seconds(v)}" if v is not None else f"{q} n/a"
                                              for q, v in summ["round_time_s"].items()),
            f"- client FLOPs spent: {summ['client_flops']:.3g}; bytes up {summ['bytes_up']:,}, "
            f"down {summ['bytes_down']:,}",
            *([f"- test accuracy: final {summ['final_accuracy']:.4f}, best {summ['best_accuracy']:.4f}; "
               f"time to {summ['target_accuracy']:.0%}: "
               + ("not reached" if summ["time_to_target_s"] is None
                  else f"{seconds(summ['time_to_target_s'])} s virtual")]
              if summ["final_accuracy"] is not None else []),
            *([f"- the model {summ['diverged']}; non-finite metrics are null"]
              if summ.get("diverged") else []),
            f"- event log SHA-256: `{summ['event_log_sha256']}`", ""]


def _md_classes(summ: dict) -> list[str]:
    lines = ["| class | devices | tasks | accepted | dropouts | discarded | in flight | p50 s | p90 s | tail cause |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for cls, row in summ["by_class"].items():
        comp = row["completion_s"]
        fmt = lambda v: "n/a" if v is None else seconds(v)  # noqa: E731
        lines.append(f"| {cls} | {row['devices']} | {row['client_tasks']} | "
                     f"{row['updates_accepted']} | "
                     + (", ".join(f"{c} {k}" for c, k in row["dropouts"].items()) or "-")
                     + " | " + (", ".join(f"{c} {k}" for c, k in row["discarded"].items() if k) or "-")
                     + f" | {row['in_flight_at_end']} | {fmt(comp['p50'])} | {fmt(comp['p90'])} | "
                     + (", ".join(f"{c} {k}" for c, k in row["tail_cause"].items()) or "-")
                     + " |")
    return [*lines, ""]


#: The sections of report.md before its figures, in order: each turns the summary into Markdown lines (a new
#: section: one function appended here).
REPORT_SECTIONS: list[Callable[[dict], list[str]]] = [_md_headline, _md_facts, _md_classes, energy_report_lines]


def _report_md(summ: dict, figures: list[tuple[str, str]]) -> str:
    lines = [line for section in REPORT_SECTIONS for line in section(summ)]
    for name, title in figures:
        lines += [f"## {title}", "", f"![{title}](figures/{name})", ""]
    return "\n".join(lines)


#: ``events="auto"`` writes Parquet above this many events (when pyarrow is installed), CSV up to it.
PARQUET_ABOVE_EVENTS = 1_000_000
EVENT_FORMATS = ("auto", "csv", "parquet")


def parquet_available() -> bool:
    """Whether pyarrow, which writes Parquet, is installed (the ``parquet`` extra)."""
    import importlib.util

    return importlib.util.find_spec("pyarrow") is not None


def events_format(sim: Simulation, events: str) -> str:
    """``csv`` or ``parquet``: what ``events`` (one of ``EVENT_FORMATS``) means for ``sim``'s log."""
    if events not in EVENT_FORMATS:
        raise ValueError(f"events must be one of {', '.join(EVENT_FORMATS)}, got {events!r}")
    if events == "auto":
        large = len(sim.kernel.recorder.rows) > PARQUET_ABOVE_EVENTS
        return "parquet" if large and parquet_available() else "csv"
    return events


def write_events(sim: Simulation, out: Path, events: str = "auto") -> str:
    """Write the event log as ``out/events.csv`` or ``out/events.parquet`` (``events_format``); return the
    SHA-256 of its CSV text, whichever was written (``event_log_sha256``). Raises
    ``fleet.core.recorder.ParquetUnavailable`` when Parquet is asked for without pyarrow."""
    recorder = sim.kernel.recorder
    if events_format(sim, events) == "parquet":
        recorder.write_parquet(out / "events.parquet")
        return recorder.sha256()
    with (out / "events.csv").open("w", newline="") as f:
        return recorder.write_csv(f)


#: What a run writes that another run into the same folder might not (another events format, no evaluations,
#: no figures): removed before a run writes, so a folder never mixes two runs' files. summary.json is written
#: last, so a folder without it holds no finished run.
RUN_OUTPUTS = ("summary.json", "events.csv", "events.parquet", "evaluations.csv", "figures/*.png")


def write_outputs(sim: Simulation, out: Path, figures: bool = True, events: str = "auto") -> dict:
    """Write every output of ``sim`` under ``out``; return the summary. ``events``: the event log's format,
    ``auto`` (CSV up to ``PARQUET_ABOVE_EVENTS`` events, Parquet above when pyarrow is installed), ``csv``
    or ``parquet``."""
    out.mkdir(parents=True, exist_ok=True)
    clear_outputs(out, RUN_OUTPUTS)
    digest = write_events(sim, out, events)
    study = analyse(sim)
    summ = summary(sim, study, digest)
    write_rounds(sim, study, out / "rounds.csv")
    if sim.record.evaluations:  # a run that learned: evaluated at least at its start and end
        write_evaluations(sim, out / "evaluations.csv")
    made = draw_figures(sim, study, out / "figures") if figures else []
    made += write_energy_outputs(sim, study, out / "figures", figures)
    (out / "report.md").write_text(_report_md(summ, made))
    (out / "summary.json").write_text(json.dumps(summ, indent=2, allow_nan=False) + "\n")
    return summ


def _study_headline(summ: dict) -> list[Line]:
    times = summ["round_time_s"]
    return [Line(f"{summ['scenario']}: {count(summ['devices'], 'device')}, {count(summ['rounds'], 'round')}, "
                 f"{seconds(summ['sim_time_s'])} s virtual in {seconds(summ['wall_s'])} s wall ({summ['stopped_by']})",
                 "bold"),
            Line(f"rounds: {rounds_story(summ)}"),
            Line(f"tasks {summ['client_tasks']}, accepted {summ['updates_accepted']}, participation "
                 f"{share(summ['participation_rate'])} of devices; round time "
                 + (", ".join(f"{q} {seconds(v)} s" for q, v in times.items()) if times["p50"] is not None
                    else "n/a (no round ended with anyone selected)")),
            Line(f"outcomes: {_accounting(summ)}"),
            Line("dropouts: " + ", ".join(f"{c} {k}" for c, k in summ["dropouts"].items()))]


def _study_classes(summ: dict) -> list[Table]:
    fmt = lambda v: "-" if v is None else seconds(v)  # noqa: E731
    rows = []
    for cls, row in summ["by_class"].items():
        comp = row["completion_s"]
        rows.append((cls, str(row["devices"]), str(row["client_tasks"]), str(row["updates_accepted"]),
                     " ".join(f"{c}:{k}" for c, k in row["dropouts"].items()) or "-",
                     " ".join(f"{c}:{k}" for c, k in row["discarded"].items() if k) or "-",
                     str(row["in_flight_at_end"]), fmt(comp["p50"]), fmt(comp["p90"]), fmt(comp["p99"]),
                     " ".join(f"{c}:{k}" for c, k in row["tail_cause"].items()) or "-"))
    return [Table("by device class (completion s; tail = tasks above overall p90)", STUDY_CLASS_COLUMNS,
                  tuple(rows))]


def _study_outcome(summ: dict) -> list[Line]:
    lines = [Line(f"client FLOPs {summ['client_flops']:.3g}, bytes up {summ['bytes_up']:,}, "
                  f"down {summ['bytes_down']:,}")]
    if summ.get("final_accuracy") is not None:
        ttt = summ["time_to_target_s"]
        lines.append(Line(f"test accuracy final {summ['final_accuracy']:.4f} (best {summ['best_accuracy']:.4f}); "
                          f"time to {summ['target_accuracy']:.0%}: "
                          + ("not reached" if ttt is None else f"{seconds(ttt)} s virtual")))
    if summ.get("diverged"):
        lines.append(Line(f"the model {summ['diverged']}; non-finite metrics are null in summary.json", "bold red"))
    return lines


def _study_log(summ: dict) -> list[Line]:
    return [Line(f"event log sha256 {summ['event_log_sha256']}")]


#: The printed study's sections, in order: each turns the summary into lines (``Line`` or plain ``str``) and
#: tables (a new section: one function inserted here, before the event log's line).
STUDY_SECTIONS: list[Callable[[dict], Sequence[Line | Table | str]]] = [_study_headline, _study_classes,
                                                                         _study_outcome, energy_study_lines,
                                                                         _study_log]


def print_study(console, summ: dict, out: Path, markdown: bool | None = None) -> None:
    """Print the study of one run (the CLI's view of ``summary.json``) to a rich ``console``: rich tables in a
    terminal; where the console is not a terminal (output piped or written to a file), plain text and Markdown
    tables, one line per row whatever the width. ``markdown`` overrides that choice."""
    if markdown is None:
        markdown = not console.is_terminal
    items = [item for section in STUDY_SECTIONS for item in section(summ)]
    items.append(Line(f"outputs in {out}"))
    write_items(console, items, markdown)
