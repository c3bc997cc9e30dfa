"""The figures of a run (``figures/*.png``) and of a comparison of variants (``comparison.png``).

One function per figure, each drawing from the study and the run's read sides only (``fleet.app.view``);
matplotlib is imported when a figure is drawn, never at import.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from fleet.app.simulation import Simulation
from fleet.app.study import DROPOUT_CAUSES, Study
from fleet.app.view import classes_of, free_bytes_of

__all__ = ["comparison_costs", "comparison_figure", "comparison_timeline", "draw_figures", "timeline_grid"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)


def draw_figures(sim: Simulation, study: Study, out: Path) -> list[tuple[str, str]]:
    """Draw every figure of ``sim`` into ``out`` (made if missing); return (file name, title) pairs in
    the order report.md shows them (accuracy first, when the run evaluated a model)."""
    out.mkdir(parents=True, exist_ok=True)
    made = [participation(sim, study, out), dropouts(sim, study, out), completion_cdf(study, out),
            memory(sim, study, out)]
    if sim.record.evaluations:
        made.insert(0, accuracy(sim, out))
    return made


def accuracy(sim: Simulation, out: Path) -> tuple[str, str]:
    """Test accuracy against virtual time, client FLOPs and bytes sent, one panel each."""
    plt = _pyplot()
    evs = sim.record.evaluations
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5), sharey=True)
    acc = [e.accuracy if math.isfinite(e.accuracy) else math.nan for e in evs]
    for ax, xs, label in ((axes[0], [e.time_s for e in evs], "virtual time (s)"),
                          (axes[1], [e.client_flops for e in evs], "client FLOPs spent"),
                          (axes[2], [e.bytes_up + e.bytes_down for e in evs], "bytes sent (up + down)")):
        ax.plot(xs, acc, marker=".")
        ax.set(xlabel=label)
    axes[0].set(ylabel="test accuracy")
    fig.suptitle(f"{sim.scenario.algorithm.name}: global model on the held-out set")
    _save(fig, out / "accuracy.png")
    return "accuracy.png", "Test accuracy against virtual time, client FLOPs and bytes"


def participation(sim: Simulation, study: Study, out: Path) -> tuple[str, str]:
    """Selected devices, accepted updates and dropouts of each round, at the round's end."""
    plt = _pyplot()
    rounds = sim.coordinator.rounds
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ends = [r.end_s for r in rounds]
    ax.plot(ends, [r.selected for r in rounds], label="selected")
    ax.plot(ends, [r.accepted for r in rounds], label="updates accepted")
    ax.plot(ends, [sum(study.dropouts_by_round.get(r.round_index, {}).values()) for r in rounds],
            label="dropouts")
    ax.set(xlabel="virtual time (s)", ylabel="devices", title="Participation per round")
    ax.legend()
    _save(fig, out / "participation.png")
    return "participation.png", "Participation per round"


def dropouts(sim: Simulation, study: Study, out: Path) -> tuple[str, str]:
    """Dropouts of each round stacked by cause (causes that never occurred left out)."""
    plt = _pyplot()
    rounds = sim.coordinator.rounds
    fig, ax = plt.subplots(figsize=(8, 3.5))
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
        ax.set_ylim(0, bottom.max() * 1.05)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)  # beside the bars
    _save(fig, out / "dropouts.png")
    return "dropouts.png", "Dropouts by cause per round"


