"""What every figure of the face shares: matplotlib on demand, legends outside the data, SI axes, the time
axis's scale, and saving.

Figures are made with ``new_figure`` (constrained layout, which leaves room for legends placed outside the
axes) and written with ``save``. ``legend_overlaps`` is the check the tests run on every figure: no legend's
box may cover any axes' data area.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

__all__ = ["LOG_TIME_ABOVE_RATIO", "LOG_TIME_MARGIN", "close_figure", "legend_beside", "legend_below",
           "legend_overlaps", "log_time_ticks", "new_figure", "pyplot", "save", "si_axis", "time_axis"]

#: Curves over virtual time share a linear axis while their time spans (last time each reaches) are within
#: this ratio of one another; beyond it the axis is logarithmic (symlog: linear near 0, so t = 0 is drawn),
#: so a variant that ends in 17 s is not squeezed into a corner of a 1,400 s axis.
LOG_TIME_ABOVE_RATIO = 10.0
#: The right end of a log time axis, as a multiple of the longest span: room for the last markers.
LOG_TIME_MARGIN = 1.15
#: A log time axis over at most this many decades has ticks at 1, 2 and 5 per decade, else one per decade.
_TICKS_125_DECADES = 3
DPI = 110


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def new_figure(nrows: int = 1, ncols: int = 1, **kwargs):
    """``(fig, axes)`` as ``plt.subplots`` gives them, with constrained layout."""
    return pyplot().subplots(nrows, ncols, layout="constrained", **kwargs)


def legend_beside(ax, handles=None, labels=None, **kwargs):
    """A legend to the right of ``ax``, outside its data area (constrained layout makes the room)."""
    args = () if handles is None else (handles, labels)
    kwargs = {"fontsize": 7, "frameon": False, **kwargs}
    return ax.legend(*args, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, **kwargs)


def legend_below(fig, handles, labels, ncols: int, **kwargs):
    """One legend for the whole figure, under every axes."""
    kwargs = {"fontsize": 8, "frameon": False, **kwargs}
    return fig.legend(handles, labels, loc="outside lower center", ncols=ncols, **kwargs)


def si_axis(ax, which: str, unit: str) -> None:
    """Tick labels of ``ax``'s ``which`` axis ("x" or "y") with SI prefixes of ``unit`` (``35 MB``,
    ``3 GFLOP``); on a log axis only the decades are labelled, on a linear x axis at most five ticks, so that
    labels never overlap."""
    import matplotlib.ticker as ticker

    axis = ax.xaxis if which == "x" else ax.yaxis
    axis.set_major_formatter(ticker.EngFormatter(unit=unit))
    if (ax.get_xscale() if which == "x" else ax.get_yscale()) == "log":
        axis.set_major_locator(ticker.LogLocator(base=10))
        axis.set_minor_formatter(ticker.NullFormatter())
    elif which == "x":  # labels like "1.5 GFLOP" are wide: fewer of them, so that they never touch
        axis.set_major_locator(ticker.MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10]))


def log_time_ticks(threshold_s: float, right_s: float) -> list[float]:
    """Ticks of a symlog time axis from 0 to ``right_s`` whose linear part ends at ``threshold_s`` (a power of
    10): 0, then 1, 2 and 5 per decade from ``threshold_s`` on while the axis spans at most
    ``_TICKS_125_DECADES`` decades, else one tick per decade (so that the labels never crowd)."""
    decades = max(0, math.ceil(math.log10(right_s / threshold_s)))
    subs = (1, 2, 5) if decades <= _TICKS_125_DECADES else (1,)
    first = round(math.log10(threshold_s))
    ticks = [m * 10.0 ** k for k in range(first, first + decades + 1) for m in subs]
    return [0.0, *(t for t in ticks if t <= right_s * (1 + 1e-9))]


def time_axis(ax, spans_s: Sequence[float], smallest_s: float | None = None) -> bool:
    """Scale ``ax``'s x axis (virtual time, seconds) for curves ending at ``spans_s``: linear while the longest
    span is within ``LOG_TIME_ABOVE_RATIO`` of the shortest positive one, else symlog, linear up to
    ``smallest_s`` (default: the shortest span over 10; rounded down to a power of 10) and logarithmic above,
    with plain tick labels (``log_time_ticks``) and ``LOG_TIME_MARGIN`` of room past the longest span.
    Returns whether it is log."""
    spans = [s for s in spans_s if s > 0]
    if not spans or max(spans) <= LOG_TIME_ABOVE_RATIO * min(spans):
        ax.set_xlabel("virtual time (s)")
        return False
    import matplotlib.ticker as ticker

    threshold = smallest_s if smallest_s and smallest_s > 0 else min(spans) / 10
    threshold = 10.0 ** math.floor(math.log10(threshold))  # a round number for the label and the ticks
    ax.set_xscale("symlog", linthresh=threshold, linscale=0.3)
    right_s = max(spans) * LOG_TIME_MARGIN
    ax.set_xlim(-0.1 * threshold, right_s)  # a little room left of t = 0 too, for the first markers
    ax.xaxis.set_major_locator(ticker.FixedLocator(log_time_ticks(threshold, right_s)))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _pos: f"{x:g}"))
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    ax.set_xlabel(f"virtual time (s, log above {threshold:g} s)")
    return True


def close_figure(fig) -> None:
    """Release ``fig`` (the tests wrap this to inspect every figure before it goes)."""
    pyplot().close(fig)


def save(fig, path: Path) -> None:
    """Write ``fig`` as a PNG at ``path`` and close it."""
    fig.savefig(path, dpi=DPI)
    close_figure(fig)


def legend_overlaps(fig) -> list[tuple[str, str]]:
    """(legend, axes) pairs of ``fig`` where the legend's box (window extent, as drawn) overlaps the axes'
    data area; each named by its first label and its axes' title. Empty for a readable figure."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)]
    out = []
    for legend in legends:
        box = legend.get_window_extent(renderer)
        first = legend.get_texts()[0].get_text() if legend.get_texts() else ""
        out += [(first, ax.get_title() or f"axes {i}") for i, ax in enumerate(fig.axes)
                if box.overlaps(ax.get_window_extent(renderer))]
    return out
