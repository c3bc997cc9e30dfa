"""The comparison of a scenario's variants: ``comparison.md``, ``comparison.json``, ``comparison_classes.csv``,
``comparison_energy.csv`` (joules per accuracy point, ``fleet.app.report_energy``) and, in learning mode, the
figures ``comparison.png``, ``comparison_timeline.png`` and ``comparison_costs.png``.

It reads only the variants' summaries (``fleet.app.study.summary``, with its ``timeline``) and evaluations, so
any number of variants of any algorithm compare alike. Outputs are strict: no NaN or infinity in the JSON
(written with ``allow_nan=False``), an empty CSV cell for "no value".
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from fleet.app.out_folder import clear_outputs
from fleet.app.printing import count, share

__all__ = ["CLASS_COLUMNS", "class_rows", "fmt_bytes", "markdown_rows", "write_comparison"]

COMPARED = (("rounds", "rounds"), ("rounds_aggregated", "aggregated"), ("stopped_by", "stopped by"),
            ("sim_time_s", "virtual s"), ("client_tasks", "tasks"),
            ("updates_accepted", "accepted"), ("participation_rate", "participation"))
#: ``comparison_classes.csv``: one row per variant and device class.
CLASS_COLUMNS = ("variant", "algorithm", "device_class", "devices", "memory_eligible", "participants",
                 "updates_accepted", "memory_dropouts", "rejoined_after_memory_refusal", "free_bytes_p50",
                 "peak_demand_bytes", "peak_fits_p50", "energy_j")


def fmt(v) -> str:
    """A table cell: 3 significant digits, ``n/a`` for None."""
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.3e}"
    if isinstance(v, int) and abs(v) >= 10**6:
        return f"{v:.3e}"
    return str(v)


def fmt_bytes(v: int | float | None) -> str:
    """Bytes with an SI prefix (1 kB = 1000 B), 3 significant digits; ``n/a`` for None."""
    if v is None:
        return "n/a"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:.3g} {unit}"
    return f"{v:g} B"


def markdown_rows(head: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table's lines: the header, the rule, one line per row (cells as given)."""
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]


def _timing_rows(summaries: list[tuple[str, dict]]) -> list[str]:
    head = ["variant", *(label for _, label in COMPARED), "accepted per virtual hour",
            "round p50 s", "round p90 s", "round p99 s", "dropouts"]
    rows = []
    for name, s in summaries:
        per_hour = s["updates_accepted"] / s["sim_time_s"] * 3600 if s["sim_time_s"] else None
        rows.append([name, *(share(s[key]) if key == "participation_rate" else fmt(s[key]) for key, _ in COMPARED),
                     fmt(per_hour),
                     *(fmt(s["round_time_s"][q]) for q in ("p50", "p90", "p99")),
                     ", ".join(f"{c} {k}" for c, k in s["dropouts"].items() if k) or "-"])
    return markdown_rows(head, rows)


def _peak_train(s: dict) -> int | None:
    return s["demand"].get("train", {}).get("peak_memory_bytes")


def _learning_rows(summaries: list[tuple[str, dict]]) -> list[str]:
    """Accuracy and what it cost, one row per variant."""
    head = ["variant", "algorithm", "final accuracy", "best accuracy", "time to target s", "devices took part",
            "devices whose memory fits", "client FLOPs", "bytes up", "bytes down", "energy J", "train peak"]
    rows = [[name, s["algorithm"], fmt(s["final_accuracy"]), fmt(s["best_accuracy"]),
             fmt(s["time_to_target_s"]) if s["time_to_target_s"] is not None else "not reached",
             f"{s['participants']} of {s['devices']}", str(s["memory_eligible"]), fmt(s["client_flops"]),
             fmt_bytes(s["bytes_up"]), fmt_bytes(s["bytes_down"]), fmt(s.get("energy_j")),
             fmt_bytes(_peak_train(s))] for name, s in summaries]
    target = summaries[0][1]["target_accuracy"]
    return ["## Accuracy and cost", "",
            f"Time to target is the first evaluation at or above {target:.0%} test accuracy, in virtual seconds. "
            "Client FLOPs, bytes and energy are what the devices spent in the whole run (energy: compute and "
            "radio, `devices.physics.energy_j`; real devices report none). Train peak: "
            "the training task's peak memory on a device with a full batch.", "",
            *markdown_rows(head, rows), ""]


