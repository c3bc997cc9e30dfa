"""Figures that read at a glance: one distinct colour per device class, the same in every figure; no legend
over the data (matplotlib's drawn bounding boxes); a log time axis where the variants' spans differ."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from devices.catalog import DEVICE_CLASSES
from fleet.app import plotting
from fleet.app.build import build_simulation
from fleet.app.figures import RUN_FIGURES, comparison_costs, comparison_figure, comparison_timeline
from fleet.app.palette import (
    CAUSE_COLOURS,
    CLASS_COLOURS,
    FALLBACK_COLOURS,
    cause_colours,
    class_colours,
    class_order,
    variant_colours,
    variant_markers,
)
from fleet.app.scenario import Scenario
from fleet.app.study import analyse
from fleet.app.sweep_plan import Setting
from fleet.app.sweep_report import write_report
from fleet.core.messages import CAUSES
from fleet.learning.plane import Evaluation
from tests.app.test_report import SUMMARIES

# --- the palette ----------------------------------------------------------------------------------------------

def _lab(hex_colour: str, deficiency: np.ndarray | None = None) -> np.ndarray:
    """CIELAB (D65) of an sRGB colour, seen through a Machado et al. (2009) simulation matrix if given."""
    rgb = np.array([int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    if deficiency is not None:
        linear = np.clip(deficiency @ linear, 0, 1)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ linear
    f = lambda t: np.where(t > (6 / 29) ** 3, np.cbrt(t), t / (3 * (6 / 29) ** 2) + 4 / 29)  # noqa: E731
    fx, fy, fz = f(xyz / np.array([0.95047, 1.0, 1.08883]))
    return np.array([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)])


DEUTERANOPIA = np.array([[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413],
                         [-0.011820, 0.042940, 0.968881]])
PROTANOPIA = np.array([[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216],
                       [-0.003882, -0.048116, 1.051998]])


def test_every_catalog_class_has_its_own_colour_far_from_every_other():
    assert list(CLASS_COLOURS) == list(DEVICE_CLASSES)
    assert len(set(CLASS_COLOURS.values())) == len(DEVICE_CLASSES)
    for deficiency in (None, DEUTERANOPIA, PROTANOPIA):  # CIE76 distance, at least 15 for every pair
        labs = {c: _lab(h, deficiency) for c, h in CLASS_COLOURS.items()}
        assert min(np.linalg.norm(labs[a] - labs[b]) for a, b in itertools.combinations(labs, 2)) >= 15


def test_a_class_keeps_its_colour_whatever_else_a_figure_shows():
    whole = class_colours(list(DEVICE_CLASSES))
    assert class_colours(["rpi4_4gb", "esp32"]) == {"rpi4_4gb": whole["rpi4_4gb"], "esp32": whole["esp32"]}
    assert class_colours(["esp32"])["esp32"] == whole["esp32"] == class_colours(["phone_high", "esp32"])["esp32"]
    # the pairs, now apart
    assert whole["esp32"] != whole["rpi4_4gb"] and whole["esp32_s3_psram"] != whole["rpi_zero2w"]


def test_unknown_names_get_distinct_colours_unlike_any_class_and_independent_of_order():
    names = ["small", "big", *(f"extra{i}" for i in range(12)), "esp32"]
    colours = class_colours(names)
    assert len(set(colours.values())) == len(names)
    assert not set(colours[n] for n in names if n != "esp32") & set(CLASS_COLOURS.values())
    assert class_colours(names[::-1]) == colours
    assert set(FALLBACK_COLOURS).isdisjoint(CLASS_COLOURS.values())
    assert class_order(["small", "rpi4_4gb", "big", "mcu_tiny", "rpi4_4gb"]) == ["mcu_tiny", "rpi4_4gb", "big",
                                                                                 "small"]


def test_variants_and_causes():
    names = [f"v{i}" for i in range(9)]
    pairs = [(variant_colours(names)[n], variant_markers(names)[n]) for n in names]
    assert len(set(pairs)) == 9 and len(set(c for c, _ in pairs[:7])) == 7
    assert list(CAUSE_COLOURS) == list(CAUSES) and len(set(CAUSE_COLOURS.values())) == len(CAUSES)
    assert cause_colours(["memory", "cosmic ray"]) == {"memory": CAUSE_COLOURS["memory"], "cosmic ray": "#777777"}


# --- every figure, drawn ---------------------------------------------------------------------------------------

def _learning_scenario() -> Scenario:
    """Four classes learning digits; the ESP32s cannot hold the task (memory dropouts)."""
    return Scenario.model_validate({
        "name": "readable", "seed": 3, "mode": "learning",
        "fleet": {"devices": 8, "mix": [
            {"device_class": "esp32", "link_class": "wifi", "fraction": 0.25},
            {"device_class": "rpi_zero2w", "link_class": "wifi", "fraction": 0.25},
            {"device_class": "rpi4_4gb", "link_class": "ethernet", "fraction": 0.25},
            {"device_class": "esp32_s3_psram", "link_class": "wifi", "fraction": 0.25}]},
        "data": {"dataset": "digits", "partition": "iid"},
        "algorithm": {"name": "fedavg", "params": {"model": "mlp", "batch_size": 16, "local_steps": 2}},
        "coordinator": {"mode": "sync", "rounds": 3, "clients_per_round": 8, "over_selection": 0.0,
                        "quorum": 0.25},
        "evaluation": {"interval_s": 1.0}, "executor": {"backend": "sequential"}})


def _overlaps(figures) -> dict:
    return {fig.get_suptitle() or fig.axes[0].get_title(): plotting.legend_overlaps(fig) for fig in figures}


@pytest.mark.slow  # a small learning run and five figures: seconds
def test_no_legend_of_a_run_figure_covers_data_and_classes_keep_their_colours(tmp_path, drawn):
    sim = build_simulation(_learning_scenario()).run()
    study = analyse(sim)
    made = [m for draw in RUN_FIGURES if (m := draw(sim, study, tmp_path)) is not None]
    assert [name for name, _ in made] == ["accuracy.png", "participation.png", "dropouts.png",
                                          "completion_cdf.png", "memory.png"]
    assert all(overlaps == [] for overlaps in _overlaps(drawn).values()), _overlaps(drawn)
    assert sum(fig.legends != [] or any(ax.get_legend() for ax in fig.axes) for fig in drawn) >= 4
    cdf = drawn[3]
    for line in cdf.axes[0].get_lines():
        assert line.get_color() == CLASS_COLOURS[line.get_label()]
    assert len(cdf.axes[0].get_lines()) >= 2


def _evaluations(spans_s: dict[str, float]) -> dict[str, list]:
    return {name: [Evaluation(t, v, acc, 1.0, 0, 0, 0) for v, (t, acc) in
                   enumerate(((0.0, 0.1), (spans_s[name] / 3, 0.5), (spans_s[name], s["final_accuracy"])))]
            for name, s in SUMMARIES}


@pytest.mark.parametrize("spans_s, scale", [({"dense": 17.0, "shrinks": 1400.0}, "symlog"),
                                            ({"dense": 30.0, "shrinks": 40.0}, "linear")])
def test_the_time_axis_is_log_when_the_variants_spans_differ(tmp_path, drawn, spans_s, scale):
    evaluations = _evaluations(spans_s)
    runs = [(n, s, evaluations[n]) for n, s in SUMMARIES]
    comparison_figure(runs, tmp_path)
    left, _, right = drawn[0].axes
    assert right.get_xscale() == scale
    assert 1400 / 17 > plotting.LOG_TIME_ABOVE_RATIO >= 40 / 30
    # the classes' bars carry the palette's colours, and the variants' lines theirs
    assert {p.get_facecolor()[:3] for p in left.patches} == {
        tuple(int(CLASS_COLOURS.get(c, class_colours(["big", "small"])[c])[i:i + 2], 16) / 255 for i in (1, 3, 5))
        for c in ("big", "small")}


@pytest.mark.slow  # matplotlib: seconds
def test_no_legend_of_a_comparison_or_sweep_figure_covers_data(tmp_path, drawn):
    evaluations = _evaluations({"dense": 17.0, "shrinks": 1400.0})
    runs = [(n, s, evaluations[n]) for n, s in SUMMARIES]
    for draw in (comparison_figure, comparison_timeline, comparison_costs):
        draw(runs, tmp_path)
    a, b = Setting("lr=0.1", (("lr", "0.1"),)), Setting("lr=0.3", (("lr", "0.3"),))
    summary = {"final_accuracy": 0.5, "participation_rate": 0.5, "client_flops": 3e9, "bytes_up": 2e6,
               "dropouts": {"memory": 1}, "round_time_s": {"p50": 2.0}}
    write_report({(a, "zo"): [summary, {**summary, "final_accuracy": 0.6}], (b, "zo"): [summary],
                  (a, "fedavg"): [summary], (b, "fedavg"): [summary]}, ["lr"], tmp_path, "T", [])
    assert len(drawn) == 4 and (tmp_path / "sweep.png").exists()
    assert all(overlaps == [] for overlaps in _overlaps(drawn).values()), _overlaps(drawn)
    assert all(fig.legends or any(ax.get_legend() for ax in fig.axes) for fig in (drawn[0], drawn[2], drawn[3]))


def test_the_overlap_check_sees_a_legend_inside_the_axes(drawn):
    fig, ax = plotting.new_figure()
    ax.plot([0, 1], [0, 1], label="inside")
    ax.legend(loc="center")
    assert plotting.legend_overlaps(fig) == [("inside", "axes 0")]
    plotting.legend_beside(ax)
    assert plotting.legend_overlaps(fig) == []
    drawn.append(fig)
