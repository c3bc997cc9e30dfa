"""The figures of a run (``figures/*.png``) and of a comparison of variants (``comparison*.png``).

One function per figure, each drawing from the study and the run's read sides only (``fleet.app.view``);
matplotlib is imported when a figure is drawn, never at import. Colours come from ``fleet.app.palette`` (a
device class, a variant or a dropout cause has one colour in every figure), legends sit outside the axes
(``fleet.app.plotting``), and axes carry SI units.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np

from fleet.app.palette import (
    VARIANT_COLOURS,
    cause_colours,
    class_colours,
    class_order,
    variant_colours,
    variant_markers,
)
from fleet.app.plotting import legend_below, legend_beside, new_figure, pyplot, save, si_axis, time_axis
from fleet.app.simulation import Simulation
from fleet.app.study import DROPOUT_CAUSES, Study, first_outcomes
from fleet.app.view import classes_of, free_bytes_of

__all__ = ["RUN_FIGURES", "accuracy", "comparison_costs", "comparison_figure", "comparison_timeline",
           "completion_cdf", "discards_by_round", "draw_figures", "dropouts", "memory", "participation",
           "timeline_grid"]

#: A run figure: draws from (sim, study) into the folder and returns (file name, title), or None when the run
#: has nothing to show in it.
RunFigure = Callable[[Simulation, Study, Path], "tuple[str, str] | None"]


def _finite(values) -> list[float]:
    return [v if v is not None and math.isfinite(v) else math.nan for v in values]


def _slanted(ax, size: float = 8) -> None:
    """x tick labels at 30 degrees, each ending under its tick (long class and variant names never collide)."""
    ax.tick_params(axis="x", labelrotation=30, labelsize=size)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
        label.set_rotation_mode("anchor")


def accuracy(sim: Simulation, study: Study, out: Path) -> tuple[str, str] | None:
    """Test accuracy against virtual time, client FLOPs and bytes sent, one panel each (None in timing mode)."""
    evs = sim.record.evaluations
    if not evs:
        return None
    fig, axes = new_figure(1, 3, figsize=(12, 3.6), sharey=True)
    acc = _finite(e.accuracy for e in evs)
    for ax, xs, label, unit in (
            (axes[0], [e.time_s for e in evs], "virtual time (s)", None),
            (axes[1], [e.client_flops for e in evs], "client compute spent (FLOP)", "FLOP"),
            (axes[2], [e.bytes_up + e.bytes_down for e in evs], "bytes sent, up + down (B)", "B")):
        ax.plot(xs, acc, marker=".", color=VARIANT_COLOURS[0])
        ax.set(xlabel=label)
        if unit:
            si_axis(ax, "x", unit)
        ax.grid(alpha=0.3)
    axes[0].set(ylabel="test accuracy")
    fig.suptitle(f"Test accuracy of the global model ({sim.scenario.algorithm.name}) against time, compute "
                 "and traffic")
    save(fig, out / "accuracy.png")
    return "accuracy.png", "Test accuracy against virtual time, client FLOPs and bytes"


def discards_by_round(sim: Simulation) -> dict[int, int]:
    """Round index -> updates that arrived but were discarded (late or stale), a task counted at its one
    outcome (``fleet.app.study.first_outcomes``); rounds without a discard left out."""
    t = sim.kernel.recorder.table(("event", "round", "task"))
    first = first_outcomes(t)
    rounds = t["round"][first][t["event"][first] == t.code("event", "discard")]
    codes, counts = np.unique(rounds, return_counts=True)
    return dict(zip(codes.tolist(), counts.tolist()))


def _round_axis(ax, idx: list[int], pad: float) -> None:
    """An x axis of round indices: integer ticks only, spanning every round of the run (``pad`` beyond the
    first and the last), whether or not anything is drawn."""
    ax.xaxis.set_major_locator(pyplot().MaxNLocator(integer=True))
    if idx:
        ax.set_xlim(min(idx) - pad, max(idx) + pad)


def participation(sim: Simulation, study: Study, out: Path) -> tuple[str, str]:
    """Selected devices, accepted updates, dropouts and discarded updates (late or stale) of each round,
    against the round's index (rounds can shorten a hundredfold when a model shrinks: over time, the late
    rounds would pile up at one spot). Selected = accepted + dropouts + discarded + tasks still running at
    the end, as the legend says."""
    rounds = sim.coordinator.rounds
    fig, ax = new_figure(figsize=(8, 3.5))
    idx = [r.round_index for r in rounds]
    discards = discards_by_round(sim)
    marker = "." if len(rounds) <= 60 else None
    ax.plot(idx, [r.selected for r in rounds], label="selected", color="#777777", marker=marker)
    ax.plot(idx, [r.accepted for r in rounds], label="updates accepted", color="#117733", marker=marker)
    ax.plot(idx, [sum(study.dropouts_by_round.get(r.round_index, {}).values()) for r in rounds],
            label="dropouts", color="#CC6677", marker=marker)
    ax.plot(idx, [discards.get(i, 0) for i in idx], label="updates discarded\n(late or stale)", color="#DDAA33",
            marker=marker, linestyle="--")
    ax.set(xlabel="round", ylabel="devices", title="Devices selected, updates accepted, dropouts and discards")
    ax.set_ylim(bottom=0)
    _round_axis(ax, idx, pad=0.5)
    ax.yaxis.set_major_locator(pyplot().MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    gap = pyplot().Line2D([], [], linestyle="none", label="")
    legend_beside(ax, [*handles, gap], [*labels, "selected = accepted + dropouts\n+ discarded + still running"],
                  fontsize=8)
    save(fig, out / "participation.png")
    return "participation.png", "Participation per round"


def dropouts(sim: Simulation, study: Study, out: Path) -> tuple[str, str]:
    """Dropouts of each round stacked by cause (causes that never occurred left out), over every round."""
    rounds = sim.coordinator.rounds
    fig, ax = new_figure(figsize=(8, 3.5))
    idx = np.array([r.round_index for r in rounds])
    bottom = np.zeros(len(rounds))
    colours = cause_colours(DROPOUT_CAUSES)
    for cause in DROPOUT_CAUSES:
        counts = np.array([study.dropouts_by_round.get(r.round_index, {}).get(cause, 0)
                           for r in rounds], dtype=float)
        if counts.any():
            ax.bar(idx, counts, bottom=bottom, label=cause, color=colours[cause])
            bottom += counts
    ax.set(xlabel="round", ylabel="dropouts (tasks)", title="Dropouts per round, stacked by cause")
    _round_axis(ax, idx.tolist(), pad=0.6)
    ax.yaxis.set_major_locator(pyplot().MaxNLocator(integer=True))
    if bottom.any():
        ax.set_ylim(0, bottom.max() * 1.05)
        handles, labels = ax.get_legend_handles_labels()
        legend_beside(ax, handles[::-1], labels[::-1], fontsize=8)  # top of the stack first
    else:
        ax.text(0.5, 0.5, "no dropouts in this run", ha="center", va="center", transform=ax.transAxes)
    save(fig, out / "dropouts.png")
    return "dropouts.png", "Dropouts by cause per round"


def completion_cdf(sim: Simulation, study: Study, out: Path) -> tuple[str, str]:
    """The empirical CDF of accepted tasks' completion times, one step curve per device class."""
    plt = pyplot()
    fig, ax = new_figure(figsize=(8, 3.5))
    classes = class_order(study.completion_s_by_class)
    colours = class_colours(classes)
    for cls in classes:
        xs = np.sort(study.completion_s_by_class[cls])
        ax.step(xs, np.arange(1, len(xs) + 1) / len(xs), where="post", label=cls, color=colours[cls],
                linewidth=1.8)
    ax.set(xscale="log", xlabel="task completion time (s, log)", ylabel="fraction of accepted tasks",
           title="Completion time of accepted tasks by device class (CDF)")
    # Ticks at 1, 2 and 5 per decade, written plainly: matplotlib's minor labels of a short log axis overlap.
    ax.xaxis.set_major_locator(plt.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda x, _pos: f"{x:g}"))
    ax.xaxis.set_minor_formatter(plt.NullFormatter())
    ax.grid(alpha=0.3)
    if classes:
        legend_beside(ax)
    else:
        ax.text(0.5, 0.5, "no task completed", ha="center", va="center", transform=ax.transAxes)
    save(fig, out / "completion_cdf.png")
    return "completion_cdf.png", "Completion-time CDF by device class"


