"""What an outside review of the figures found, held: energy.png of a mains-only run says so in words; the log
time axis has readable ticks and room for the last points; round and version axes have integer ticks and span
the run; participation.png shows discarded updates; comparison_costs.png leaves no quarter empty."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from fleet.app import plotting
from fleet.app.build import build_simulation
from fleet.app.figures import (
    _marked,
    comparison_costs,
    comparison_figure,
    comparison_timeline,
    discards_by_round,
    dropouts,
    participation,
)
from fleet.app.figures_energy import energy_figure
from fleet.app.scenario import Scenario
from fleet.app.study import analyse
from fleet.learning.plane import Evaluation
from tests.app.test_figures_readable import _learning_scenario
from tests.app.test_report import SUMMARIES


def _class_energy(total_j: float, battery: bool) -> dict:
    return {"total_j": total_j, "battery": battery, "battery_drained_j": total_j if battery else None,
            "devices_ran_flat": 0, "per_accepted_update_j": {"compute_j": total_j / 2, "radio_j": total_j / 2}}


def _texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


# --- 1. energy.png ----------------------------------------------------------------------------------------------

def test_a_mains_only_run_says_nothing_was_drawn_from_batteries(tmp_path, drawn):
    energy = {"by_class": {"rpi4_4gb": _class_energy(0.1, False), "rpi_zero2w": _class_energy(0.15, False)}}
    assert energy_figure(energy, tmp_path) == ("energy.png", "Energy per device class")
    _, batteries, flat = drawn[0].axes
    assert batteries.get_title() == "Drawn from batteries"
    assert batteries.get_ylim() == (0.0, 1.0) and list(batteries.get_yticks()) == []  # no negative joules
    assert _texts(batteries) == ["nothing drawn from batteries\n(every class here is mains-powered)",
                                 "mains", "mains"]
    assert _texts(flat) == ["no battery in this run"]


def test_a_mixed_run_draws_battery_joules_from_zero_and_marks_the_mains_class(tmp_path, drawn):
    energy = {"by_class": {"rpi4_4gb": _class_energy(6.0, False), "phone_mid": _class_energy(4.0, True)}}
    energy_figure(energy, tmp_path)
    _, batteries, flat = drawn[0].axes
    assert batteries.get_ylim() == pytest.approx((0.0, 4.0 * 1.15))
    assert [p.get_height() for p in batteries.patches] == [0.0, 4.0]  # catalog order: the Pi, then the phone
    assert [(t.get_text(), t.get_position()) for t in batteries.texts] == [("mains", (0, 0))]
    assert _texts(flat) == ["no battery ran flat"]


# --- 2. the log time axis -------------------------------------------------------------------------------------

def test_log_time_ticks_are_1_2_5_per_decade_then_one_per_decade():
    assert plotting.log_time_ticks(1.0, 90 * plotting.LOG_TIME_MARGIN) == [0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0,
                                                                          100.0]
    assert plotting.log_time_ticks(1.0, 1e6) == [0.0, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6]


def test_the_last_point_of_every_curve_is_marked():
    assert _marked(4) == [0, 1, 2, 3]
    assert _marked(31) == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30]
    assert _marked(32)[-2:] == [30, 31] and _marked(0) == []


def _evaluations(spans_s: dict[str, float]) -> dict[str, list]:
    return {name: [Evaluation(t, v, acc, 1.0, 0, 0, 0) for v, (t, acc) in
                   enumerate(((0.0, 0.1), (spans_s[name] / 3, 0.5), (spans_s[name], s["final_accuracy"])))]
            for name, s in SUMMARIES}


@pytest.mark.slow  # matplotlib: seconds
def test_the_comparisons_log_axis_has_plain_ticks_room_at_the_end_and_integer_versions(tmp_path, drawn):
    evaluations = _evaluations({"dense": 4.0, "shrinks": 90.0})
    comparison_figure([(n, s, evaluations[n]) for n, s in SUMMARIES], tmp_path)
    _, mid, right = drawn[0].axes
    assert right.get_xscale() == "symlog"
    assert right.get_xlim() == pytest.approx((-0.1, 90 * 1.15))  # linear below 1 s (4 s / 3, floored)
    assert list(right.get_xticks()) == [0, 1, 2, 5, 10, 20, 50, 100]
    drawn[0].canvas.draw()
    assert [t.get_text() for t in right.get_xticklabels()] == ["0", "1", "2", "5", "10", "20", "50", "100"]
    assert all(float(t).is_integer() for t in mid.get_xticks())
    assert {line.get_marker() for line in right.get_lines()[:2]} == {"o", "s"}  # the dashed target has none


# --- 3. integer round axes spanning the run -------------------------------------------------------------------

@pytest.mark.slow  # matplotlib: seconds
def test_the_timeline_has_integer_rounds(tmp_path, drawn):
    comparison_timeline([(n, s, []) for n, s in SUMMARIES], tmp_path)
    for ax in drawn[0].axes[:2 * len(SUMMARIES)]:  # the heat maps (their colour bars come after)
        assert ax.get_xlabel() == "round"
        assert [t for t in ax.get_xticks() if -0.5 <= t <= 2.5] == [0, 1, 2]


def test_dropouts_without_any_span_every_round_of_the_run(tmp_path, drawn):
    sim = SimpleNamespace(coordinator=SimpleNamespace(rounds=[SimpleNamespace(round_index=i) for i in range(30)]))
    dropouts(sim, SimpleNamespace(dropouts_by_round={}), tmp_path)
    ax = drawn[0].axes[0]
    assert ax.get_xlim() == pytest.approx((-0.6, 29.6))
    assert all(float(t).is_integer() for t in ax.get_xticks())
    assert _texts(ax) == ["no dropouts in this run"]


# --- 4. participation shows discards --------------------------------------------------------------------------

@pytest.mark.slow  # a small learning run: seconds
def test_participation_shows_the_discards_that_close_the_gap(tmp_path, drawn):
    raw = _learning_scenario().model_dump()
    raw["coordinator"].update(clients_per_round=4, over_selection=0.5)  # two stragglers a round, discarded late
    sim = build_simulation(Scenario.model_validate(raw)).run()
    study = analyse(sim)
    participation(sim, study, tmp_path)
    lines = {line.get_label(): line.get_ydata() for line in drawn[0].axes[0].get_lines()}
    assert list(lines) == ["selected", "updates accepted", "dropouts", "updates discarded\n(late or stale)"]
    discards = discards_by_round(sim)
    assert sum(discards.values()) == sum(sum(c.values()) for c in study.discarded_by_class.values()) > 0
    in_flight = sum(study.in_flight_by_class.values())
    for r, (sel, acc, drop, disc) in enumerate(zip(*lines.values())):
        assert sel - acc - drop - disc == (in_flight if r == len(sim.coordinator.rounds) - 1 else 0)
    legend = [t.get_text() for t in drawn[0].axes[0].get_legend().get_texts()]
    assert legend[-1] == "selected = accepted + dropouts\n+ discarded + still running"


# --- 5. comparison_costs.png uses its width ------------------------------------------------------------------

@pytest.mark.slow  # matplotlib: seconds
def test_the_memory_panel_spans_the_figure_with_its_legend_below(tmp_path, drawn):
    comparison_costs([(n, s, []) for n, s in SUMMARIES], tmp_path)
    fig = drawn[0]
    *costs, memory = fig.axes
    assert len(costs) == 4 and memory.get_legend() is None and len(fig.legends) == 1
    fig.canvas.draw()
    assert memory.get_position().x1 == pytest.approx(costs[-1].get_position().x1, abs=0.02)
    assert plotting.legend_overlaps(fig) == []
