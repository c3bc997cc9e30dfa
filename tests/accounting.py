"""``assert_accounting(summary)``: every task of a run has exactly one outcome, in ``summary.json``.

Works on any summary dict (timing or learning mode, sync or async, with or without real devices):

    client_tasks = updates_accepted + sum(dropouts) + sum(discarded) + in_flight_at_end

for the run and for every device class, and the round counts add up (``docs/study.md``).
"""

from __future__ import annotations

import json
import math


def assert_accounting(summary: dict) -> None:
    """Raise ``AssertionError`` naming the first figure of ``summary`` that does not add up."""
    def outcomes(s: dict) -> int:
        return (s["updates_accepted"] + sum(s["dropouts"].values()) + sum(s["discarded"].values())
                + s["in_flight_at_end"])

    assert summary["client_tasks"] == outcomes(summary), (
        f"client_tasks {summary['client_tasks']} != accepted {summary['updates_accepted']} + dropouts "
        f"{summary['dropouts']} + discarded {summary['discarded']} + in flight {summary['in_flight_at_end']}")
    by_class = summary["by_class"]
    for cls, row in by_class.items():
        assert row["client_tasks"] == outcomes(row), f"by_class.{cls}: {row}"
    for key in ("client_tasks", "updates_accepted", "in_flight_at_end"):
        assert sum(row[key] for row in by_class.values()) == summary[key], f"by_class sums of {key}"
    for key in ("dropouts", "discarded"):
        for cause, count in summary[key].items():
            assert sum(row[key].get(cause, 0) for row in by_class.values()) == count, f"{key}.{cause}"
    assert min(summary["in_flight_at_end"], *summary["dropouts"].values(),
               *summary["discarded"].values()) >= 0
    assert summary["participants"] == sum(row["participants"] for row in by_class.values())
    assert summary["rounds"] == (summary["rounds_aggregated"] + summary["rounds_failed"]
                                 + summary["empty_rounds"]), "rounds = aggregated + failed + empty"
    assert summary["rounds_unfinished"] in (0, 1)
    assert (summary["unfinished_round_updates"] is None) == (summary["rounds_unfinished"] == 0)
    if summary["stopped_by"] == "completed":
        assert summary["rounds_unfinished"] == 0
    if all(v is None for v in summary["round_time_s"].values()):
        assert summary["rounds"] == summary["empty_rounds"], "round times of rounds that selected someone"
    else:
        assert all(v >= 0 for v in summary["round_time_s"].values()), summary["round_time_s"]
    json.dumps(summary, allow_nan=False)  # strict JSON: no NaN or infinity anywhere
    for key in ("final_accuracy", "final_loss", "best_accuracy"):
        assert summary.get(key) is None or math.isfinite(summary[key]), key
