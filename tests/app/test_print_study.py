"""The printed study (``fleet.app.report.print_study``): rich tables in a terminal; piped, plain Markdown whose
table rows are one line each, whatever the console's width."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from fleet.app.build import build_simulation
from fleet.app.printing import Line, Table, markdown_table, seconds, share, write_items
from fleet.app.report import STUDY_CLASS_COLUMNS, _report_md, print_study
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


def test_seconds_have_three_significant_digits_and_thousands_separators():
    assert [seconds(v) for v in (0.0, 0.001, 0.424, 0.4244, 2.977840588480063, 12.34, 512.0, 999.4, 999.5, 1234.4,
                                 86_400.0)] == ["0", "0.001", "0.424", "0.424", "2.98", "12.3", "512", "999", "1,000",
                                                "1,234", "86,400"]


def test_a_share_is_never_zero_unless_none_took_part():
    assert [share(v) for v in (0, 2e-4, 1e-4, 9.9e-5, 1e-6, 0.0099, 0.015, 0.5, 1 / 3, 0.9994, 0.9996, 1)] == [
        "0%", "0.02%", "0.01%", "< 0.01%", "< 0.01%", "0.99%", "1.5%", "50.0%", "33.3%", "99.9%", "> 99.9%", "100%"]


def _learning(summ: dict, **changes) -> dict:
    """``summ`` as a learning run's summary of a million devices, with ``changes``."""
    return {**summ, "devices": 1_000_000, "participants": 200, "participation_rate": 2e-4, "sim_time_s": 1234.4,
            "wall_s": 12.34, "round_time_s": {"p50": 0.001, "p90": 12.34, "p99": 86_400.0},
            "final_accuracy": 0.8123, "best_accuracy": 0.85, "target_accuracy": 0.8, "time_to_target_s": 0.424,
            **changes}


@pytest.mark.parametrize("ttt, shown", [(0.424, "0.424 s virtual"), (12.34, "12.3 s virtual"),
                                        (1234.0, "1,234 s virtual"), (None, "not reached")])
def test_times_and_small_shares_are_printed_with_their_digits(summ, ttt, shown):
    """Defects: ``time to 80%: 0 s virtual`` for 0.424 s, and ``participation 0.0% of devices`` for 200 of a
    million devices; both in the printed study and in report.md."""
    learning = _learning(summ, time_to_target_s=ttt)
    printed = _printed(learning).splitlines()
    assert printed[0] == "printed: 1000000 devices, 3 rounds, 1,234 s virtual in 12.3 s wall (completed)"
    assert printed[2] == ("tasks 18, accepted 12, participation 0.02% of devices; round time p50 0.001 s, "
                          "p90 12.3 s, p99 86,400 s")
    assert f"test accuracy final 0.8123 (best 0.8500); time to 80%: {shown}" in printed
    report = _report_md(learning, []).splitlines()
    assert report[2].endswith("; 3 rounds in 1,234 s of virtual time (completed).")
    assert "- client tasks dispatched: 18; updates accepted: 12; devices that took part: 200 (0.02%)" in report
    assert "- round time (s): p50 0.001, p90 12.3, p99 86,400" in report
    assert f"- test accuracy: final 0.8123, best 0.8500; time to 80%: {shown}" in report
    assert "| rpi4_4gb | 2 | 6 | 6 | - | - | 0 | 0.121 | 0.124 | - |" in report  # class completion times too


def test_a_share_of_zero_is_zero(summ):
    none = _learning(summ, participants=0, participation_rate=0.0)
    assert "tasks 18, accepted 12, participation 0% of devices; round time" in _printed(none)
    assert "devices that took part: 0 (0%)" in _report_md(none, [])


def test_a_run_writes_nothing_to_stderr_when_it_is_not_a_terminal(tmp_path, capsys):
    """Defect: each run (each variant) wrote one blank line to stderr when stderr was not a terminal."""
    assert main([str(ROOT / "scenarios/smoke.yaml"), "--out", str(tmp_path / "out"), "--no-figures",
                 "--set", "coordinator.rounds=2"]) == 0
    assert capsys.readouterr().err == ""


def test_a_wide_table_in_a_narrow_terminal_breaks_no_word():
    """At 80 columns rich shared the width evenly and cut class names and headers mid-word ("phon / e_lo / w").
    Every column is now at least its longest word wide; columns that do not fit go to a continued table that
    repeats the first (the row's name)."""
    import re

    table = Table("by device class (completion s; tail = tasks above overall p90)",
                  ("class", "devices", "tasks", "accepted", "dropouts", "discarded", "in flight", "p50", "p90", "p99",
                   "tail cause"),
                  (("phone_low", "10", "120", "98", "offline 12, memory 3", "0", "0", "3.21", "12.3", "45.6",
                    "compute: 3"),
                   ("rpi_zero2w", "10", "120", "98", "-", "0", "0", "3.21", "12.3", "45.6", "queue: 2, compute: 3")))
    for width in (60, 80, 100, 200):
        buffer = io.StringIO()
        write_items(Console(file=buffer, width=width, force_terminal=True, color_system=None), [table], False)
        text = buffer.getvalue()
        assert max(len(line) for line in text.splitlines()) <= width
        for word in {w for t in (*table.columns, *(c for row in table.rows for c in row)) for w in t.split()}:
            assert re.search(rf"(?<![\w:,]){re.escape(word)}(?![\w:,])", text), (width, word)
        tables = text.count("rpi_zero2w")  # each table names the rows
        assert tables == 1 if width >= 120 else tables >= 2


def test_a_table_rich_would_crop_fits_the_terminal_whole():
    """Defect: at 100 columns rich stopped narrowing once its widest column reached its minimum and cropped the
    comparison's energy table at the right edge ("accu"). Widths are now fitted before rich draws."""
    table = Table("Energy (J)", ("variant", "algorithm", "energy J", "compute J", "radio J", "J per accepted update",
                                 "battery drained J", "devices ran flat", "accuracy gain (points)",
                                 "J per accuracy point"),
                  (("sync_deadline", "fedavg", "574", "533", "40.7", "5.08", "21.8", "0", "n/a", "n/a"),))
    for width in (60, 100, 200):
        buffer = io.StringIO()
        write_items(Console(file=buffer, width=width, force_terminal=True, color_system=None), [table], False)
        text = buffer.getvalue()
        assert max(len(line) for line in text.splitlines()) <= width
        assert "(points)" in text and "accuracy" in text and "sync_deadline" in text


def test_the_comparisons_markdown_becomes_lines_and_tables():
    from fleet.app.printing import markdown_items

    items = markdown_items("# Comparison\n\ntext `x`\n\n| a | b \\| c |\n|---|---|\n| 1 | x \\| y |\n\n"
                           "![who took part](comparison.png)")
    assert items == [Line("Comparison", "bold"), Line(""), Line("text `x`"), Line(""),
                     Table("", ("a", "b | c"), (("1", "x | y"),)), Line(""),
                     Line("figure: comparison.png (who took part)")]
