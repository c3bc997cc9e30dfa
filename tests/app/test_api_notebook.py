"""docs/notebook.md cannot rot: its ``python`` blocks run here, in order, in one namespace (from a folder that
sees the repository's scenarios/, so what they write stays in tmp_path), and what the text says they show
is checked."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs/notebook.md"


def _blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.S | re.M)


def test_the_notebook_runs_and_shows_what_it_says(tmp_path, monkeypatch, capsys):
    pytest.importorskip("pandas")
    (tmp_path / "scenarios").symlink_to(ROOT / "scenarios")
    monkeypatch.chdir(tmp_path)
    text = DOC.read_text()
    blocks = _blocks(text)
    assert len(blocks) >= 5
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, block in enumerate(blocks):
            exec(compile(block, f"{DOC}:block{i}", "exec"), namespace)  # noqa: S102 (the doc's own code)
    out = capsys.readouterr().out
    # the straggler study: ten lines, and its quantiles are the summary's
    assert len([line for line in blocks[0].splitlines() if line.strip()]) <= 10
    runs, completion = namespace["runs"], namespace["completion_s"]
    for variant, run in runs.items():
        for cls, row in run.summary["by_class"].items():
            p50 = row["completion_s"]["p50"]
            assert (p50 is None) == ((variant, cls) not in completion.index)
            if p50 is not None:
                assert completion.loc[(variant, cls), 0.5] == pytest.approx(p50, rel=1e-12)
    assert ("sync_deadline", "esp32_s3_psram") not in completion.index
    assert namespace["refusals"][("sync_deadline", "esp32_s3_psram", "deadline")] > 0
    # what the comments say is printed
    error = re.search(r"print\(exc\)  # (.*)", text).group(1)
    assert error in out.splitlines()
    assert "<Run smoke: 50 devices, 5 of 5 rounds aggregated, " in out
    assert (tmp_path / "runs/smoke-from-python/summary.json").exists()
    assert (tmp_path / "runs/stragglers-from-python/comparison.md").exists()
    assert [row["deadline_s"] for row in namespace["rows"]] == [5, 10, 20]