def class_rows(summaries: list[tuple[str, dict]]) -> list[dict]:
    """One dict per (variant, class) with ``CLASS_COLUMNS``: the rows of ``comparison_classes.csv``.
    ``peak_fits_p50``: the largest task sent to the class fits the class's median free memory at t = 0."""
    out = []
    for name, s in summaries:
        for c, row in s["by_class"].items():
            peak = row["peak_demand_bytes"]
            out.append({"variant": name, "algorithm": s["algorithm"], "device_class": c,
                        "devices": row["devices"], "memory_eligible": row.get("memory_eligible"),
                        "participants": row["participants"], "updates_accepted": row["updates_accepted"],
                        "memory_dropouts": row["dropouts"].get("memory", 0),
                        "rejoined_after_memory_refusal": row.get("rejoined_after_memory_refusal"),
                        "free_bytes_p50": row.get("free_bytes_p50"), "peak_demand_bytes": peak,
                        "peak_fits_p50": None if peak is None or row.get("free_bytes_p50") is None
                        else peak <= row["free_bytes_p50"],
                        "energy_j": row.get("energy_j")})
    return out


def _last_eligible(summary: dict, cls: str) -> int | None:
    """Devices of ``cls`` memory-eligible for the last round that dispatched a task (None: no such round)."""
    demand = summary["timeline"]["demand_bytes"]
    last = next((r for r in range(len(demand) - 1, -1, -1) if demand[r] is not None), None)
    return None if last is None else summary["timeline"]["by_class"][cls]["eligible"][last]


def _who_cell(row: dict, summary: dict) -> str:
    """``eligible / took part``; ``eligible -> eligible at the end / took part`` when the task's demand moved
    devices of the class in or out during the run."""
    start, end = row["memory_eligible"], _last_eligible(summary, row["device_class"])
    moved = f" -> {end}" if end is not None and end != start else ""
    return f"{start}{moved} / {row['participants']}"


def _fits(demand: int | None, free: int | None) -> str:
    return "" if demand is None or free is None else " (fits)" if demand <= free else " (too big)"


def _peak_cell(row: dict, summary: dict) -> str:
    """The class's largest task peak against its free p50; ``-> last`` with the last round's task when it is
    smaller than the first round's (a model that shrank; not a round kind with a larger task in between)."""
    peak, free = row["peak_demand_bytes"], row["free_bytes_p50"]
    cell = fmt_bytes(peak) + _fits(peak, free)
    demand = [d for d in summary["timeline"]["demand_bytes"] if d is not None]
    last = demand[-1] if demand else None
    if peak is not None and last is not None and last < min(peak, demand[0]):
        cell += f" -> {fmt_bytes(last)}{_fits(last, free)}"
    return cell


def _class_tables(summaries: list[tuple[str, dict]]) -> list[str]:
    """Who can take part, peak demand against free memory, and energy, one row per device class."""
    names = [n for n, _ in summaries]
    by = {(r["variant"], r["device_class"]): r for r in class_rows(summaries)}
    classes = sorted({c for _, s in summaries for c in s["by_class"]})
    devices = {c: next(s["by_class"][c]["devices"] for _, s in summaries if c in s["by_class"]) for c in classes}
    who, peak, energy = [], [], []
    for c in classes:
        cells = [by.get((n, c)) for n in names]
        who.append([c, str(devices[c]), *("-" if r is None else _who_cell(r, s) for r, (_, s) in
                                          zip(cells, summaries))])
        free = next((r["free_bytes_p50"] for r in cells if r is not None), None)
        peak.append([c, fmt_bytes(free), *("-" if r is None else _peak_cell(r, s) for r, (_, s) in
                                           zip(cells, summaries))])
        energy.append([c, *("-" if r is None else fmt(r["energy_j"]) for r in cells)])
    lines = ["## Who can take part, per device class", "",
             "Each cell: devices whose free memory at t = 0 covers the training task (memory-eligible) / devices "
             "that had at least one update accepted; \"a -> b\": b are eligible for the last round's task (the "
             "model changed). Eligible devices may still miss out: offline, out of battery, too slow for the "
             "deadline, or never selected.", "",
             *markdown_rows(["class", "devices", *names], who), "",
             "## Peak demand per class", "",
             "The largest peak memory of a task sent to the class, against the class's median free memory at "
             "t = 0 (free p50); \"too big\" means most of the class cannot run it; \"-> b\": the last round's "
             "task, where the model shrank during the run.", "",
             *markdown_rows(["class", "free p50", *names], peak), ""]
    if any(s.get("energy_j") is not None for _, s in summaries):
        lines += ["## Energy per class (J)", "", "Joules the class's devices spent on tasks, compute and radio.",
                  "", *markdown_rows(["class", *names], energy), ""]
    return lines


