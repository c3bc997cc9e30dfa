"""The report of a sweep: the study's figures per setting and variant over seeds, as sweep.md, sweep.csv and
sweep.png.

It reads only the runs' ``summary.json`` (``fleet.app.study.summary``). Each figure is described by
``fleet.app.sweep_stats.describe`` over the seeds that have a value (a time to target that was never reached,
an accuracy in timing mode, a round time with no round: no value, so ``n`` says how many seeds had one).
Each interval is clipped to its figure's physical range (``RANGES``: never negative for times, counts, bytes
and FLOPs; [0, 1] for accuracies and participation), and the markdown marks a clipped one with ``CLIP_MARK``.
Outputs are strict: an empty CSV cell and ``n/a`` in the table for "no value", never NaN.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from fleet.app.comparison import fmt, markdown_rows
from fleet.app.sweep_plan import Setting
from fleet.app.sweep_stats import Spread, describe
from fleet.core.messages import CAUSES

__all__ = ["CSV_COLUMNS", "FIGURES", "HEADLINE", "RANGES", "Cell", "aggregate", "bounds_of", "figures_for",
           "write_report"]

#: (figure id: a dotted path into summary.json, label), in the order the report shows them; one
#: ``dropouts.<cause>`` per dropout cause is added after participation (``figures_for``).
FIGURES = (("final_accuracy", "final accuracy"), ("best_accuracy", "best accuracy"),
           ("time_to_target_s", "time to target (s)"), ("participation_rate", "participation"),
           ("round_time_s.p50", "round time p50 (s)"), ("round_time_s.p90", "round time p90 (s)"),
           ("client_flops", "client FLOPs"), ("bytes_up", "bytes up"), ("bytes_down", "bytes down"))
#: The figures of the headline table (one column each: mean ± half the 95 % interval).
HEADLINE = ("final_accuracy", "best_accuracy", "time_to_target_s", "participation_rate", "round_time_s.p50",
            "round_time_s.p90", "client_flops")
CSV_COLUMNS = ("variant", "figure", "runs", "n", "mean", "sd", "ci95_low", "ci95_high", "ci95_clipped", "min", "max")

_COUNT = (0.0, math.inf)  # times, counts, bytes, FLOPs: never negative
_FRACTION = (0.0, 1.0)  # accuracies, rates, fractions
#: The physical range of each reported figure, to which its interval is clipped (``describe``'s ``bounds``);
#: ``dropouts.*`` stands for every ``dropouts.<cause>``. A figure not named here is not clipped.
RANGES: dict[str, tuple[float, float]] = {
    "final_accuracy": _FRACTION, "best_accuracy": _FRACTION, "time_to_target_s": _COUNT,
    "participation_rate": _FRACTION, "dropouts.*": _COUNT, "round_time_s.p50": _COUNT,
    "round_time_s.p90": _COUNT, "client_flops": _COUNT, "bytes_up": _COUNT, "bytes_down": _COUNT}


def bounds_of(figure: str) -> tuple[float, float] | None:
    """The physical range of ``figure`` (``RANGES``), or None when it has none (its interval is not clipped)."""
    if figure in RANGES:
        return RANGES[figure]
    return RANGES.get(figure.rsplit(".", 1)[0] + ".*") if "." in figure else None


@dataclass(frozen=True)
class Cell:
    """One figure of one setting and variant over the seeds: ``runs`` finished runs, ``spread`` of the values."""

    setting: Setting
    variant: str
    figure: str
    label: str
    runs: int
    spread: Spread


def _get(summary: dict, path: str):
    node = summary
    for key in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node if isinstance(node, (int, float)) and not isinstance(node, bool) else None


def figures_for(summaries: list[dict]) -> list[tuple[str, str]]:
    """``FIGURES`` with one ``dropouts.<cause>`` per cause (the known causes, then any other the runs name)."""
    causes = list(CAUSES)
    for s in summaries:
        causes += [c for c in (s.get("dropouts") or {}) if c not in causes]
    at = [f for f, _ in FIGURES].index("participation_rate") + 1
    return [*FIGURES[:at], *((f"dropouts.{c}", f"dropouts: {c}") for c in causes), *FIGURES[at:]]


def aggregate(groups: dict[tuple[Setting, str], list[dict]], level: float = 0.95) -> list[Cell]:
    """One ``Cell`` per (setting, variant) of ``groups`` (their finished runs' summaries) and figure, its
    interval clipped to the figure's physical range (``RANGES``)."""
    figures = figures_for([s for runs in groups.values() for s in runs])
    return [Cell(setting, variant, figure, label, len(runs),
                 describe([_get(s, figure) for s in runs], level, bounds_of(figure)))
            for (setting, variant), runs in groups.items() for figure, label in figures]


def _num(v: float | None) -> str:
    return "" if v is None or not math.isfinite(v) else repr(float(v))


def write_csv(cells: list[Cell], keys: list[str], path: Path) -> None:
    """``sweep.csv``: one row per setting × variant × figure; a column per grid key holds its raw value."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["setting", *keys, *CSV_COLUMNS])
        for c in cells:
            values = dict(c.setting.values)
            s = c.spread
            clipped = "" if s.ci_low is None else str(s.clipped).lower()
            w.writerow([c.setting.name, *(values.get(k, "") for k in keys), c.variant, c.figure, c.runs, s.n,
                        *(_num(v) for v in (s.mean, s.sd, s.ci_low, s.ci_high)), clipped,
                        *(_num(v) for v in (s.min, s.max))])


CLIP_MARK = "†"  # marks an interval cut to its figure's physical range


def _interval(s: Spread) -> str:
    """``[low, high]``, marked when clipped; ``n/a`` without an interval."""
    if s.ci_low is None:
        return "n/a"
    return f"[{fmt(s.ci_low)}, {fmt(s.ci_high)}]" + (CLIP_MARK if s.clipped else "")


def _pm(c: Cell) -> str:
    """``mean ± half-width`` (``mean [low, high]†`` when the interval is clipped), and ``(n of runs)`` when
    some runs had no value."""
    s = c.spread
    if s.n == 0:
        return "n/a"
    if s.ci_low is None:
        text = fmt(s.mean)
    elif s.clipped:
        text = f"{fmt(s.mean)} {_interval(s)}"
    else:
        text = f"{fmt(s.mean)} ± {fmt(s.half_width)}"
    return text if s.n == c.runs else f"{text} ({s.n} of {c.runs})"


def _markdown(cells: list[Cell], title: str, intro: list[str], level: float, show_variant: bool = True) -> str:
    """The report; ``show_variant``: a ``variant`` column in each table (False when the scenario has no
    variants: the one "variant" would be the scenario's name)."""
    pct = f"{level:.0%}".replace("%", " %")
    labels = dict((c.figure, c.label) for c in cells)
    present = [f for f in labels if any(c.spread.n for c in cells if c.figure == f)]
    absent = [labels[f] for f in labels if f not in present]
    zero = [f for f in present if all(c.spread.n == 0 or c.spread.min == c.spread.max == 0
                                      for c in cells if c.figure == f)]
    by = {(c.setting.name, c.variant, c.figure): c for c in cells}
    groups = list(dict.fromkeys((c.setting.name, c.variant) for c in cells))
    head = [f for f in HEADLINE if f in present]
    runs = {(c.setting.name, c.variant): c.runs for c in cells}
    lines = [f"# {title}", "", *intro, "",
             "Each figure over the seeds of a setting and variant: the mean, the sample standard deviation (sd) and "
             f"the {pct} t interval of the mean (mean ± t({0.5 + level / 2:g}, n-1) · sd / √n); n counts the seeds "
             "with a value (a time to target counts only the seeds that reached the target). One run gives no sd or "
             f"interval. An interval that would go past the figure's physical range is clipped to it and marked "
             f"{CLIP_MARK}.",
             "", f"## Headline (mean ± half the {pct} interval; mean [low, high]{CLIP_MARK} when clipped)", ""]
    named = (lambda s, v: [s, v]) if show_variant else (lambda s, v: [s])
    lead = ["setting", "variant"] if show_variant else ["setting"]
    lines += markdown_rows([*lead, "runs", *(labels[f] for f in head)],
                           [[*named(s, v), str(runs[(s, v)]), *(_pm(by[(s, v, f)]) for f in head)]
                            for s, v in groups])
    lines += ["", "## Every figure", ""]
    for figure in (f for f in present if f not in zero):
        rows = []
        for s, v in groups:
            sp = by[(s, v, figure)].spread
            rows.append([*named(s, v), str(sp.n), fmt(sp.mean), fmt(sp.sd), _interval(sp), fmt(sp.min),
                         fmt(sp.max)])
        lines += [f"### {labels[figure]} (`{figure}`)", "",
                  *markdown_rows([*lead, "n", "mean", "sd", f"{pct} interval", "min", "max"], rows), ""]
    if any(c.spread.clipped for c in cells):
        lines += [f"{CLIP_MARK} The interval is clipped to the figure's physical range (times, counts, bytes and "
                  "FLOPs are never negative; accuracies, rates and participation lie in [0, 1]): mean ± the t "
                  "half-width went past it, so it is shown as [low, high].", ""]
    if zero:
        lines += ["Zero in every run: " + ", ".join(labels[f] for f in zero) + ".", ""]
    if not any(c.runs for c in cells):
        lines += ["No run finished: no figure has a value (the intro above says which runs failed).", ""]
    elif absent:
        lines += ["No value in any finished run (timing mode, or never reached): " + ", ".join(absent) + ".", ""]
    lines += ["![every figure with its interval](sweep.png)", ""]
    return "\n".join(lines)


#: The SI unit of a figure's axis, by figure id (``dropouts.*`` and accuracies have none).
_UNITS = {"time_to_target_s": "s", "round_time_s.p50": "s", "round_time_s.p90": "s", "client_flops": "FLOP",
          "bytes_up": "B", "bytes_down": "B"}


def draw(cells: list[Cell], path: Path, level: float = 0.95) -> bool:
    """``sweep.png``: per figure with a non-zero value, each variant's mean per setting with its interval as error
    bars (no bar below two seeds), one colour and marker per variant (``fleet.app.palette``) and one legend under
    the panels. False when there is nothing to draw."""
    figures = [f for f in dict.fromkeys(c.figure for c in cells if c.spread.n)
               if any(c.spread.n and (c.spread.min, c.spread.max) != (0, 0) for c in cells if c.figure == f)]
    if not figures:
        return False
    from fleet.app.palette import variant_colours, variant_markers
    from fleet.app.plotting import legend_below, new_figure, save, si_axis

    settings = list(dict.fromkeys(c.setting.name for c in cells))
    variants = list(dict.fromkeys(c.variant for c in cells))
    colours, markers = variant_colours(variants), variant_markers(variants)
    labels = dict((c.figure, c.label) for c in cells)
    by = {(c.setting.name, c.variant, c.figure): c.spread for c in cells}
    ncols = min(3, len(figures))
    nrows = math.ceil(len(figures) / ncols)
    fig, axes = new_figure(nrows, ncols, figsize=(4.2 * ncols, 0.6 + 3.0 * nrows), squeeze=False)
    width = 0.8 / len(variants)
    for ax, figure in zip(axes.flat, figures):
        for j, variant in enumerate(variants):
            xs, ys, errs = [], [], []
            for i, setting in enumerate(settings):
                sp = by.get((setting, variant, figure))
                if sp is not None and sp.n:
                    xs.append(i - 0.4 + width * (j + 0.5))
                    ys.append(sp.mean)
                    low, high = (sp.mean, sp.mean) if sp.ci_low is None else (sp.ci_low, sp.ci_high)
                    errs.append((sp.mean - low, high - sp.mean))  # clipped to the physical range
            yerr = [[e[0] for e in errs], [e[1] for e in errs]] if errs else None
            ax.errorbar(xs, ys, yerr=yerr, fmt=markers[variant], color=colours[variant], capsize=3, label=variant)
        # the ticks carry the unit (ms, GFLOP, kB): a title's "(s)" would contradict "300 ms"
        ax.set_title(labels[figure].removesuffix(" (s)") if figure in _UNITS else labels[figure], fontsize=9)
        if figure in _UNITS:
            si_axis(ax, "y", _UNITS[figure])
        ax.set_xticks(range(len(settings)))
        ax.set_xlim(-0.6, len(settings) - 0.4)
        ax.set_xticklabels(settings, rotation=30, ha="right", fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(figures):]:
        ax.axis("off")
    if len(variants) > 1:
        handles, names = axes.flat[0].get_legend_handles_labels()
        legend_below(fig, handles, names, ncols=min(len(variants), 6))
    pct = f"{level:.0%}".replace("%", " %")
    fig.suptitle(f"Mean over the seeds per setting and variant; bars: the {pct} interval of the mean (none below "
                 "two seeds)", fontsize=10)
    save(fig, path)
    return True


def write_report(groups: dict[tuple[Setting, str], list[dict]], keys: list[str], out: Path, title: str,
                 intro: list[str], level: float = 0.95, figure: bool = True, show_variant: bool = True) -> str:
    """Write ``sweep.csv``, ``sweep.md`` and (``figure``) ``sweep.png`` into ``out``; return the markdown.
    ``show_variant``: the markdown's tables have a ``variant`` column (the CSV always has one)."""
    cells = aggregate(groups, level)
    write_csv(cells, keys, out / "sweep.csv")
    drawn = figure and draw(cells, out / "sweep.png", level)
    text = _markdown(cells, title, intro, level, show_variant)
    if not drawn:
        text = text.replace("![every figure with its interval](sweep.png)\n", "")
    (out / "sweep.md").write_text(text)
    return text