def memory(sim: Simulation, study: Study, out: Path) -> tuple[str, str]:
    """Free memory at t = 0 by device class (box plots, log scale) against each phase's peak demand."""
    fig, ax = new_figure(figsize=(8, 3.8))
    names, cls_of = classes_of(sim.fleet)
    free_all = np.maximum(free_bytes_of(sim.fleet, 0.0), 1)
    classes = class_order(study.devices_by_class)
    free = [free_all[cls_of == names.index(c)] for c in classes]
    # Outliers of a million-device fleet would be drawn one marker each: above 100,000 only the boxes.
    boxes = ax.boxplot(free, tick_labels=classes, showfliers=len(free_all) <= 100_000, patch_artist=True)
    colours = class_colours(classes)
    # A class's free memory often spreads by a few per cent only: its box is then a line, so the median is
    # drawn thick in the class's colour.
    for patch, median, cls in zip(boxes["boxes"], boxes["medians"], classes):
        patch.set(facecolor=colours[cls], alpha=0.6)
        median.set(color=colours[cls], linewidth=4, solid_capstyle="butt")
    for (phase, demand), style in zip(sim.demands.items(), ("--", ":", "-.", (0, (5, 1, 1, 1)))):
        ax.axhline(demand.peak_memory_bytes, linestyle=style, color="black", linewidth=1.2,
                   label=f"{sim.scenario.algorithm.name} {phase}: peak demand")
    ax.set(yscale="log", ylabel="free memory (B, log)",
           title="Free memory at t = 0 by device class against the task's peak demand")
    si_axis(ax, "y", "B")
    _slanted(ax)
    if sim.demands:
        legend_beside(ax)
    save(fig, out / "memory.png")
    return "memory.png", "Free memory against memory demand"