def completion_cdf(study: Study, out: Path) -> tuple[str, str]:
    """The empirical CDF of accepted tasks' completion times, one step curve per device class."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for cls, times in sorted(study.completion_s_by_class.items()):
        xs = np.sort(times)
        ax.step(xs, np.arange(1, len(xs) + 1) / len(xs), where="post", label=cls)
    ax.set(xscale="log", xlabel="task completion time (s)", ylabel="fraction of tasks",
           title="Completion-time CDF by device class")
    # Ticks at 1, 2 and 5 per decade, written plainly: matplotlib's minor labels of a short log axis overlap.
    ax.xaxis.set_major_locator(plt.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda x, _pos: f"{x:g}"))
    ax.xaxis.set_minor_formatter(plt.NullFormatter())
    if study.completion_s_by_class:
        ax.legend(fontsize=7)
    _save(fig, out / "completion_cdf.png")
    return "completion_cdf.png", "Completion-time CDF by device class"


def memory(sim: Simulation, study: Study, out: Path) -> tuple[str, str]:
    """Free memory at t = 0 by device class (box plots, log scale) against each phase's peak demand."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    names, cls_of = classes_of(sim.fleet)
    free_all = np.maximum(free_bytes_of(sim.fleet, 0.0), 1)
    classes = sorted(study.devices_by_class)
    free = [free_all[cls_of == names.index(c)] for c in classes]
    # Outliers of a million-device fleet would be drawn one marker each: above 100,000 only the boxes.
    ax.boxplot(free, tick_labels=classes, showfliers=len(free_all) <= 100_000)
    for phase, demand in sim.demands.items():
        ax.axhline(demand.peak_memory_bytes, linestyle="--", color="C3",
                   label=f"{sim.scenario.algorithm.name} {phase} peak demand")
    ax.set(yscale="log", ylabel="bytes", title="Free memory at t=0 against the task's demand")
    ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    ax.legend(fontsize=7)
    _save(fig, out / "memory.png")
    return "memory.png", "Free memory against memory demand"


def comparison_figure(runs: list[tuple[str, dict, list]], out: Path) -> None:
    """``comparison.png``: devices that took part by class (stacked bars), and accuracy against the model
    version (aggregations) and against virtual time (log scale: variants' round times can differ 100x), one
    curve per variant with the target accuracy dashed; ``runs`` holds (name, summary, evaluations)."""
    plt = _pyplot()
    fig, (left, mid, right) = plt.subplots(1, 3, figsize=(17, 4.8), width_ratios=(1.1, 1, 1))
    classes = sorted({c for _, s, _ in runs for c in s["by_class"]})
    colours = plt.get_cmap("tab20").colors  # 20 distinct colours: the catalog has 12 classes
    bottom = np.zeros(len(runs))
    for i, c in enumerate(classes):
        counts = np.array([s["by_class"].get(c, {}).get("participants", 0) for _, s, _ in runs], dtype=float)
        left.bar([name for name, _, _ in runs], counts, bottom=bottom, label=c, color=colours[i % 20])
        bottom += counts
    left.set(ylabel="devices that took part", title="Who took part, by device class")
    left.tick_params(axis="x", labelrotation=20)
    # outside the bars, largest class on top as in the stack
    handles, labels = left.get_legend_handles_labels()
    left.legend(handles[::-1], labels[::-1], fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                frameon=False)
    for name, s, evs in runs:
        acc = [e.accuracy if math.isfinite(e.accuracy) else math.nan for e in evs]
        label = f"{name} (final {s['final_accuracy']:.3f})"
        mid.plot([e.model_version for e in evs], acc, marker=".", markersize=3, label=label)
        right.plot([max(e.time_s, 1e-3) for e in evs], acc, marker=".", markersize=3, label=label)
    target = runs[0][1]["target_accuracy"] if runs else None
    for ax in (mid, right):
        if target is not None:
            ax.axhline(target, color="0.5", linestyle="--", linewidth=0.8)
        ax.set(ylabel="test accuracy")
        ax.legend(fontsize=7)
    mid.set(xlabel="model version (aggregations)", title="Accuracy per aggregation")
    right.set(xscale="log", xlabel="virtual time (s, log)", title="Accuracy over virtual time (target dashed)")
    _save(fig, out / "comparison.png")


def timeline_grid(summary: dict, series: str, share: bool = False) -> tuple[list[str], np.ndarray]:
    """(classes, array of shape classes x rounds) of ``summary["timeline"]``'s ``series`` (``fleet.app.
    timeline.SERIES``); with ``share``, divided by each class's device count (a fraction in [0, 1])."""
    by_class = summary["timeline"]["by_class"]
    classes = sorted(by_class)
    grid = np.array([by_class[c][series] for c in classes], dtype=float).reshape(len(classes), -1)
    if share:
        grid /= np.array([summary["by_class"][c]["devices"] for c in classes], dtype=float)[:, None]
    return classes, grid


