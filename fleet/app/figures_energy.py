"""``energy.png``: what each device class spent, from ``summary.json``'s ``energy`` (``fleet.app.timeline.
energy_json``). matplotlib is imported when the figure is drawn, never at import; class colours are
``fleet.app.palette``'s, so a class has one colour in every figure."""

from __future__ import annotations

from pathlib import Path

from fleet.app.palette import class_colours, class_order
from fleet.app.plotting import new_figure, save, si_axis

__all__ = ["energy_figure"]


def _battery_panel(ax, classes: list[str], rows: list[dict], colours: dict[str, str]) -> None:
    """Joules drawn from batteries per class; a mains-powered class is marked "mains" at its tick, and a run
    that drew nothing from any battery says so in words, on a 0-based axis (an empty bar chart would get
    matplotlib's symmetric default, -0.05 to 0.05 J)."""
    drained = [row["battery_drained_j"] or 0.0 for row in rows]
    mains = [c for c, row in zip(classes, rows) if not row.get("battery")]
    ax.bar(classes, drained, color=[colours[c] for c in classes])
    ax.set(title="Drawn from batteries")
    if any(drained):
        ax.set_ylim(0, max(drained) * 1.15)
        si_axis(ax, "y", "J")
    else:
        ax.set_ylim(0, 1)
        ax.set_yticks([])
        why = "every class here is mains-powered" if len(mains) == len(classes) else "no battery was used"
        ax.text(0.5, 0.5, f"nothing drawn from batteries\n({why})", transform=ax.transAxes, ha="center",
                va="center", color="0.4")
    for cls in mains:
        ax.text(classes.index(cls), 0, "mains", ha="center", va="bottom", fontsize=8, color="0.4",
                rotation=90 if len(classes) > 6 else 0)  # many classes: upright labels would touch


def energy_figure(energy: dict, out: Path) -> tuple[str, str] | None:
    """Draw ``out/energy.png``: per class, compute and radio joules per accepted update (stacked bars), the
    joules drawn from batteries, and the devices that ran flat; return (file name, title), or None when no
    class spent anything."""
    classes = class_order([c for c, row in energy["by_class"].items() if row["total_j"] > 0])
    if not classes:
        return None
    rows = [energy["by_class"][c] for c in classes]
    colours = class_colours(classes)
    fig, axes = new_figure(1, 3, figsize=(15, 4.8))
    per = [row["per_accepted_update_j"] for row in rows]
    compute = [0.0 if p is None else p["compute_j"] for p in per]
    radio = [0.0 if p is None else p["radio_j"] for p in per]
    ax = axes[0]
    ax.bar(classes, compute, color=[colours[c] for c in classes], label="compute")
    ax.bar(classes, radio, bottom=compute, color=[colours[c] for c in classes], hatch="//", edgecolor="white",
           label="radio")
    ax.set(title="Joules per accepted update (hatched: radio)")
    si_axis(ax, "y", "J")
    _battery_panel(axes[1], classes, rows, colours)
    ax = axes[2]
    flat = [row["devices_ran_flat"] for row in rows]
    ax.bar(classes, flat, color=[colours[c] for c in classes])
    ax.set(title="Devices whose battery ran flat", ylabel="devices", ylim=(0, max(1, *flat) * 1.15))
    ax.yaxis.get_major_locator().set_params(integer=True)
    if not any(flat):
        none = "no battery in this run" if not any(row.get("battery") for row in rows) else "no battery ran flat"
        ax.text(0.5, 0.5, none, transform=ax.transAxes, ha="center", va="center", color="0.4")
    for ax in axes:
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
    save(fig, out / "energy.png")
    return "energy.png", "Energy per device class"
