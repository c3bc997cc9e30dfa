"""Write what a run leaves behind: summary.json, events.csv, rounds.csv, figures/, report.md."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from fleet.simulation import Simulation
from fleet.study import DROPOUT_CAUSES, Study, analyse, summary

ROUND_COLUMNS = ("round", "start_s", "end_s", "round_time_s", "selected", "accepted",
                 "aggregated", "model_version", "mean_staleness",
                 *(f"dropouts_{c}" for c in DROPOUT_CAUSES))


def write_rounds(sim: Simulation, study: Study, path: Path) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(ROUND_COLUMNS)
        for r in sim.coordinator.rounds:
            w.writerow([r.round_index, repr(r.start_s), repr(r.end_s), repr(r.end_s - r.start_s),
                        r.selected, r.accepted, int(r.aggregated), r.model_version,
                        repr(r.mean_staleness),
                        *(study.dropouts_by_round.get(r.round_index, {}).get(c, 0)
                          for c in DROPOUT_CAUSES)])


def _figures(sim: Simulation, study: Study, out: Path) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    rounds = sim.coordinator.rounds
    made: list[tuple[str, str]] = []

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ends = [r.end_s for r in rounds]
    ax.plot(ends, [r.selected for r in rounds], label="selected")
    ax.plot(ends, [r.accepted for r in rounds], label="updates accepted")
    ax.plot(ends, [sum(study.dropouts_by_round.get(r.round_index, {}).values()) for r in rounds],
            label="dropouts")
    ax.set(xlabel="virtual time (s)", ylabel="devices", title="Participation per round")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "participation.png", dpi=110)
    plt.close(fig)
    made.append(("participation.png", "Participation per round"))

    fig, ax = plt.subplots(figsize=(7, 3.5))
    idx = np.arange(len(rounds))
    bottom = np.zeros(len(rounds))
    for cause in DROPOUT_CAUSES:
        counts = np.array([study.dropouts_by_round.get(r.round_index, {}).get(cause, 0)
                           for r in rounds], dtype=float)
        if counts.any():
            ax.bar(idx, counts, bottom=bottom, label=cause)
            bottom += counts
    ax.set(xlabel="round", ylabel="dropouts", title="Dropouts by cause per round")
    if bottom.any():
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "dropouts.png", dpi=110)
    plt.close(fig)
    made.append(("dropouts.png", "Dropouts by cause per round"))

    fig, ax = plt.subplots(figsize=(7, 3.5))
    for cls, times in sorted(study.completion_s_by_class.items()):
        xs = np.sort(times)
        ax.step(xs, np.arange(1, len(xs) + 1) / len(xs), where="post", label=cls)
    ax.set(xscale="log", xlabel="task completion time (s)", ylabel="fraction of tasks",
           title="Completion-time CDF by device class")
    if study.completion_s_by_class:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "completion_cdf.png", dpi=110)
    plt.close(fig)
    made.append(("completion_cdf.png", "Completion-time CDF by device class"))

    fig, ax = plt.subplots(figsize=(7, 3.8))
    classes = sorted(study.devices_by_class)
    free = {c: [] for c in classes}
    for device, p in enumerate(sim.profiles):
        free[p.device_class].append(max(1, sim.devices.free_memory_bytes(device, 0.0)))
    ax.boxplot([free[c] for c in classes], tick_labels=classes)
    for phase, demand in sim.demands.items():
        ax.axhline(demand.peak_memory_bytes, linestyle="--", color="C3",
                   label=f"{sim.scenario.algorithm.name} {phase} peak demand")
    ax.set(yscale="log", ylabel="bytes", title="Free memory at t=0 against the task's demand")
    ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "memory.png", dpi=110)
    plt.close(fig)
    made.append(("memory.png", "Free memory against memory demand"))
    return made


def _report_md(summ: dict, figures: list[tuple[str, str]]) -> str:
    lines = [f"# Run of `{summ['scenario']}` (seed {summ['seed']})", "",
             f"{summ['devices']} devices, {summ['coordinator']} coordination, algorithm "
             f"`{summ['algorithm']}` ({summ['mode']} mode); {summ['rounds']} rounds in "
             f"{summ['sim_time_s']:.1f} s of virtual time ({summ['stopped_by']}).", "",
             f"- client tasks dispatched: {summ['client_tasks']}; updates accepted: "
             f"{summ['updates_accepted']}; devices that took part: {summ['participants']} "
             f"({summ['participation_rate']:.1%})",
             "- dropouts: " + ", ".join(f"{c} {k}" for c, k in summ["dropouts"].items()),
             "- round time (s): " + ", ".join(f"{q} {v:.1f}" if v is not None else f"{q} n/a"
                                               for q, v in summ["round_time_s"].items()),
             f"- event log SHA-256: `{summ['event_log_sha256']}`", "",
             "| class | devices | tasks | accepted | dropouts | p50 s | p90 s | tail cause |",
             "|---|---|---|---|---|---|---|---|"]
    for cls, row in summ["by_class"].items():
        comp = row["completion_s"]
        fmt = lambda v: "n/a" if v is None else f"{v:.1f}"  # noqa: E731
        lines.append(f"| {cls} | {row['devices']} | {row['client_tasks']} | "
                     f"{row['updates_accepted']} | "
                     + (", ".join(f"{c} {k}" for c, k in row["dropouts"].items()) or "-")
                     + f" | {fmt(comp['p50'])} | {fmt(comp['p90'])} | "
                     + (", ".join(f"{c} {k}" for c, k in row["tail_cause"].items()) or "-")
                     + " |")
    lines.append("")
    for name, title in figures:
        lines += [f"## {title}", "", f"![{title}](figures/{name})", ""]
    return "\n".join(lines)


def write_outputs(sim: Simulation, out: Path, figures: bool = True) -> dict:
    """Write every output of ``sim`` under ``out``; return the summary."""
    out.mkdir(parents=True, exist_ok=True)
    with (out / "events.csv").open("w", newline="") as f:
        digest = sim.kernel.recorder.write_csv(f)
    study = analyse(sim)
    summ = summary(sim, study, digest)
    write_rounds(sim, study, out / "rounds.csv")
    made = _figures(sim, study, out / "figures") if figures else []
    (out / "report.md").write_text(_report_md(summ, made))
    (out / "summary.json").write_text(json.dumps(summ, indent=2) + "\n")
    return summ


COMPARED = (("rounds", "rounds"), ("sim_time_s", "virtual s"), ("client_tasks", "tasks"),
            ("updates_accepted", "accepted"), ("participation_rate", "participation"))


def write_comparison(summaries: list[tuple[str, dict]], out: Path) -> str:
    """Side-by-side table of variants' key figures: ``comparison.md`` and ``comparison.json``."""
    out.mkdir(parents=True, exist_ok=True)
    head = ["variant", *(label for _, label in COMPARED), "accepted per virtual hour",
            "round p50 s", "round p90 s", "round p99 s", "dropouts"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    fmt = lambda v: "n/a" if v is None else f"{v:.3g}" if isinstance(v, float) else str(v)  # noqa
    for name, s in summaries:
        per_hour = s["updates_accepted"] / s["sim_time_s"] * 3600 if s["sim_time_s"] else None
        cells = [name, *(fmt(s[key]) for key, _ in COMPARED), fmt(per_hour),
                 *(fmt(s["round_time_s"][q]) for q in ("p50", "p90", "p99")),
                 ", ".join(f"{c} {k}" for c, k in s["dropouts"].items() if k) or "-"]
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(["# Comparison", "", *lines, ""])
    (out / "comparison.md").write_text(text)
    (out / "comparison.json").write_text(json.dumps(dict(summaries), indent=2) + "\n")
    return text