def _timeline_lines(summaries: list[tuple[str, dict]]) -> list[str]:
    """What changed over the run: the per-round task demand and the devices that joined after a memory
    refusal."""
    lines = ["## Over time", "",
             "`comparison_timeline.png`: per variant, the share of each class's devices whose free memory covers "
             "the round's task (left) and the updates accepted per class in each round (right). The task's "
             "demand is read from the event log round by round, so a model that shrinks shows up here.", ""]
    for name, s in summaries:
        demand = [d for d in s["timeline"]["demand_bytes"] if d is not None]
        rejoined = {c: r["rejoined_after_memory_refusal"] for c, r in s["timeline"]["by_class"].items()
                    if r["rejoined_after_memory_refusal"]}
        if not demand:
            lines.append(f"- {name}: no task was dispatched.")
            continue
        rounds_at_max = sum(d == max(demand) for d in demand)
        if min(demand) == max(demand):
            trend = f"the task's peak memory stayed at {fmt_bytes(demand[0])}"
        elif demand[0] == demand[-1]:  # varies by round kind (FedMef's adjustment rounds), same at both ends
            trend = (f"the task's peak memory was {fmt_bytes(demand[0])} in round 0 and in the last round, "
                     f"between {fmt_bytes(min(demand))} and {fmt_bytes(max(demand))} "
                     f"({rounds_at_max} of {count(len(demand), 'round')} at {fmt_bytes(max(demand))})")
        else:
            trend = (f"the task's peak memory went from {fmt_bytes(demand[0])} (round 0) to "
                     f"{fmt_bytes(demand[-1])} (last round; range {fmt_bytes(min(demand))} to "
                     f"{fmt_bytes(max(demand))})")
        joined = ("; devices refused for memory that had an update accepted later: "
                  + ", ".join(f"{c} {k}" for c, k in sorted(rejoined.items()))) if rejoined else ""
        lines.append(f"- {name}: {trend}{joined}.")
    return lines + [""]


def _write_class_csv(summaries: list[tuple[str, dict]], path: Path) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CLASS_COLUMNS)
        for row in class_rows(summaries):
            w.writerow(["" if row[k] is None else int(row[k]) if isinstance(row[k], bool) else
                        repr(row[k]) if isinstance(row[k], float) else row[k] for k in CLASS_COLUMNS])


#: What a comparison writes only sometimes (figures in learning mode, energy with batteries), removed first
#: (``fleet.app.report.RUN_OUTPUTS``).
COMPARISON_OUTPUTS = ("comparison.json", "comparison.png", "comparison_timeline.png", "comparison_costs.png",
                      "comparison_energy.csv")


def write_comparison(summaries: list[tuple[str, dict]], out: Path,
                     evaluations: dict[str, list] | None = None) -> str:
    """Write ``comparison.md``, ``comparison.json`` and ``comparison_classes.csv`` for ``summaries``
    ((variant, summary) pairs); in learning mode, given ``evaluations`` (variant -> evaluations), also the
    figures. Returns the markdown."""
    from fleet.app.figures import comparison_costs, comparison_figure, comparison_timeline
    from fleet.app.report_energy import energy_comparison_lines, write_energy_csv  # it imports fmt from here

    out.mkdir(parents=True, exist_ok=True)
    clear_outputs(out, COMPARISON_OUTPUTS)
    parts = [f"# Comparison of {len(summaries)} variants", "",
             "Every variant ran on the same fleet and seed; only the named settings differ. "
             "Rounds and outcomes first, then accuracy and cost, who could take part, and how that changed.",
             "", "## Rounds", "", *_timing_rows(summaries), ""]
    learning = [(n, s) for n, s in summaries if s.get("final_accuracy") is not None]
    if learning:
        parts += _learning_rows(learning)
    parts += _class_tables(summaries)  # who could and who did take part: timing mode answers it too
    if learning:
        parts += _timeline_lines(learning)
    _write_class_csv(summaries, out / "comparison_classes.csv")
    parts += ["Per class and variant as CSV: `comparison_classes.csv`.", ""]
    if learning and evaluations:
        runs = [(n, s, evaluations[n]) for n, s in learning if n in evaluations]
        comparison_figure(runs, out)
        comparison_timeline(runs, out)
        comparison_costs(runs, out)
        parts += ["![who took part and accuracy](comparison.png)", "",
                  "![participation per class over rounds](comparison_timeline.png)", "",
                  "![cost and memory per variant](comparison_costs.png)", ""]
    if write_energy_csv(summaries, out / "comparison_energy.csv"):
        parts += energy_comparison_lines(summaries)
    text = "\n".join(parts)
    (out / "comparison.md").write_text(text)
    (out / "comparison.json").write_text(json.dumps(dict(summaries), indent=2, allow_nan=False) + "\n")
    return text
