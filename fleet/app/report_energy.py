"""The energy of a run and of a comparison, in words and tables: what ``report.md``, the printed study and
``comparison.md`` say about ``summary.json``'s ``energy`` (``fleet.app.timeline.energy_json``).

Reads only summaries (and, to draw, the finished run), so a report of a run written before energy was kept (no
``energy`` key) says nothing rather than fail. Figures: ``fleet.app.figures_energy``.
"""

from __future__ import annotations

import csv
from pathlib import Path

from fleet.app.comparison import fmt, markdown_rows
from fleet.app.printing import count
from fleet.app.simulation import Simulation
from fleet.app.study import Study

__all__ = ["ENERGY_COLUMNS", "energy_comparison_lines", "energy_report_lines", "energy_rows", "energy_study_lines",
           "write_energy_csv", "write_energy_outputs"]

#: ``comparison_energy.csv``: one row per variant.
ENERGY_COLUMNS = ("variant", "algorithm", "total_j", "compute_j", "radio_j", "per_accepted_update_j",
                  "battery_drained_j", "devices_ran_flat", "battery_flat_events", "accuracy_gain_points",
                  "j_per_accuracy_point")


def _per_update(row: dict, key: str = "total_j") -> float | None:
    per = row["per_accepted_update_j"]
    return None if per is None else per[key]


def _class_rows(energy: dict) -> list[list[str]]:
    rows = []
    for cls, row in energy["by_class"].items():
        flat = f"{row['devices_ran_flat']} ({count(row['battery_flat_events'], 'time')})" if row["battery"] else "mains"
        rows.append([cls, fmt(row["compute_j"]), fmt(row["radio_j"]), fmt(_per_update(row, "compute_j")),
                     fmt(_per_update(row, "radio_j")), fmt(row["battery_drained_j"]), flat])
    return rows


def energy_report_lines(summary: dict) -> list[str]:
    """``report.md``'s "Energy" section (Markdown lines); none when the summary has no ``energy``."""
    energy = summary.get("energy")
    if energy is None:
        return []
    head = ["class", "compute J", "radio J", "compute J per accepted update", "radio J per accepted update",
            "battery drained J", "devices that ran flat"]
    lines = ["## Energy", "",
             f"The simulated devices spent {fmt(energy['total_j'])} J: compute {fmt(energy['compute_j'])} J, radio "
             f"{fmt(energy['radio_j'])} J (received {fmt(energy['radio_rx_j'])} J, sent {fmt(energy['radio_tx_j'])} "
             f"J); {fmt(_per_update(energy))} J per accepted update (everything spent, wasted work included, over "
             f"the updates accepted). Batteries gave {fmt(energy['battery_drained_j'])} J; "
             f"{count(energy['devices_ran_flat'], 'device')} ran flat "
             f"({count(energy['battery_flat_events'], 'time')}).", ""]
    if energy["accuracy_gain"] is not None:
        lines += [f"Accuracy rose {100 * energy['accuracy_gain']:.2f} points over the initial model: "
                  f"{fmt(energy['j_per_accuracy_point'])} J per accuracy point.", ""]
    return [*lines, *markdown_rows(head, _class_rows(energy)), ""]


def energy_study_lines(summary: dict) -> list[str]:
    """The printed study's energy lines (plain text); none when the summary has no ``energy``."""
    energy = summary.get("energy")
    if energy is None:
        return []
    lines = [f"energy {fmt(energy['total_j'])} J (compute {fmt(energy['compute_j'])}, radio "
             f"{fmt(energy['radio_j'])}), {fmt(_per_update(energy))} J per accepted update; batteries drained "
             f"{fmt(energy['battery_drained_j'])} J, {count(energy['devices_ran_flat'], 'device')} ran flat"]
    if energy["j_per_accuracy_point"] is not None:
        lines.append(f"energy per accuracy point {fmt(energy['j_per_accuracy_point'])} J "
                     f"(+{100 * energy['accuracy_gain']:.2f} points)")
    return lines


def write_energy_outputs(sim: Simulation, study: Study, out: Path, figures: bool) -> list[tuple[str, str]]:
    """Draw the run's energy figure into ``out`` (the figures folder) when ``figures``; return the (file name,
    title) pairs drawn, as ``fleet.app.figures.draw_figures`` does."""
    if not figures:
        return []
    from fleet.app.figures_energy import energy_figure
    from fleet.app.timeline import energy_json

    out.mkdir(parents=True, exist_ok=True)
    made = energy_figure(energy_json(sim, study.accepted_by_class), out)
    return [] if made is None else [made]


def energy_rows(summaries: list[tuple[str, dict]]) -> list[dict]:
    """One dict per variant with ``ENERGY_COLUMNS`` (variants whose summary has no ``energy`` left out)."""
    out = []
    for name, s in summaries:
        energy = s.get("energy")
        if energy is None:
            continue
        gain = energy["accuracy_gain"]
        out.append({"variant": name, "algorithm": s["algorithm"], "total_j": energy["total_j"],
                    "compute_j": energy["compute_j"], "radio_j": energy["radio_j"],
                    "per_accepted_update_j": _per_update(energy), "battery_drained_j": energy["battery_drained_j"],
                    "devices_ran_flat": energy["devices_ran_flat"],
                    "battery_flat_events": energy["battery_flat_events"],
                    "accuracy_gain_points": None if gain is None else 100 * gain,
                    "j_per_accuracy_point": energy["j_per_accuracy_point"]})
    return out


def energy_comparison_lines(summaries: list[tuple[str, dict]]) -> list[str]:
    """``comparison.md``'s "Energy" section: joules per accuracy point and what they are made of, per variant."""
    rows = energy_rows(summaries)
    if not rows:
        return []
    head = ["variant", "algorithm", "energy J", "compute J", "radio J", "J per accepted update",
            "battery drained J", "devices ran flat", "accuracy gain (points)", "J per accuracy point"]
    cells = [[r["variant"], r["algorithm"], fmt(r["total_j"]), fmt(r["compute_j"]), fmt(r["radio_j"]),
              fmt(r["per_accepted_update_j"]), fmt(r["battery_drained_j"]), str(r["devices_ran_flat"]),
              fmt(r["accuracy_gain_points"]), fmt(r["j_per_accuracy_point"])] for r in rows]
    return ["## Energy", "",
            "Joules the simulated devices spent (compute and radio, docs/energy.md), per accepted update and per "
            "point of test accuracy gained over the initial model (n/a: no gain, or a timing run). As CSV: "
            "`comparison_energy.csv`.", "", *markdown_rows(head, cells), ""]


def write_energy_csv(summaries: list[tuple[str, dict]], path: Path) -> bool:
    """Write ``comparison_energy.csv`` (an empty cell for None); False, and nothing written, without energy."""
    rows = energy_rows(summaries)
    if not rows:
        return False
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(ENERGY_COLUMNS)
        for row in rows:
            w.writerow(["" if row[k] is None else repr(row[k]) if isinstance(row[k], float) else row[k]
                        for k in ENERGY_COLUMNS])
    return True
