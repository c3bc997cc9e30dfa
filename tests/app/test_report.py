"""The comparison of variants (``fleet.app.comparison``): its tables, CSV and JSON from hand-made summaries,
with exact expected cells."""

from __future__ import annotations

import csv
import json

import pytest

from fleet.app.comparison import CLASS_COLUMNS, class_rows, fmt_bytes, write_comparison
from fleet.app.report import write_comparison as reexported


def summary_of(algorithm: str, peak_bytes: int, demand_by_round: list, accepted: dict, energy: float | None,
               final: float = 0.8) -> dict:
    """A learning-mode summary of two classes, ``small`` (4 devices, 1 MB free) and ``big`` (2, 8 MB free),
    with only the keys the comparison reads."""
    rounds = len(demand_by_round)

    def row(c: str, devices: int, free: int, eligible: int) -> dict:
        return {"devices": devices, "participants": int(sum(accepted[c]) > 0), "updates_accepted": sum(accepted[c]),
                "dropouts": {"memory": 1}, "peak_demand_bytes": peak_bytes, "memory_eligible": eligible,
                "free_bytes_p50": free, "energy_j": None if energy is None else energy / 2,
                "rejoined_after_memory_refusal": 1 if c == "small" and algorithm == "autoprune" else 0}

    fits = int(peak_bytes <= 1_000_000)
    return {"algorithm": algorithm, "rounds": rounds, "rounds_aggregated": rounds, "stopped_by": "completed",
            "sim_time_s": 100.0, "client_tasks": 10, "updates_accepted": 8, "participation_rate": 0.5,
            "round_time_s": {"p50": 1.0, "p90": 2.0, "p99": 3.0}, "dropouts": {"memory": 2, "offline": 0},
            "final_accuracy": final, "best_accuracy": final, "time_to_target_s": None, "target_accuracy": 0.7,
            "participants": 3, "devices": 6, "memory_eligible": 2 + 4 * fits, "client_flops": 2_000_000,
            "bytes_up": 1500, "bytes_down": 2_500_000, "energy_j": energy,
            "demand": {"train": {"peak_memory_bytes": peak_bytes}},
            "by_class": {"big": row("big", 2, 8_000_000, 2), "small": row("small", 4, 1_000_000, 4 * fits)},
            "timeline": {"demand_bytes": demand_by_round,
                         "by_class": {c: {"eligible": [2] * rounds if c == "big" else
                                          [0] + [4 * int(d <= 1_000_000) for d in demand_by_round[1:]],
                                          "dispatched": [0] * rounds,
                                          "accepted": accepted[c], "memory_refused": [0] * rounds,
                                          "participants_so_far": [0] * rounds,
                                          "rejoined_after_memory_refusal": row(c, 1, 1, 1)[
                                              "rejoined_after_memory_refusal"]}
                                      for c in ("big", "small")}}}


SUMMARIES = [("dense", summary_of("fedavg", 2_000_000, [2_000_000] * 3, {"big": [1, 1, 1], "small": [0, 0, 0]},
                                  None, final=0.81)),
             ("shrinks", summary_of("autoprune", 2_000_000, [2_000_000, 900_000, 500_000],
                                    {"big": [1, 1, 0], "small": [0, 2, 2]}, 12.5, final=0.79))]


def test_bytes_are_written_with_si_prefixes():
    assert [fmt_bytes(v) for v in (None, 999, 1000, 469_584, 2_500_000, 7.25e10)] == [
        "n/a", "999 B", "1 kB", "470 kB", "2.5 MB", "72.5 GB"]


def test_class_rows_say_who_fits_and_who_took_part():
    rows = class_rows(SUMMARIES)
    assert [(r["variant"], r["device_class"]) for r in rows] == [
        ("dense", "big"), ("dense", "small"), ("shrinks", "big"), ("shrinks", "small")]
    small = rows[3]
    assert small["peak_fits_p50"] is False and small["free_bytes_p50"] == 1_000_000
    assert small["participants"] == 1 and small["updates_accepted"] == 4 and small["energy_j"] == 6.25
    assert small["rejoined_after_memory_refusal"] == 1 and rows[1]["energy_j"] is None
    assert rows[0]["peak_fits_p50"] is True


