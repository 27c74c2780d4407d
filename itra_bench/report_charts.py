"""The charts of the HTML report, each drawn with matplotlib's Agg canvas (never a display; no
pyplot, so no global state) and embedded as a PNG ``<img>``: per-suite bar charts with
interval error bars, and each task's main score over epochs."""

from __future__ import annotations

import base64
import html
import io
import math
import textwrap
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from itra_bench.leaderboard import Leaderboard
    from itra_bench.report_data import EpochPoint


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
    return (f'<img class="chart" alt="{html.escape(alt, quote=True)}" '
            f'src="data:image/png;base64,{data}">')


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


def suite_chart(board: Leaderboard, title: str, columns: list[str]) -> str:
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


def curves_chart(points: dict[str, list[EpochPoint]], main_score: dict[str, str]) -> str:
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
