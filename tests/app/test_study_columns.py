"""The study read as columns and arrays (``fleet.app.study``, ``fleet.app.timeline``) says what one pass over
the rows and one call per device said (``tests/app/row_study.py``, the code it replaced), on runs that have
every outcome: refusals of each cause, interruptions, late and stale updates, lost links, empty rounds."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from fleet.app.build import build_simulation
from fleet.app.scenario import load_variants, parse_scenario
from fleet.app.study import analyse, free_bytes_p50_by_class, memory_eligible_by_class
from fleet.app.timeline import class_energy_j, class_timeline
from fleet.app.view import task_peak_bytes
from tests.app.row_study import analyse_rows, class_energy_j_rows, class_timeline_rows
from tests.app.test_study import _shrinking_run
from tests.sim.test_chain import TIES

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


def _runs():
    yield "ties", parse_scenario(TIES)
    for name, scenario in load_variants(SCENARIOS / "stragglers.yaml", ["mode=timing", "coordinator.rounds=15"]):
        yield f"stragglers-{name}", scenario
    for name, scenario in load_variants(SCENARIOS / "iot_1000.yaml",
                                        ["mode=timing", "coordinator.rounds=10", "fleet.mix.4.link={loss_prob: 0.3}",
                                         "fleet.mix.1.fraction=0"  # an entry with no device
                                         , "fleet.mix.0.fraction=0.15"]):
        if name in ("zo", "autoprune"):
            yield f"iot_1000-{name}", scenario


@pytest.fixture(scope="module", params=list(_runs()), ids=lambda p: p[0])
def sim(request):
    return build_simulation(request.param[1]).run()


def test_the_study_of_columns_is_the_study_of_rows(sim):
    assert analyse(sim) == analyse_rows(sim)


def test_the_timeline_and_the_energy_of_arrays_are_those_of_rows(sim):
    assert class_timeline(sim) == class_timeline_rows(sim)
    assert class_energy_j(sim) == class_energy_j_rows(sim)


def test_free_memory_in_bulk_is_the_per_device_figure(sim):
    fleet = sim.fleet
    demand = task_peak_bytes(sim, "train")
    assert memory_eligible_by_class(sim) == Counter(
        fleet.device_class(d) for d in fleet.devices if fleet.free_bytes_at(d, 0.0) >= demand(d))
    free: dict[str, list[int]] = {}
    for d in fleet.devices:
        free.setdefault(fleet.device_class(d), []).append(fleet.free_bytes_at(d, 0.0))
    import numpy as np

    assert free_bytes_p50_by_class(sim) == {c: int(np.median(v)) for c, v in free.items()}


def test_a_view_without_bulk_readings_is_read_one_device_at_a_time():
    run = _shrinking_run()
    assert class_timeline(run) == class_timeline_rows(run)