def test_the_comparison_tables_hold_each_variants_cells(tmp_path):
    text = write_comparison(SUMMARIES, tmp_path)
    assert reexported is write_comparison  # the CLI imports it from fleet.app.report
    assert text == (tmp_path / "comparison.md").read_text()
    assert "| dense | fedavg | 0.81 | 0.81 | not reached | 3 of 6 | 2 | 2.000e+06 | 1.5 kB | 2.5 MB | n/a | 2 MB |" \
        in text
    assert "| shrinks | autoprune | 0.79 | 0.79 | not reached | 3 of 6 | 2 | 2.000e+06 | 1.5 kB | 2.5 MB | 12.5 | " \
        "2 MB |" in text
    # eligible at t = 0 (-> for the last round's task, when that moved) / took part
    assert "| small | 4 | 0 / 0 | 0 -> 4 / 1 |" in text and "| big | 2 | 2 / 1 | 2 / 1 |" in text
    assert "| small | 1 MB | 2 MB (too big) | 2 MB (too big) -> 500 kB (fits) |" in text  # the model shrank
    assert "| big | 8 MB | 2 MB (fits) | 2 MB (fits) -> 500 kB (fits) |" in text
    assert "| small | n/a | 6.25 |" in text  # energy per class, n/a where the run kept none
    assert "- dense: the task's peak memory stayed at 2 MB." in text
    assert ("- shrinks: the task's peak memory went from 2 MB (round 0) to 500 kB (last round; range 500 kB to "
            "2 MB); devices refused for memory that had an update accepted later: small 1.") in text


def test_the_class_csv_and_the_json_are_strict(tmp_path):
    write_comparison(SUMMARIES, tmp_path)
    with (tmp_path / "comparison_classes.csv").open() as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == CLASS_COLUMNS
    assert rows[4] == ["shrinks", "autoprune", "small", "4", "0", "1", "4", "1", "1", "1000000", "2000000", "0",
                       "6.25"]
    assert rows[2][-1] == ""  # no energy count: an empty cell, never nan
    doc = json.loads((tmp_path / "comparison.json").read_text(),
                     parse_constant=lambda c: pytest.fail(f"comparison.json holds {c}"))
    assert list(doc) == ["dense", "shrinks"] and doc["shrinks"]["timeline"]["demand_bytes"][-1] == 500_000


def test_a_timing_comparison_has_no_learning_tables_but_says_who_took_part(tmp_path):
    """Timing mode answers who could and who did take part per class too (README: comparison_classes.csv for
    any scenario with variants); only accuracy, its timeline and the figures are learning mode's."""
    timing = [(n, {**s, "final_accuracy": None}) for n, s in SUMMARIES]
    text = write_comparison(timing, tmp_path)
    assert "## Rounds" in text and "## Accuracy and cost" not in text
    assert "## Who can take part, per device class" in text and "## Peak demand per class" in text
    with (tmp_path / "comparison_classes.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["variant"], r["device_class"]) for r in rows] == [
        (n, c) for n, s in SUMMARIES for c in s["by_class"]]
    assert not (tmp_path / "comparison.png").exists()


def test_a_demand_that_peaks_in_some_rounds_says_how_many(tmp_path):
    """FedMef's adjustment rounds cost more than its other rounds; the model does not change size."""
    adjusting = [("fedmef", summary_of("fedmef", 742_000, [659_000, 742_000, 659_000, 659_000],
                                       {"big": [1, 1, 1, 1], "small": [0, 0, 0, 0]}, None))]
    text = write_comparison(adjusting, tmp_path)
    assert ("- fedmef: the task's peak memory was 659 kB in round 0 and in the last round, between 659 kB and "
            "742 kB (1 of 4 rounds at 742 kB).") in text
