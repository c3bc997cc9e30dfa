"""The participation timeline (``fleet.app.timeline``) and the per-class figures the summary adds: exact values
on a hand-made event log, and the identities a real timing run satisfies."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from fleet.app.build import build_simulation
from fleet.app.scenario import Scenario
from fleet.app.study import analyse, summary
from fleet.app.timeline import SERIES, class_energy_j, class_timeline, timeline_json
from fleet.core.recorder import EventRecorder
from tests.accounting import assert_accounting

MB = 1_000_000


class _Fleet:
    """Devices 0, 1 of class ``small`` (free memory 2 MB, then 5 MB from t = 10 s), 2 of ``big`` (100 MB)."""

    devices = range(3)

    def device_class(self, d: int) -> str:
        return "big" if d == 2 else "small"

    def free_bytes_at(self, d: int, t_s: float) -> int:
        return 100 * MB if d == 2 else (2 * MB if t_s < 10 else 5 * MB)

    def is_real(self, d: int) -> bool:
        return False


def _shrinking_run() -> SimpleNamespace:
    """Three rounds whose task shrinks from 4 MB to 3 MB to 1 MB (a model pruned structurally).

    Round 0 (t = 0): all three dispatched; the small devices refuse for memory, the big one updates.
    Round 1 (t = 10): devices 0 and 2 dispatched at 3 MB; device 0 updates (it now fits), device 2 is offline.
    Round 2 (t = 20): devices 1 and 2 at 1 MB; both update; device 1's first refusal was in round 0."""
    rec = EventRecorder()
    rec.record(0.0, "round_start", 0)
    for task, dev in enumerate((0, 1, 2)):
        rec.record(0.0, "dispatch", 0, dev, task, None, 0, 4 * MB)
    rec.record(0.1, "refusal", 0, 0, 0, "memory", demand_bytes=4 * MB, free_bytes=2 * MB)
    rec.record(0.1, "refusal", 0, 1, 1, "memory", demand_bytes=4 * MB, free_bytes=2 * MB)
    rec.record(0.1, "dropout", 0, 1, 1, "memory")  # a second terminal row of task 1: counted once
    rec.record(1.0, "update", 0, 2, 2, None, 0)
    rec.record(10.0, "dispatch", 1, 0, 3, None, 1, 3 * MB)
    rec.record(10.0, "dispatch", 1, 2, 4, None, 1, 3 * MB)
    rec.record(10.5, "refusal", 1, 2, 4, "offline")
    rec.record(11.0, "update", 1, 0, 3, None, 1)
    rec.record(20.0, "dispatch", 2, 1, 5, None, 2, 1 * MB)
    rec.record(20.0, "dispatch", 2, 2, 6, None, 2, 1 * MB)
    rec.record(21.0, "update", 2, 1, 5, None, 2)
    rec.record(21.0, "update", 2, 2, 6, None, 2)
    rounds = [SimpleNamespace(round_index=r) for r in range(3)]
    return SimpleNamespace(fleet=_Fleet(), kernel=SimpleNamespace(recorder=rec),
                           coordinator=SimpleNamespace(rounds=rounds, unfinished_round=None),
                           devices=SimpleNamespace())


def test_the_timeline_of_a_shrinking_task_shows_who_could_and_who_did_join_round_by_round():
    t = class_timeline(_shrinking_run())
    assert t.demand_bytes == [4 * MB, 3 * MB, 1 * MB]
    s = t.series
    # Round 0 at t = 0: the small devices have 2 MB < 4 MB; from t = 10 they have 5 MB, enough for 3 MB and 1 MB.
    assert s["eligible"] == {"big": [1, 1, 1], "small": [0, 2, 2]}
    assert s["dispatched"] == {"big": [1, 1, 1], "small": [2, 1, 1]}
    assert s["accepted"] == {"big": [1, 0, 1], "small": [0, 1, 1]}
    assert s["memory_refused"] == {"big": [0, 0, 0], "small": [2, 0, 0]}
    assert s["participants_so_far"] == {"big": [1, 1, 1], "small": [0, 1, 2]}
    assert t.rejoined == {"big": 0, "small": 2}


