"""The HTML report of ``itra-bench report``: one self-contained page (no network: charts are
embedded PNGs) with the leaderboard, per-suite bar charts with interval error bars, a section
per summary that plugins add (:mod:`itra_bench.summaries`), and, for an itra-train run folder,
each task's main score over epochs. What it shows is gathered by :mod:`itra_bench.report_data`
and its charts are drawn by :mod:`itra_bench.report_charts`; this module writes the HTML."""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from itra_bench import __version__
from itra_bench.atomic_io import atomic_write_text
from itra_bench.errors import UserError
from itra_bench.leaderboard import TITLE, Leaderboard, collate, score_with_interval
from itra_bench.report_charts import curves_chart, suite_chart
from itra_bench.report_data import (
    EpochPoint,
    chart_columns,
    epoch_of,
    epoch_points,
    find_source,
)
from itra_bench.summaries import ResultSummary, Summary, SummaryTable, collect_summaries
from itra_bench.tables import Column, Value, cell_text

if TYPE_CHECKING:
    from itra_bench.plugin_tables import Provided


_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em;
       color: #1d1d1f; max-width: 1400px; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 1.8em; }
.meta, .note { color: #555; font-size: 0.9em; }
nav a { margin-right: 1em; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-size: 0.88em; margin: 0.6em 0; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.55em; white-space: nowrap; }
th { background: #f3f3f3; vertical-align: bottom; }
th small { font-weight: normal; color: #666; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.best { font-weight: bold; }
tbody tr:nth-child(even) { background: #fafafa; }
th:first-child, td:first-child { position: sticky; left: 0; background: #fff; }
thead th:first-child { background: #f3f3f3; }
img.chart { max-width: 100%; height: auto; display: block; margin: 0.5em 0 1.2em; }
.warn { color: #8a4b00; }
"""

# Sets a marker once every chart has decoded (checked by the tests in a headless browser).
_SCRIPT = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var decoded = images.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  document.body.setAttribute("data-images-loaded", decoded.length + "/" + images.length);
});
"""

# The page may load nothing from anywhere: images are data: URIs, style and script inline.
_CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
        "script-src 'unsafe-inline'")


def _anchor(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _table(header: Iterable[str], rows: Iterable[Iterable[str]], raw_header: bool = False
           ) -> str:
    """A table; cells are given as HTML (``<td>`` included), header cells as text unless
    ``raw_header``."""
    head = "".join(f"<th>{h if raw_header else _e(h)}</th>" for h in header)
    body = "".join(f"<tr>{''.join(r)}</tr>" for r in rows)
    return (f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def _num(text: str, best: bool = False) -> str:
    return f'<td class="num{" best" if best else ""}">{_e(text)}</td>'


def _leaderboard_html(board: Leaderboard, main_score: dict[str, str]) -> str:
    best: dict[str, float] = {}
    for s in board.suite_columns:
        values = [v for m in board.models if (v := board.suite_avg.get((m, s))) is not None]
        if len(values) > 1:
            best[f"avg:{s}"] = max(values)
    for c in board.task_columns:
        values = [v for m in board.models if (v := board.main.get((m, c))) is not None]
        if len(values) > 1:
            best[c] = max(values)
    header = ["model", *(_e(f"avg:{s}") for s in board.suite_columns),
              *(f"{_e(c)}<br><small>{_e(main_score.get(c, ''))}</small>"
                for c in board.task_columns)]
    rows = []
    for m in board.models:
        row = [f"<td>{_e(m)}</td>"]
        for s in board.suite_columns:
            v = board.suite_avg.get((m, s))
            row.append(_num("" if v is None else f"{100 * v:.2f}",
                            v is not None and v == best.get(f"avg:{s}")))
        for c in board.task_columns:
            v = board.main.get((m, c))
            row.append(_num(board.score_text(m, c), v is not None and v == best.get(c)))
        rows.append(row)
    return _table(header, rows, raw_header=True)


def _summary_cell(column: Column, value: Value, bold: bool) -> str:
    """A summary table's cell: numbers (right-aligned columns) as number cells."""
    text = cell_text(value, column)
    if column.align == "right":
        return _num(text, best=bold)
    return f"<td><b>{_e(text)}</b></td>" if bold else f"<td>{_e(text)}</td>"


def _summary_row(table: SummaryTable, row: Mapping[str, Value], bold: Iterable[str] = ()
                 ) -> list[str]:
    emphasis = set(bold)
    return [_summary_cell(c, row.get(c.key), c.key in emphasis) for c in table.columns]


def _summary_html(summary: Summary) -> str:
    """A plugin's summary: its note (text in backticks as code), then each table with its
    total row last."""
    note = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(summary.note, quote=False))
    parts = [f'<p class="note">{note}</p>'] if summary.note else []
    for table in summary.tables:
        rows = [_summary_row(table, row) for row in table.rows]
        if table.total is not None:
            rows.append(_summary_row(table, table.total, table.emphasis))
        parts.append(f"<h3>{_e(table.title)}</h3>")
        parts.append(_table([c.title for c in table.columns], rows))
    return "\n".join(parts)


def _epochs_html(points: dict[str, list[EpochPoint]], main_score: dict[str, str]) -> str:
    columns = list(points)
    by_epoch: dict[int, dict[str, EpochPoint]] = {}
    for column, pts in points.items():
        for p in pts:
            by_epoch.setdefault(p.epoch, {})[column] = p
    rows = []
    for epoch in sorted(by_epoch):
        cells = by_epoch[epoch]
        model = next(iter(cells.values())).model
        row = [_num(str(epoch)), f"<td>{_e(model)}</td>"]
        for c in columns:
            p = cells.get(c)
            if p is None:
                text = ""
            elif p.interval:
                text = score_with_interval(p.value, *p.interval)
            else:
                text = f"{100 * p.value:.2f}"
            row.append(_num(text))
        rows.append(row)
    header = ["epoch", "checkpoint", *(f"{_e(c)}<br><small>{_e(main_score.get(c, ''))}</small>"
                                       for c in columns)]
    return (curves_chart(points, main_score)
            + _table(header, rows, raw_header=True))


def render_report(folder: str | Path, problems: list[str] | None = None,
                  suite_members: Mapping[str, Iterable[str]] | None = None,
                  summaries: Mapping[str, Provided[ResultSummary]] | None = None) -> str:
    """The report of ``folder`` (results folder or itra-train run folder) as one HTML page;
    unreadable result files are described in ``problems`` when a list is given; a suite
    average needs every task of ``suite_members`` (see :func:`itra_bench.leaderboard.collate`);
    each of the plugins' ``summaries`` (a registry's ``result_summaries``; by default those of
    :func:`itra_bench.registry.current_registry`) that finds something adds its section."""
    source = find_source(folder)
    found: list[str] = []
    board = collate(source.results, found, suite_members)
    if problems is not None:
        problems += found
    if not board.models:
        raise UserError(f"no itra-bench result files under {source.results}"
                        + (" (unreadable ones: " + "; ".join(found) + ")" if found else ""))
    if source.run_folder is not None:
        # Epochs in training order, not in the alphabetical order of their file names.
        board.models.sort(key=lambda m: (epoch_of(m) is None, epoch_of(m) or 0, m))
    columns = chart_columns(source.results, board)
    sections: list[tuple[str, str, str]] = [
        ("leaderboard", "Leaderboard",
         f'<p class="note">{_e(TITLE)}; <code>avg:SUITE</code> columns average a suite\'s '
         "tasks (within one variant family) where every task has a result; the best value "
         "of each column is bold.</p>" + _leaderboard_html(board, columns.main_score))]
    charts = "".join(f'<h3 id="suite-{_anchor(key)}">{_e(key)}</h3>'
                     + suite_chart(board, key, cols) for key, cols in columns.charts.items())
    sections.append(("suites", "Scores per suite",
                     '<p class="note">Each task\'s main score x 100 per model; error bars '
                     "span the 95 % bootstrap interval (none where the result has no "
                     "per-sample outcomes).</p>" + charts))
    if summaries is None:
        from itra_bench.registry import current_registry

        summaries = current_registry().result_summaries
    for view, summary in collect_summaries(source.results, summaries):
        sections.append((f"{view.name}-summary", view.title, _summary_html(summary)))
    if source.run_folder is not None:
        points = epoch_points(board)
        body = _epochs_html(points, columns.main_score) if points else \
            '<p class="warn">No result names an epoch (epoch_N.pt checkpoints).</p>'
        sections.append(("epochs", "Scores over epochs",
                         f'<p class="note">Training run {_e(source.run_folder)}: each '
                         "task's main score x 100 at each evaluated checkpoint; the band is "
                         "the 95 % bootstrap interval.</p>" + body))
    if found:
        sections.append(("warnings", "Unreadable results (left out)",
                         "<ul>" + "".join(f'<li class="warn">{_e(p)}</li>' for p in found)
                         + "</ul>"))
    nav = " ".join(f'<a href="#{key}">{_e(title)}</a>' for key, title, _ in sections)
    body = "\n".join(f'<section id="{key}"><h2>{_e(title)}</h2>\n{content}</section>'
                     for key, title, content in sections)
    what = f"training run {source.run_folder}" if source.run_folder else \
        f"results folder {source.results}"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>itra-bench report: {_e(what)}</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>itra-bench report</h1>
<p class="meta">{_e(what)}: {len(board.models)} model(s), {len(board.task_columns)} task
column(s); itra-bench {_e(__version__)}</p>
<nav>{nav}</nav>
{body}
<script>{_SCRIPT}</script>
</body>
</html>
"""


def write_report(folder: str | Path, output: str | Path,
                 problems: list[str] | None = None,
                 suite_members: Mapping[str, Iterable[str]] | None = None,
                 summaries: Mapping[str, Provided[ResultSummary]] | None = None) -> Path:
    """Render the report of ``folder`` and write it atomically to ``output``
    (``suite_members``: the installed suites, see :func:`itra_bench.leaderboard.collate`;
    ``summaries``: the plugins' result summaries)."""
    text = render_report(folder, problems, suite_members, summaries)
    try:
        return atomic_write_text(output, text)
    except OSError as exc:
        raise UserError(f"cannot write the report {output} ({exc.strerror or exc})") from exc
