"""Render rows of a command's output as a terminal table, CSV, Markdown or JSON.

The terminal table never cuts a name or a number: columns marked ``whole`` are as wide as
their longest cell, other cells wrap between words (never inside one), and when that
cannot fit the console, every row is printed as a block of ``header: value`` lines instead.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from rich.console import Console
from rich.table import Table
from rich.text import Text

FORMATS = ("table", "csv", "markdown", "json")

#: A cell: text, a number, a list of texts (shown comma separated) or nothing.
Value = str | int | float | list[str] | None

#: Text columns are given at least this many characters (or their whole width when less)
#: before the table gives way to the stacked layout.
_MIN_TEXT_WIDTH = 12


@dataclass(frozen=True)
class Column:
    """One output column: ``key`` names it in CSV and JSON, ``header`` in the table and
    Markdown; a ``whole`` column (names, numbers) is never wrapped or cut, and ``number``
    is the format of its float cells."""

    key: str
    header: str = ""
    whole: bool = False
    align: Literal["left", "right"] = "left"
    number: str = "{:.2f}"

    @property
    def title(self) -> str:
        """The header shown in tables."""
        return self.header or self.key


def readable(fmt: str) -> bool:
    """Whether ``fmt`` is for reading (``table``, ``markdown``: an interval is one text
    cell) rather than for scripts (``csv``, ``json``: numbers stay numbers)."""
    return fmt in ("table", "markdown")


def add_format_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--format table|csv|markdown|json`` (default table) to a command's parser."""
    parser.add_argument("--format", choices=FORMATS, default="table",
                        help="table (default, for reading), csv (with a header row), "
                             "markdown (a GitHub pipe table) or json (a list of objects)")


def cell_text(value: Value, column: Column) -> str:
    """A cell as text: floats in the column's number format, lists comma separated."""
    if value is None:
        return ""
    if isinstance(value, float):
        return column.number.format(value)
    if isinstance(value, list):
        return ", ".join(value)
    return str(value)


def render(rows: Sequence[Mapping[str, Value]], columns: Sequence[Column], fmt: str,
           console: Console, title: str | None = None) -> None:
    """Write ``rows`` to ``console`` in ``fmt`` (one of :data:`FORMATS`); machine formats
    are written as they are, with no wrapping, colour or title."""
    if fmt == "table":
        _print_table(rows, columns, console, title)
        return
    if fmt == "csv":
        text = to_csv(rows, columns)
    elif fmt == "markdown":
        text = to_markdown(rows, columns)
    elif fmt == "json":
        text = to_json(rows, columns)
    else:
        raise ValueError(f"unknown table format {fmt!r}; expected one of {', '.join(FORMATS)}")
    console.file.write(text)
    console.file.flush()


def to_csv(rows: Sequence[Mapping[str, Value]], columns: Sequence[Column]) -> str:
    """CSV with a header row of the column keys."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([c.key for c in columns])
    for row in rows:
        writer.writerow([cell_text(row.get(c.key), c) for c in columns])
    return out.getvalue()


def to_markdown(rows: Sequence[Mapping[str, Value]], columns: Sequence[Column]) -> str:
    """A GitHub pipe table; ``|`` in a cell is escaped and line breaks become spaces."""
    def cell(text: str) -> str:
        return " ".join(text.replace("\\", "\\\\").replace("|", "\\|").split())

    lines = ["| " + " | ".join(cell(c.title) for c in columns) + " |",
             "|" + "|".join("---:" if c.align == "right" else "---" for c in columns) + "|"]
    lines += ["| " + " | ".join(cell(cell_text(r.get(c.key), c)) for c in columns) + " |"
              for r in rows]
    return "\n".join(lines) + "\n"


def to_json(rows: Sequence[Mapping[str, Value]], columns: Sequence[Column]) -> str:
    """A JSON list with one object per row, keyed by the column keys in column order;
    missing cells are null and numbers stay numbers."""
    return json.dumps([{c.key: r.get(c.key) for c in columns} for r in rows],
                      indent=2, ensure_ascii=False) + "\n"


def _longest_word(text: str) -> int:
    return max((len(w) for w in text.split()), default=0)


def table_widths(rows: Sequence[Mapping[str, Value]], columns: Sequence[Column],
                 width: int) -> list[int] | None:
    """Content width of each column so that the table fits ``width`` characters with no
    whole cell or word broken; None when it cannot fit."""
    texts = [[cell_text(r.get(c.key), c) for r in rows] for c in columns]
    natural = [max([len(c.title), *(len(t) for t in col)])
               for c, col in zip(columns, texts, strict=True)]
    # No word is ever split: a list of names wraps between names, free text between words.
    words = [max([_longest_word(c.title), *(_longest_word(t) for t in col)])
             for c, col in zip(columns, texts, strict=True)]
    least = [n if c.whole else max(w, min(n, _MIN_TEXT_WIDTH))
             for c, n, w in zip(columns, natural, words, strict=True)]
    # Rich's default box: one space of padding each side of a cell, n + 1 vertical rules.
    room = width - (3 * len(columns) + 1)
    if sum(least) > room:
        return None
    widths = list(least)
    spare = room - sum(widths)
    # Hand the spare room out one character at a time to the text column furthest from
    # its natural width, so wide descriptions share the space instead of the first taking it.
    while spare > 0:
        short = [(natural[i] - widths[i], -i) for i in range(len(columns))
                 if widths[i] < natural[i]]
        if not short:
            break
        i = -max(short)[1]
        widths[i] += 1
        spare -= 1
    return widths


def _print_table(rows: Sequence[Mapping[str, Value]], columns: Sequence[Column],
                 console: Console, title: str | None) -> None:
    widths = table_widths(rows, columns, console.width)
    if widths is None:
        _print_stacked(rows, columns, console, title)
        return
    # A title is shown as written too: "score [low, high]" is no markup.
    table = Table(title=None if title is None else Text(title, style="table.title"))
    for c, w in zip(columns, widths, strict=True):
        table.add_column(Text(c.title), justify=c.align, width=w, no_wrap=c.whole,
                         overflow="fold")
    for r in rows:
        # Text cells are shown as written: descriptions may hold "[...]" that is no markup.
        table.add_row(*(Text(cell_text(r.get(c.key), c)) for c in columns))
    console.print(table)


def _print_stacked(rows: Sequence[Mapping[str, Value]], columns: Sequence[Column],
                   console: Console, title: str | None) -> None:
    """One block per row: the first column as a heading, then indented ``header: value``
    lines; free text wraps at spaces only and nothing is cut."""
    if title:
        console.print(Text(title, style="italic"), soft_wrap=True)
    first, rest = columns[0], columns[1:]
    for n, r in enumerate(rows):
        if n or title:
            console.print()
        console.print(Text(f"{first.title}: {cell_text(r.get(first.key), first)}",
                           style="bold"), soft_wrap=True)
        for c in rest:
            label = f"  {c.title}: "
            text = cell_text(r.get(c.key), c)
            if c.whole or not text:
                console.print(Text((label + text).rstrip()), soft_wrap=True)
                continue
            lines = textwrap.wrap(text, width=console.width,
                                  initial_indent=label, subsequent_indent="    ",
                                  break_long_words=False, break_on_hyphens=False)
            for line in lines:
                console.print(Text(line), soft_wrap=True)
