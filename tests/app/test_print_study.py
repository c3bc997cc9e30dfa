"""The printed study (``fleet.app.report.print_study``): rich tables in a terminal; piped, plain Markdown whose
table rows are one line each, whatever the console's width."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from fleet.app.build import build_simulation
from fleet.app.printing import Line, Table, markdown_table, write_items
from fleet.app.report import STUDY_CLASS_COLUMNS, print_study
from fleet.app.run import main
from fleet.app.scenario import Scenario
from fleet.app.study import analyse, summary

ROOT = Path(__file__).resolve().parents[2]
HEADER = "| " + " | ".join(STUDY_CLASS_COLUMNS) + " |"
BOX = set("─│┃━┏┓┗┛┡┩╇╈┼┬┴├┤└┘┌┐═║")


@pytest.fixture(scope="module")
def summ() -> dict:
    """A timing run of three classes, the MCU unable to hold the CNN (memory dropouts fill its cells)."""
    scenario = Scenario.model_validate({
        "name": "printed", "seed": 4, "mode": "timing",
        "fleet": {"devices": 6, "mix": [
            {"device_class": "mcu_tiny", "link_class": "wifi", "fraction": 0.34},
            {"device_class": "rpi4_4gb", "link_class": "ethernet", "fraction": 0.33},
            {"device_class": "esp32_s3_psram", "link_class": "wifi", "fraction": 0.33}]},
        "algorithm": {"name": "fedavg", "params": {"model": "cnn", "batch_size": 32, "local_steps": 2}},
        "coordinator": {"mode": "sync", "rounds": 3, "clients_per_round": 6, "over_selection": 0.0,
                        "quorum": 0.3}})
    sim = build_simulation(scenario).run()
    return {**summary(sim, analyse(sim), sim.kernel.recorder.sha256()), "wall_s": 0.5}


def _printed(summ: dict, **console) -> str:
    buffer = io.StringIO()
    print_study(Console(file=buffer, **console), summ, Path("out"))
    return buffer.getvalue()


def _table_rows(text: str) -> list[list[str]]:
    lines = text.splitlines()
    at = lines.index(HEADER)
    assert lines[at + 1] == "|" + "---|" * len(STUDY_CLASS_COLUMNS)
    rows = []
    for line in lines[at + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def test_piped_the_study_is_a_markdown_table_with_one_line_per_class(summ):
    text = _printed(summ, width=80)  # a StringIO is not a terminal
    assert not BOX & set(text)
    rows = _table_rows(text)
    assert [r[0] for r in rows] == list(summ["by_class"])  # one row per class, in the summary's order
    assert all(len(r) == len(STUDY_CLASS_COLUMNS) for r in rows)
    mcu = rows[[r[0] for r in rows].index("mcu_tiny")]
    assert mcu[1] == str(summ["by_class"]["mcu_tiny"]["devices"])
    assert mcu[4] == " ".join(f"{c}:{k}" for c, k in summ["by_class"]["mcu_tiny"]["dropouts"].items())
    # Nothing wraps at the console's 80 columns: the same text at any width, with lines longer than 80.
    assert max(len(line) for line in text.splitlines()) > 80
    assert _printed(summ, width=200) == text
    assert text.splitlines()[0].startswith("printed: 6 devices, 3 rounds")
    assert text.rstrip().endswith("outputs in out")


def test_in_a_terminal_the_study_keeps_rich_tables(summ):
    text = _printed(summ, width=200, force_terminal=True, color_system=None)
    assert BOX & set(text) and HEADER not in text
    assert "by device class" in text and "mcu_tiny" in text


def test_the_flag_overrides_the_console(summ):
    buffer = io.StringIO()
    print_study(Console(file=buffer, force_terminal=True, color_system=None), summ, Path("out"), markdown=True)
    assert HEADER in buffer.getvalue()


def test_a_pipe_in_a_cell_is_escaped_and_a_table_is_title_blank_header_rule_rows():
    table = Table("t", ("a", "b"), (("x|y", "1"),))
    assert markdown_table(table) == ["t", "", "| a | b |", "|---|---|", "| x\\|y | 1 |"]
    buffer = io.StringIO()
    write_items(Console(file=buffer, width=20), [Line("styled", "bold"), "[bold]not markup[/] " + "w" * 30, table],
                markdown=True)
    assert buffer.getvalue().splitlines() == ["styled", "[bold]not markup[/] " + "w" * 30, "", "t", "", "| a | b |",
                                              "|---|---|", "| x\\|y | 1 |", ""]


def test_the_cli_piped_prints_markdown(tmp_path, capsys):
    status = main([str(ROOT / "scenarios/smoke.yaml"), "--out", str(tmp_path / "out"), "--no-figures",
                   "--set", "coordinator.rounds=2"])
    out = capsys.readouterr().out
    assert status == 0
    assert not BOX & set(out)
    assert sorted(r[0] for r in _table_rows(out)) == ["esp32_s3_psram", "mcu_tiny", "rpi4_4gb"]
