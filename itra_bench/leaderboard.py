"""Collate a results folder into a leaderboard: models x task metrics, with suite averages."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from itra_bench.atomic_io import atomic_write_text
from itra_bench.results import iter_records


def column_label(record: dict[str, Any]) -> str:
    """A task's column name: the task, plus its variant when that is not the plain protocol."""
    variant = record["variant"]
    if variant in ("default", record.get("protocol")):
        return record["task"]
    return f"{record['task']}[{variant}]"


@dataclass
class Leaderboard:
    """Main scores and all metrics per model; suite averages over complete suites only."""

    models: list[str]
    task_columns: list[str]
    suite_columns: list[str]
    main: dict[tuple[str, str], float]
    metrics: dict[tuple[str, str], dict[str, float]]
    suite_avg: dict[tuple[str, str], float]

    def main_table_rows(self) -> list[list[str]]:
        """Rows of model, suite averages and main scores, as percentages."""
        rows = []
        for m in self.models:
            row = [m]
            for s in self.suite_columns:
                row.append(_pct(self.suite_avg.get((m, s))))
            for c in self.task_columns:
                row.append(_pct(self.main.get((m, c))))
            rows.append(row)
        return rows

    def header(self) -> list[str]:
        """Column names of the main table."""
        return ["model", *(f"avg:{s}" for s in self.suite_columns), *self.task_columns]

    def to_csv(self) -> str:
        """Every metric (raw values, 0-1 scale), one row per model."""
        metric_cols = sorted({(c, k) for (m, c), d in self.metrics.items() for k in d},
                             key=lambda ck: (self.task_columns.index(ck[0]), ck[1]))
        out = io.StringIO()
        w = csv.writer(out)
        w.writerow(["model", *(f"avg:{s}" for s in self.suite_columns), *self.task_columns,
                    *(f"{c}/{k}" for c, k in metric_cols)])
        for m in self.models:
            w.writerow([m, *(_raw(self.suite_avg.get((m, s))) for s in self.suite_columns),
                        *(_raw(self.main.get((m, c))) for c in self.task_columns),
                        *(_raw(self.metrics.get((m, c), {}).get(k)) for c, k in metric_cols)])
        return out.getvalue()

    def to_markdown(self) -> str:
        """Main scores and suite averages as a Markdown table (scores x 100)."""
        header = self.header()
        lines = ["| " + " | ".join(header) + " |",
                 "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in self.main_table_rows()]
        return "Main score of each task, x 100; `avg:` columns average a complete suite.\n\n" \
            + "\n".join(lines) + "\n"

    def to_rich(self) -> Table:
        """The main table for the terminal."""
        table = Table(title="itra-bench leaderboard (main scores x 100)")
        for i, h in enumerate(self.header()):
            table.add_column(h, justify="left" if i == 0 else "right",
                             style="bold" if h.startswith("avg:") else None)
        for r in self.main_table_rows():
            table.add_row(*r)
        return table


def _pct(v: float | None) -> str:
    return "" if v is None else f"{100 * v:.2f}"


def _raw(v: float | None) -> str:
    return "" if v is None else repr(float(v))


def collate(root: str | Path) -> Leaderboard:
    """Read every result under ``root``. A model name that appears with two fingerprints
    gets the fingerprint prefix appended, so different weights never share a row."""
    records = [r for _, r in iter_records(root)]
    fps: dict[str, set[str]] = {}
    for r in records:
        fps.setdefault(r["model"]["name"], set()).add(r["model"]["fingerprint"])

    def model_label(r: dict[str, Any]) -> str:
        name = r["model"]["name"]
        return name if len(fps[name]) == 1 else f"{name} ({r['model']['fingerprint'][:8]})"

    models: list[str] = []
    tasks: list[str] = []
    suites: dict[str, set[str]] = {}
    main: dict[tuple[str, str], float] = {}
    metrics: dict[tuple[str, str], dict[str, float]] = {}
    for r in records:
        m, c = model_label(r), column_label(r)
        if m not in models:
            models.append(m)
        if c not in tasks:
            tasks.append(c)
        for s in r.get("suites", []):
            suites.setdefault(s, set()).add(c)
        main[(m, c)] = float(r["main_score_value"])
        metrics[(m, c)] = {k: float(v) for k, v in r["metrics"].items()}
    suite_avg = {}
    for m in models:
        for s, cols in suites.items():
            if all((m, c) in main for c in cols):
                suite_avg[(m, s)] = sum(main[(m, c)] for c in cols) / len(cols)
    return Leaderboard(sorted(models), sorted(tasks), sorted(suites), main, metrics, suite_avg)


def write_leaderboard(root: str | Path, out_dir: str | Path | None = None) -> Leaderboard:
    """Collate ``root`` and write ``leaderboard.csv`` and ``leaderboard.md`` into ``out_dir``
    (default: ``root``)."""
    board = collate(root)
    out = Path(out_dir or root)
    atomic_write_text(out / "leaderboard.csv", board.to_csv())
    atomic_write_text(out / "leaderboard.md", board.to_markdown())
    return board
