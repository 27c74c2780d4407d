"""The HTML report of ``itra-bench report``: one self-contained page (no network: charts are
embedded PNGs) with the leaderboard, per-suite bar charts with interval error bars, the
ELEVATER summary, and, for an itra-train run folder, each task's main score over epochs."""

from __future__ import annotations

import base64
import html
import io
import math
import re
import statistics
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from itra_bench import __version__
from itra_bench.atomic_io import atomic_write_text
from itra_bench.errors import UserError
from itra_bench.leaderboard import (
    TITLE,
    Leaderboard,
    collate,
    column_label,
    score_with_interval,
    suite_column,
)
from itra_bench.results import iter_records
from itra_bench.task import variant_family

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from itra_bench.vision_benchmark.summary import SummaryBlock

#: Where ``itra-bench watch`` stores a run's results, and where in-training evaluation does.
WATCH_RESULTS = "watch-results"
TRAINING_EVAL = "eval"
#: Chart key of the tasks that belong to no suite.
OTHER = "other tasks"

# ``logs/run/checkpoints/epoch_3.pt`` (watch), ``run@epoch_3`` (evaluation during training);
# collate may append `` (fingerprint)`` when one name has two sets of weights.
_EPOCH = re.compile(r"(?:^|[/@\\])epoch_(\d+)(?:\.pt)?(?: \([0-9a-f]+\))?$")

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


@dataclass
class ReportSource:
    """What a report is made of: the results folder, and the training run it belongs to
    (None for a plain results folder)."""

    results: Path
    run_folder: Path | None = None


def find_source(folder: str | Path) -> ReportSource:
    """The results behind ``folder``: a results folder itself, or an itra-train run folder
    (``checkpoints/`` inside) whose ``watch-results/`` (else ``eval/``) are used."""
    folder = Path(folder)
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "folder not found"
        raise UserError(f"{folder}: {what} (give a results folder written by `itra-bench "
                        "run`, or an itra-train run folder <logs>/<name>)")
    if not (folder / "checkpoints").is_dir():
        return ReportSource(folder)
    for name in (WATCH_RESULTS, TRAINING_EVAL):
        if (folder / name).is_dir():
            return ReportSource(folder / name, folder)
    raise UserError(f"{folder} is an itra-train run folder without evaluation results (no "
                    f"{WATCH_RESULTS}/ or {TRAINING_EVAL}/ inside): run `itra-bench watch "
                    f"{folder} --tasks TASK... --once` first, or train with --eval-tasks")


def epoch_of(model: str) -> int | None:
    """The epoch a model name stands for (``.../epoch_3.pt``, ``run@epoch_3``), else None."""
    match = _EPOCH.search(model)
    return int(match.group(1)) if match else None


@dataclass
class _Columns:
    """Per chart (suite and variant family, or tasks in no suite) its leaderboard columns,
    and each column's main score name."""

    charts: dict[str, list[str]]
    main_score: dict[str, str]


def _columns(root: Path, board: Leaderboard) -> _Columns:
    charts: dict[str, set[str]] = {}
    main_score: dict[str, str] = {}
    for _, r in iter_records(root):
        column = column_label(r)
        main_score[column] = str(r["main_score"])
        family = variant_family(r["variant"], r.get("protocol", ""), r.get("variant_family"))
        for suite in r.get("suites") or [OTHER]:
            charts.setdefault(suite_column(suite, family) if suite != OTHER else OTHER,
                              set()).add(column)
    order = {c: i for i, c in enumerate(board.task_columns)}
    keys = sorted(charts, key=lambda k: (k == OTHER, k))
    return _Columns({k: sorted(charts[k], key=order.__getitem__) for k in keys}, main_score)


