"""The comparison figures: the data they draw (exact) and that each is written as a PNG."""

from __future__ import annotations

import numpy as np
import pytest

from fleet.app.comparison import write_comparison
from fleet.app.figures import timeline_grid
from fleet.learning.plane import Evaluation
from tests.app.test_report import SUMMARIES


def test_timeline_grid_is_classes_by_rounds_and_a_share_of_each_class():
    summary = SUMMARIES[1][1]
    classes, counts = timeline_grid(summary, "accepted")
    assert classes == ["big", "small"]
    np.testing.assert_array_equal(counts, [[1, 1, 0], [0, 2, 2]])
    summary = {**summary, "timeline": {**summary["timeline"], "by_class": {
        c: {**row, "eligible": [2, 1, 0] if c == "big" else [0, 2, 4]}
        for c, row in summary["timeline"]["by_class"].items()}}}
    _, share = timeline_grid(summary, "eligible", share=True)
    np.testing.assert_array_equal(share, [[1.0, 0.5, 0.0], [0.0, 0.5, 1.0]])


@pytest.mark.slow  # matplotlib: seconds
def test_a_learning_comparison_draws_its_three_figures(tmp_path):
    evaluations = {name: [Evaluation(t, v, acc, 1.0, 0, 0, 0) for v, (t, acc) in
                          enumerate(((0.0, 0.1), (10.0, 0.5), (30.0, s["final_accuracy"])))]
                   for name, s in SUMMARIES}
    text = write_comparison(SUMMARIES, tmp_path, evaluations)
    for name in ("comparison.png", "comparison_timeline.png", "comparison_costs.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name})" in text
