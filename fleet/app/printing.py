"""Printing lines and tables to a console: rich tables in a terminal, plain Markdown anywhere else.

Piped to a file or another program, rich would wrap each row at the console's width and draw box characters;
``write_items(..., markdown=True)`` writes every line and table row on one line of its own, so the output is
Markdown that reads (and renders) the same at any width.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

__all__ = ["Line", "Table", "count", "markdown_items", "markdown_table", "seconds", "share", "write_items"]


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
            continued = f"{item.title.split(' (')[0]} (continued)".strip()
            shown = RichTable(title=(item.title or None) if part == 0 else continued)
            for i, width in zip(columns, _fitted_widths(item, columns, console.width)):
                shown.add_column(item.columns[i], overflow="fold", width=width)
            for row in item.rows:
                shown.add_row(*(row[i] for i in columns))
            console.print(shown)


_CELL_EDGE = re.compile(r"(?<!\\)\|")  # a table row's cell separator: a pipe not escaped
_IMAGE = re.compile(r"^!\[(?P<alt>[^\]]*)\]\((?P<file>[^)]*)\)$")


def markdown_items(text: str) -> list[Line | Table]:
    """The Markdown we write (``comparison.md``: headings, paragraphs, pipe tables, images on a line of their own)
    as items for ``write_items``, so a terminal shows it as rich tables: a heading a bold line, a table a
    ``Table`` (cells unescaped), an image the line ``figure: FILE (ALT)``, any other line as it is."""
    items: list[Line | Table] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append([c.strip().replace("\\|", "|") for c in _CELL_EDGE.split(lines[i].strip())[1:-1]])
                i += 1
            head, rows = block[0], [r for r in block[2:] if len(r) == len(block[0])]
            items.append(Table("", tuple(head), tuple(tuple(r) for r in rows)))
            continue
        image = _IMAGE.match(line)
        if line.startswith("#"):
            items.append(Line(line.lstrip("#").strip(), "bold"))
        elif image:
            items.append(Line(f"figure: {image['file']} ({image['alt']})"))
        else:
            items.append(Line(line))
        i += 1
    return items


_COLUMN_FRAME = 3  # what a rich table adds per column (padding either side, one rule), besides its left edge


def _longest_word(table: Table, i: int) -> int:
    """The longest space-free run in column ``i``'s header and cells: narrower, rich would break a word."""
    return max((len(word) for text in (table.columns[i], *(row[i] for row in table.rows)) for word in text.split()),
               default=1)


def _fitted_widths(table: Table, columns: list[int], width: int) -> list[int]:
    """Text widths for ``columns`` of ``table`` that fit ``width`` characters framed: each column as wide as its
    longest text, the widest cut down one character at a time while the table is too wide, never below its
    longest word (``column_groups`` chose columns whose longest words fit). Rich's own fitting stops cutting
    once its widest column reaches its minimum, and crops the table's right edge then."""
    cells = [(table.columns[i], *(row[i] for row in table.rows)) for i in columns]
    widths = [max(len(text) for text in texts) for texts in cells]
    least = [_longest_word(table, i) for i in columns]
    budget = width - 1 - _COLUMN_FRAME * len(columns)
    while sum(widths) > budget:
        cut = max((j for j in range(len(widths)) if widths[j] > least[j]), key=lambda j: widths[j], default=None)
        if cut is None:
            break
        widths[cut] -= 1
    return widths


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
