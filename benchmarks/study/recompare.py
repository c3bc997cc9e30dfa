"""Redraw a finished multi-variant run's comparison from its files, without running anything again.

    .venv/bin/python benchmarks/study/recompare.py OUT      # OUT as given to python -m fleet.run --out

Reads ``OUT/<variant>/summary.json`` and ``evaluations.csv`` (variants in the order of ``OUT/comparison.json``
when present, else by name) and rewrites ``OUT/comparison.md``, its CSV, JSON and figures.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fleet.app.comparison import write_comparison  # noqa: E402
from fleet.learning.plane import Evaluation  # noqa: E402


def _evaluations(path: Path) -> list[Evaluation]:
    with path.open() as f:
        return [Evaluation(float(r["time_s"]), int(r["model_version"]),
                           float(r["accuracy"]) if r["accuracy"] else float("nan"),
                           float(r["loss"]) if r["loss"] else float("nan"), int(r["client_flops"]),
                           int(r["bytes_up"]), int(r["bytes_down"])) for r in csv.DictReader(f)]


def main(out: Path) -> None:
    order = list(json.loads((out / "comparison.json").read_text())) if (out / "comparison.json").exists() else \
        sorted(p.parent.name for p in out.glob("*/summary.json"))
    summaries = [(name, json.loads((out / name / "summary.json").read_text())) for name in order]
    evaluations = {name: _evaluations(out / name / "evaluations.csv") for name in order
                   if (out / name / "evaluations.csv").exists()}
    print(write_comparison(summaries, out, evaluations or None))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
