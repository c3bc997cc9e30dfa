"""Printing lines and tables to a console: rich tables in a terminal, plain Markdown anywhere else.

Piped to a file or another program, rich would wrap each row at the console's width and draw box characters;
``write_items(..., markdown=True)`` writes every line and table row on one line of its own, so the output is
Markdown that reads (and renders) the same at any width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

__all__ = ["Line", "Table", "count", "markdown_table", "seconds", "share", "write_items"]


@dataclass(frozen=True)
class Line:
    """One line of text; ``style`` is a rich style (``"bold"``), used in a terminal only."""

    text: str
    style: str = ""


@dataclass(frozen=True)
class Table:
    """A titled table of text cells, one tuple per row, as wide as ``columns``."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


def count(n: int, noun: str, sep: str = "") -> str:
    """``n`` and ``noun``, plural unless ``n`` is 1 (``noun`` + "s"; every noun we count is regular): "1 round",
    "3 rounds". ``sep``: "," for thousands separators."""
    return f"{n:{sep}} {noun}" + ("" if n == 1 else "s")


def seconds(value: float) -> str:
    """A duration in seconds as printed, without its unit: 3 significant digits below 1,000 s (``0.424``,
    ``12.3``, ``512``, ``0.001``; ``0`` for zero; below 0.0001 s as ``.3g`` writes it, ``1e-05``), whole seconds
    with thousands separators from there (``1,234``, ``86,400``), never ``1e+03``."""
    if abs(value) >= 999.5:  # .3g would write 1e+03
        return f"{value:,.0f}"
    return f"{value:.3g}"


def share(fraction: float) -> str:
    """A fraction of a whole (0 to 1) as a percentage: one decimal (``12.5%``), two below 1 % (``0.02%``),
    ``< 0.01%`` for a share above 0 but below 0.01 %, and ``> 99.9%`` for one below 1 that one decimal would
    round to 100; ``0%`` only for exactly none and ``100%`` only for exactly all."""
    if fraction == 0:
        return "0%"
    if fraction == 1:
        return "100%"
    percent = 100 * fraction
    if percent < 0.01:
        return "< 0.01%"
    if percent < 1:
        return f"{percent:.2f}%"
    text = f"{percent:.1f}"
    return "> 99.9%" if fraction < 1 and text == "100.0" else f"{text}%"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(table: Table) -> list[str]:
    """``table`` as Markdown lines: its title, a blank line, the header, the rule, one line per row."""
    return [table.title, "", "| " + " | ".join(_cell(c) for c in table.columns) + " |",
            "|" + "---|" * len(table.columns),
            *("| " + " | ".join(_cell(c) for c in row) + " |" for row in table.rows)]


def write_items(console, items: Sequence[Line | Table | str], markdown: bool) -> None:
    """Print ``items`` in order to a rich ``console``: with ``markdown``, as plain text never wrapped nor
    styled (a table as ``markdown_table`` with a blank line either side); else styled lines and rich tables.
    A plain ``str`` is a ``Line`` without style (never read as rich markup)."""
    items = [Line(item) if isinstance(item, str) else item for item in items]
    if markdown:
        for item in items:
            lines = [item.text] if isinstance(item, Line) else ["", *markdown_table(item), ""]
            for line in lines:
                console.print(line, markup=False, highlight=False, soft_wrap=True, emoji=False)
        return
    from rich.table import Table as RichTable
    from rich.text import Text

    for item in items:
        if isinstance(item, Line):
            console.print(Text(item.text, style=item.style))
            continue
        for part, columns in enumerate(column_groups(item, console.width)):
            shown = RichTable(title=item.title if part == 0 else f"{item.title.split(' (')[0]} (continued)")
            for i in columns:
                shown.add_column(item.columns[i], overflow="fold", min_width=_longest_word(item, i))
            for row in item.rows:
                shown.add_row(*(row[i] for i in columns))
            console.print(shown)


_COLUMN_FRAME = 3  # what a rich table adds per column (padding either side, one rule), besides its left edge


def _longest_word(table: Table, i: int) -> int:
    """The longest space-free run in column ``i``'s header and cells: narrower, rich would break a word."""
    return max((len(word) for text in (table.columns[i], *(row[i] for row in table.rows)) for word in text.split()),
               default=1)


def column_groups(table: Table, width: int) -> list[list[int]]:
    """``table``'s column indices cut into groups that fit ``width`` characters with no word broken (each
    column at least its longest word wide): all in one group when they fit; else the first column (the row's
    name) heads every group and the others follow in order, as many as fit (at least one a group)."""
    need = [_longest_word(table, i) + _COLUMN_FRAME for i in range(len(table.columns))]
    if 1 + sum(need) <= width or len(need) < 2:
        return [list(range(len(need)))]
    groups, current, used = [], [0], 1 + need[0]
    for i in range(1, len(need)):
        if len(current) > 1 and used + need[i] > width:
            groups.append(current)
            current, used = [0], 1 + need[0]
        current.append(i)
        used += need[i]
    groups.append(current)
    return groups