def comparison_timeline(runs: list[tuple[str, dict, list]], out: Path) -> None:
    """``comparison_timeline.png``: one row per variant; left, the share of each class's devices that are
    memory-eligible for the round's task; right, the updates accepted from each class in each round."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(runs), 2, figsize=(13, 0.9 + 2.6 * len(runs)), squeeze=False)
    peak = max((float(timeline_grid(s, "accepted")[1].max(initial=0)) for _, s, _ in runs), default=0.0)
    for (name, s, _), (left, right) in zip(runs, axes):
        classes, eligible = timeline_grid(s, "eligible", share=True)
        _, accepted = timeline_grid(s, "accepted")
        shown_l = left.imshow(eligible, aspect="auto", cmap="Greens", vmin=0, vmax=1, interpolation="nearest")
        shown_r = right.imshow(accepted, aspect="auto", cmap="Blues", vmin=0, vmax=max(peak, 1.0),
                               interpolation="nearest")
        for ax, title in ((left, "memory-eligible share of the class"), (right, "updates accepted")):
            ax.set_yticks(range(len(classes)), classes, fontsize=7)
            ax.set(xlabel="round", title=f"{name} ({s['algorithm']}): {title}")
            ax.title.set_fontsize(9)
        fig.colorbar(shown_l, ax=left, fraction=0.03, pad=0.01)
        fig.colorbar(shown_r, ax=right, fraction=0.03, pad=0.01)
    _save(fig, out / "comparison_timeline.png")


def comparison_costs(runs: list[tuple[str, dict, list]], out: Path) -> None:
    """``comparison_costs.png``: client FLOPs, bytes up and down and energy per variant (bars), and each
    class's median free memory at t = 0 against each variant's training peak (log scale)."""
    plt = _pyplot()
    fig = plt.figure(figsize=(14, 7.2))
    grid = fig.add_gridspec(2, 4, height_ratios=(1, 1.25))
    names = [name for name, _, _ in runs]
    colours = [f"C{i % 10}" for i in range(len(runs))]
    for i, (key, label) in enumerate((("client_flops", "client FLOPs"), ("bytes_up", "bytes up"),
                                      ("bytes_down", "bytes down"), ("energy_j", "energy (J)"))):
        ax = fig.add_subplot(grid[0, i])
        values = [s.get(key) for _, s, _ in runs]
        if all(v is None for v in values):
            ax.text(0.5, 0.5, "not recorded by this run", ha="center", va="center", transform=ax.transAxes)
            ax.set(title=label, xticks=[], yticks=[])
            continue
        ax.bar(names, [0 if v is None else v for v in values], color=colours)
        ax.set(title=label)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    ax = fig.add_subplot(grid[1, :])
    classes = sorted({c for _, s, _ in runs for c in s["by_class"]})
    free = [next(s["by_class"][c]["free_bytes_p50"] for _, s, _ in runs if c in s["by_class"]) for c in classes]
    ax.bar(classes, [max(1, f) for f in free], color="0.8", label="median free memory at t = 0")
    for i, ((name, s, _), colour) in enumerate(zip(runs, colours)):
        width = max(0.8, 2.8 - 0.5 * i)  # equal demands stay visible: the earlier variant's line is wider
        peak = s["demand"].get("train", {}).get("peak_memory_bytes")
        if peak:
            ax.axhline(peak, color=colour, linestyle="--", linewidth=width, label=f"{name}: training peak")
        last = [d for d in s["timeline"]["demand_bytes"] if d is not None][-1:]
        if last and peak and last[0] != peak:  # the model changed during the run
            ax.axhline(last[0], color=colour, linestyle=":", linewidth=width, label=f"{name}: last round's task")
    ax.set(yscale="log", ylabel="bytes", title="Who fits: a class whose bar is below a line cannot run that task")
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    _save(fig, out / "comparison_costs.png")