def _anchor(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


# ---------------------------------------------------------------------------------------------
# Charts (matplotlib's Agg canvas, never a display; no pyplot, so no global state)


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # The constrained layout makes room for a legend placed outside the axes.
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _img(fig: Figure, alt: str) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img class="chart" alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def short_labels(models: list[str]) -> dict[str, str]:
    """Legend labels: a path keeps its last three parts when that stays unambiguous."""
    def short(name: str) -> str:
        parts = name.replace("\\", "/").split("/")
        return "/".join(parts[-3:]) if len(parts) > 3 else name

    shortened = {m: short(m) for m in models}
    if len(set(shortened.values())) < len(models):
        shortened = {m: m for m in models}
    return {m: "\n".join(textwrap.wrap(s, 70, break_on_hyphens=False)) or s
            for m, s in shortened.items()}


def _wrap(label: str, width: int = 44) -> str:
    return "\n".join(textwrap.wrap(label, width, break_on_hyphens=False)) or label


def _suite_chart(board: Leaderboard, title: str, columns: list[str]) -> str:
    """Horizontal grouped bars: one group per task, one bar per model, with the main
    score's interval as an (asymmetric) error bar where the result has one."""
    models = board.models
    colors, labels = _colors(len(models)), short_labels(models)
    slot = max(0.34, 0.2 * len(models))  # inches per task group
    fig = _figure(10, 1.0 + slot * len(columns) + 0.2 * math.ceil(len(models) / 2))
    ax = fig.add_subplot()
    height = 0.8 / len(models)
    values = [100 * v for v in board.main.values()] + [
        100 * x for ci in board.intervals.values() for x in ci]
    for j, model in enumerate(models):
        ys = [i + (j - (len(models) - 1) / 2) * height for i in range(len(columns))]
        xs = [100 * board.main[(model, c)] if (model, c) in board.main else math.nan
              for c in columns]
        ax.barh(ys, xs, height=0.92 * height, color=colors[j], label=labels[model])
        err = [(y, x, board.intervals[(model, c)]) for y, x, c in zip(ys, xs, columns,
                                                                      strict=True)
               if (model, c) in board.intervals and not math.isnan(x)]
        if err:
            ax.errorbar([x for _, x, _ in err], [y for y, _, _ in err],
                        xerr=[[max(0.0, x - 100 * ci[0]) for _, x, ci in err],
                              [max(0.0, 100 * ci[1] - x) for _, x, ci in err]],
                        fmt="none", ecolor="black", elinewidth=0.8, capsize=2)
    ax.set_yticks(range(len(columns)), [_wrap(c) for c in columns], fontsize=9)
    ax.set_ylim(len(columns) - 0.5, -0.5)  # first task on top
    ax.set_xlim(min(0.0, *values) if values else 0.0, max(100.0, *values) if values else 100.0)
    ax.set_xlabel("main score x 100 (error bars: 95 % bootstrap interval)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    if len(columns) > 8:  # a tall chart: the scale at the top too
        ax.tick_params(axis="x", top=True, labeltop=True)
    # Above the bars (the page's heading names the chart), where it is seen first.
    fig.legend(loc="outside upper center", ncol=min(len(models), 2), fontsize=8,
               frameon=False)
    return _img(fig, f"{title}: main score of each task per model")


@dataclass
class _Point:
    epoch: int
    model: str
    value: float
    interval: tuple[float, float] | None


def _epoch_points(board: Leaderboard) -> dict[str, list[_Point]]:
    """Per task column, its main score at each epoch (the models named after epochs)."""
    points: dict[str, dict[int, _Point]] = {}
    for model in board.models:
        epoch = epoch_of(model)
        if epoch is None:
            continue
        for column in board.task_columns:
            if (model, column) in board.main:
                points.setdefault(column, {})[epoch] = _Point(
                    epoch, model, board.main[(model, column)],
                    board.intervals.get((model, column)))
    return {c: [p[e] for e in sorted(p)] for c, p in points.items()}


def _curves_chart(points: dict[str, list[_Point]], main_score: dict[str, str]) -> str:
    """One small panel per task: the main score over epochs, with the interval as a band."""
    columns = list(points)
    ncols = min(3, len(columns))
    nrows = math.ceil(len(columns) / ncols)
    fig = _figure(4.4 * ncols, 3.0 * nrows)
    for k, column in enumerate(columns):
        ax: Axes = fig.add_subplot(nrows, ncols, k + 1)
        pts = points[column]
        epochs = [p.epoch for p in pts]
        ax.plot(epochs, [100 * p.value for p in pts], marker="o", color="tab:blue")
        if any(p.interval for p in pts):
            low = [100 * p.interval[0] if p.interval else math.nan for p in pts]
            high = [100 * p.interval[1] if p.interval else math.nan for p in pts]
            ax.fill_between(epochs, low, high, color="tab:blue", alpha=0.2, linewidth=0,
                            label="95 % interval")
            ax.vlines(epochs, low, high, color="tab:blue", alpha=0.5, linewidth=1)
            ax.legend(fontsize=7, loc="best")
        ax.set_title(_wrap(f"{column} ({main_score.get(column, 'main score')})", 48),
                     fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel("x 100", fontsize=8)
        ax.set_xticks(epochs if len(epochs) <= 12 else epochs[:: math.ceil(len(epochs) / 12)])
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    return _img(fig, "main score of each task over epochs")


# ---------------------------------------------------------------------------------------------
# HTML


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


def _seeds_text(values: list[float]) -> str:
    mean = 100 * statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {100 * statistics.stdev(values):.2f}"


def _elevater_html(blocks: list[SummaryBlock]) -> str:
    parts = ['<p class="note">Per model, mode and shot count: each dataset\'s ELEVATER '
             "metric in percent (mean ± standard deviation over few-shot seeds), and the "
             "average over the datasets (as <code>itra-bench results</code> prints it).</p>"]
    for block in blocks:
        rows = [[f"<td>{_e(name)}</td>", f"<td>{_e(metric)}</td>",
                 _num(_seeds_text(list(per_seed.values()))), _num(str(len(per_seed)))]
                for name, (metric, per_seed) in block.rows.items()]
        averages = block.seed_averages()
        if averages:
            rows.append(["<td><b>average</b></td>",
                         f"<td>{len(block.rows)} datasets</td>",
                         _num(_seeds_text(list(averages.values())), best=True),
                         _num(str(len(averages)))])
        parts.append(f"<h3>ELEVATER {_e(block.title)}</h3>")
        parts.append(_table(["dataset", "metric", "score %", "seeds"], rows))
    return "\n".join(parts)


def _epochs_html(points: dict[str, list[_Point]], main_score: dict[str, str]) -> str:
    columns = list(points)
    by_epoch: dict[int, dict[str, _Point]] = {}
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
    return (_curves_chart(points, main_score)
            + _table(header, rows, raw_header=True))


def render_report(folder: str | Path, problems: list[str] | None = None,
                  suite_members: Mapping[str, Iterable[str]] | None = None) -> str:
    """The report of ``folder`` (results folder or itra-train run folder) as one HTML page;
    unreadable result files are described in ``problems`` when a list is given; a suite
    average needs every task of ``suite_members`` (see :func:`itra_bench.leaderboard.collate`)."""
    from itra_bench.vision_benchmark.summary import summarize

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
    columns = _columns(source.results, board)
    sections: list[tuple[str, str, str]] = [
        ("leaderboard", "Leaderboard",
         f'<p class="note">{_e(TITLE)}; <code>avg:SUITE</code> columns average a suite\'s '
         "tasks (within one variant family) where every task has a result; the best value "
         "of each column is bold.</p>" + _leaderboard_html(board, columns.main_score))]
    charts = "".join(f'<h3 id="suite-{_anchor(key)}">{_e(key)}</h3>'
                     + _suite_chart(board, key, cols) for key, cols in columns.charts.items())
    sections.append(("suites", "Scores per suite",
                     '<p class="note">Each task\'s main score x 100 per model; error bars '
                     "span the 95 % bootstrap interval (none where the result has no "
                     "per-sample outcomes).</p>" + charts))
    blocks = summarize(source.results)
    if blocks:
        sections.append(("elevater-summary", "ELEVATER summary", _elevater_html(blocks)))
    if source.run_folder is not None:
        points = _epoch_points(board)
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
                 suite_members: Mapping[str, Iterable[str]] | None = None) -> Path:
    """Render the report of ``folder`` and write it atomically to ``output``
    (``suite_members``: the installed suites, see :func:`itra_bench.leaderboard.collate`)."""
    text = render_report(folder, problems, suite_members)
    try:
        return atomic_write_text(output, text)
    except OSError as exc:
        raise UserError(f"cannot write the report {output} ({exc.strerror or exc})") from exc