def test_timeline_json_holds_every_series_per_class_and_nothing_that_is_not_json():
    doc = timeline_json(class_timeline(_shrinking_run()))
    assert doc["demand_bytes"] == [4 * MB, 3 * MB, 1 * MB]
    assert list(doc["by_class"]) == ["big", "small"]
    assert set(doc["by_class"]["small"]) == {*SERIES, "rejoined_after_memory_refusal"}
    assert doc["by_class"]["small"]["rejoined_after_memory_refusal"] == 2


def test_a_round_that_dispatched_nothing_has_no_demand_and_no_eligible_device():
    sim = _shrinking_run()
    sim.coordinator.rounds.append(SimpleNamespace(round_index=3))  # an empty round at the end
    t = class_timeline(sim)
    assert t.demand_bytes[3] is None
    assert t.series["eligible"] == {"big": [1, 1, 1, 0], "small": [0, 2, 2, 0]}
    assert t.series["participants_so_far"]["small"][3] == 2


def test_energy_per_class_sums_the_devices_counters():
    sim = _shrinking_run()
    sim.devices = SimpleNamespace(energy_spent_j=lambda d: [1.5, 2.0, 10.25][d])
    assert class_energy_j(sim) == {"big": 10.25, "small": 3.5}


def _timing_scenario() -> Scenario:
    """Two MCUs that can never hold the CNN's training task and two Raspberry Pis that can."""
    return Scenario.model_validate({
        "name": "classes", "seed": 3, "mode": "timing",
        "fleet": {"devices": 4, "mix": [{"device_class": "mcu_tiny", "link_class": "wifi", "fraction": 0.5},
                                        {"device_class": "rpi4_4gb", "link_class": "ethernet", "fraction": 0.5}]},
        "algorithm": {"name": "fedavg", "params": {"model": "cnn", "batch_size": 32, "local_steps": 2}},
        "coordinator": {"mode": "sync", "rounds": 3, "clients_per_round": 4, "over_selection": 0.0,
                        "quorum": 0.5}})


@pytest.fixture(scope="module")
def timing_summary() -> dict:
    sim = build_simulation(_timing_scenario()).run()
    return summary(sim, analyse(sim), sim.kernel.recorder.sha256())


def test_a_timing_run_timeline_adds_up_to_the_per_class_study(timing_summary):
    s = timing_summary
    assert_accounting(s)
    by_class, tl = s["by_class"], s["timeline"]["by_class"]
    assert len(s["timeline"]["demand_bytes"]) == s["rounds"] == 3
    for c, row in by_class.items():
        assert sum(tl[c]["accepted"]) == row["updates_accepted"]
        assert sum(tl[c]["dispatched"]) == row["client_tasks"]
        assert sum(tl[c]["memory_refused"]) == row["dropouts"].get("memory", 0)
        assert tl[c]["participants_so_far"][-1] == row["participants"]
    # Every round selects all four; the MCUs refuse for memory each time, the Pis update.
    assert tl["mcu_tiny"]["eligible"] == [0, 0, 0] and by_class["mcu_tiny"]["memory_eligible"] == 0
    assert tl["mcu_tiny"]["memory_refused"] == [2, 2, 2] and tl["mcu_tiny"]["participants_so_far"] == [0, 0, 0]
    assert tl["rpi4_4gb"]["eligible"] == [2, 2, 2] and by_class["rpi4_4gb"]["memory_eligible"] == 2
    assert tl["rpi4_4gb"]["accepted"] == [2, 2, 2]
    assert s["memory_eligible"] == 2
    assert by_class["rpi4_4gb"]["free_bytes_p50"] > by_class["mcu_tiny"]["free_bytes_p50"] > 0


def test_energy_is_spent_by_the_classes_that_computed(timing_summary):
    by_class = timing_summary["by_class"]
    assert by_class["mcu_tiny"]["energy_j"] == 0.0  # refused for memory: nothing computed, nothing sent
    assert by_class["rpi4_4gb"]["energy_j"] > 0.0
    assert timing_summary["energy_j"] == pytest.approx(sum(row["energy_j"] for row in by_class.values()))