#: Every figure of a run, in the order report.md shows them (a new figure: one function appended here).
RUN_FIGURES: list[RunFigure] = [accuracy, participation, dropouts, completion_cdf, memory]


def draw_figures(sim: Simulation, study: Study, out: Path) -> list[tuple[str, str]]:
    """Draw every figure of ``RUN_FIGURES`` for ``sim`` into ``out`` (made if missing); return the (file name,
    title) pairs of those drawn, in order."""
    out.mkdir(parents=True, exist_ok=True)
    return [made for draw in RUN_FIGURES if (made := draw(sim, study, out)) is not None]


def _marked(n: int, most: int = 15) -> list[int]:
    """Indices of the points of an ``n``-point curve that get a marker: about ``most`` evenly spaced, the
    last always (where a variant ends is what the reader compares)."""
    return sorted({*range(0, n, max(1, n // most)), n - 1}) if n else []


def comparison_figure(runs: list[tuple[str, dict, list]], out: Path) -> None:
    """``comparison.png``: devices that took part by class (stacked bars, catalog order), and accuracy against
    the model version (aggregations) and against virtual time, one curve per variant with the target accuracy
    dashed; the time axis is log when the variants' spans differ by more than ``LOG_TIME_ABOVE_RATIO``.
    ``runs`` holds (name, summary, evaluations)."""
    fig, (left, mid, right) = new_figure(1, 3, figsize=(17, 5.2), width_ratios=(1.1, 1, 1))
    names = [name for name, _, _ in runs]
    classes = class_order([c for _, s, _ in runs for c in s["by_class"]])
    colours = class_colours(classes)
    bottom = np.zeros(len(runs))
    for c in classes:
        counts = np.array([s["by_class"].get(c, {}).get("participants", 0) for _, s, _ in runs], dtype=float)
        left.bar(names, counts, bottom=bottom, label=c if counts.any() else f"{c} (none took part)",
                 color=colours[c])
        bottom += counts
    left.set(ylabel="devices that took part", title="Who took part, by device class")
    left.yaxis.set_major_locator(pyplot().MaxNLocator(integer=True))
    _slanted(left, size=9)
    handles, labels = left.get_legend_handles_labels()
    legend_beside(left, handles[::-1], labels[::-1])  # as in the stack: last class on top
    line_colours, markers = variant_colours(names), variant_markers(names)
    for name, s, evs in runs:
        acc = _finite(e.accuracy for e in evs)
        # Translucent markers, a shape per variant: variants that end at one point stay apart.
        style = {"color": line_colours[name], "marker": markers[name], "markersize": 6, "alpha": 0.75,
                 "markevery": _marked(len(evs)), "label": f"{name} (final {s['final_accuracy']:.3f})"}
        mid.plot([e.model_version for e in evs], acc, **style)
        right.plot([e.time_s for e in evs], acc, **style)
    target = runs[0][1]["target_accuracy"] if runs else None
    for ax in (mid, right):
        if target is not None:
            ax.axhline(target, color="0.4", linestyle="--", linewidth=0.8, label=f"target {target:.0%}")
        ax.set(ylabel="test accuracy")
        ax.grid(alpha=0.3)
    mid.set(xlabel="model version (aggregations)", title="Test accuracy per aggregation")
    mid.xaxis.set_major_locator(pyplot().MaxNLocator(integer=True))
    spans = [max((e.time_s for e in evs), default=0.0) for _, _, evs in runs]
    positive = [e.time_s for _, _, evs in runs for e in evs if e.time_s > 0]
    log = time_axis(right, spans, min(positive, default=None))
    right.set(title="Test accuracy over virtual time" + (" (log axis)" if log else ""))
    handles, labels = mid.get_legend_handles_labels()
    legend_below(fig, handles, labels, ncols=min(len(labels), 4))
    save(fig, out / "comparison.png")


def timeline_grid(summary: dict, series: str, share: bool = False) -> tuple[list[str], np.ndarray]:
    """(classes in catalog order, array of shape classes x rounds) of ``summary["timeline"]``'s ``series``
    (``fleet.app.timeline.SERIES``); with ``share``, divided by each class's device count (in [0, 1])."""
    by_class = summary["timeline"]["by_class"]
    classes = class_order(by_class)
    grid = np.array([by_class[c][series] for c in classes], dtype=float).reshape(len(classes), -1)
    if share:
        grid /= np.array([summary["by_class"][c]["devices"] for c in classes], dtype=float)[:, None]
    return classes, grid


def comparison_timeline(runs: list[tuple[str, dict, list]], out: Path) -> None:
    """``comparison_timeline.png``: one row per variant; left, the share of each class's devices that are
    memory-eligible for the round's task; right, the updates accepted from each class in each round."""
    fig, axes = new_figure(len(runs), 2, figsize=(13, 0.9 + 2.6 * len(runs)), squeeze=False)
    peak = max((float(timeline_grid(s, "accepted")[1].max(initial=0)) for _, s, _ in runs), default=0.0)
    for (name, s, _), (left, right) in zip(runs, axes):
        classes, eligible = timeline_grid(s, "eligible", share=True)
        _, accepted = timeline_grid(s, "accepted")
        shown_l = left.imshow(eligible, aspect="auto", cmap="Greens", vmin=0, vmax=1, interpolation="nearest")
        shown_r = right.imshow(accepted, aspect="auto", cmap="Blues", vmin=0, vmax=max(peak, 1.0),
                               interpolation="nearest")
        for ax, title in ((left, "share of each class whose memory fits the task"),
                          (right, "updates accepted per class")):
            ax.set_yticks(range(len(classes)), classes, fontsize=7)
            ax.set(xlabel="round", title=f"{name} ({s['algorithm']}): {title}")
            ax.xaxis.set_major_locator(pyplot().MaxNLocator(integer=True))  # columns are rounds 0, 1, ...
            ax.title.set_fontsize(9)
        fig.colorbar(shown_l, ax=left, fraction=0.03, pad=0.01, label="share of devices")
        bar = fig.colorbar(shown_r, ax=right, fraction=0.03, pad=0.01, label="updates")
        bar.ax.yaxis.set_major_locator(pyplot().MaxNLocator(integer=True))
    save(fig, out / "comparison_timeline.png")


_COSTS = (("client_flops", "Client compute", "FLOP"), ("bytes_up", "Bytes up", "B"),
          ("bytes_down", "Bytes down", "B"), ("energy_j", "Energy", "J"))


def comparison_costs(runs: list[tuple[str, dict, list]], out: Path) -> None:
    """``comparison_costs.png``: client FLOPs, bytes up and down and energy per variant (bars), and each
    class's median free memory at t = 0 against each variant's training peak (log scale)."""
    fig = pyplot().figure(figsize=(14, 7.6), layout="constrained")
    grid = fig.add_gridspec(2, 4, height_ratios=(1, 1.25))
    names = [name for name, _, _ in runs]
    colours = variant_colours(names)
    for i, (key, title, unit) in enumerate(_COSTS):
        ax = fig.add_subplot(grid[0, i])
        values = [s.get(key) for _, s, _ in runs]
        if all(v is None for v in values):
            ax.text(0.5, 0.5, "not recorded by this run", ha="center", va="center", transform=ax.transAxes)
            ax.set(title=f"{title} ({unit})", xticks=[], yticks=[])
            continue
        ax.bar(names, [0 if v is None else v for v in values], color=[colours[n] for n in names])
        ax.set(title=f"{title} ({unit})")
        si_axis(ax, "y", unit)
        _slanted(ax)
    ax = fig.add_subplot(grid[1, :])
    classes = class_order([c for _, s, _ in runs for c in s["by_class"]])
    free = [next(s["by_class"][c]["free_bytes_p50"] for _, s, _ in runs if c in s["by_class"]) for c in classes]
    ax.bar(classes, [max(1, f) for f in free], color="0.82", label="median free memory at t = 0")
    for i, (name, s, _) in enumerate(runs):
        width = max(0.8, 2.8 - 0.5 * i)  # equal demands stay visible: the earlier variant's line is wider
        peak = s["demand"].get("train", {}).get("peak_memory_bytes")
        if peak:
            ax.axhline(peak, color=colours[name], linestyle="--", linewidth=width, label=f"{name}: training peak")
        last = [d for d in s["timeline"]["demand_bytes"] if d is not None][-1:]
        if last and peak and last[0] != peak:  # the model changed during the run
            ax.axhline(last[0], color=colours[name], linestyle=":", linewidth=width,
                       label=f"{name}: last round's task")
    ax.set(yscale="log", ylabel="memory (B, log)",
           title="Who fits: a class whose bar is below a variant's line cannot run its task")
    si_axis(ax, "y", "B")
    _slanted(ax)
    # Below, not beside: a legend beside the memory panel would leave the top row's right end empty.
    handles, labels = ax.get_legend_handles_labels()
    legend_below(fig, handles, labels, ncols=min(len(labels), 4))
    save(fig, out / "comparison_costs.png")
