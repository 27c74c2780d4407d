"""Collate a results folder into a leaderboard: models x task metrics, with suite averages."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from itra_bench.atomic_io import atomic_write_text
from itra_bench.results import iter_records
from itra_bench.tables import Column, Value, readable, render, to_markdown
from itra_bench.task import variant_family
from itra_bench.vocabulary import INTERVAL_ENDS

if TYPE_CHECKING:
    from rich.console import Console


def column_label(record: dict[str, Any]) -> str:
    """A task's column name: the task, plus its variant when that is not the plain protocol."""
    variant = record["variant"]
    if variant in ("default", record.get("protocol")):
        return record["task"]
    return f"{record['task']}[{variant}]"


#: The title of the leaderboard wherever it is printed.
TITLE = ("itra-bench leaderboard (main scores x 100 with their 95 % bootstrap interval: "
         "± half-width where symmetric, else [low, high])")


@dataclass
class Leaderboard:
    """Main scores and all metrics per model; suite averages over complete suites only.
    ``intervals`` holds each main score's 95 % bootstrap interval (low, high) where its
    result has one."""

    models: list[str]
    task_columns: list[str]
    suite_columns: list[str]
    main: dict[tuple[str, str], float]
    metrics: dict[tuple[str, str], dict[str, float]]
    suite_avg: dict[tuple[str, str], float]
    intervals: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)

    def score_text(self, model: str, column: str) -> str:
        """One main score x 100, with its interval when it has one (see
        :func:`score_with_interval`)."""
        value = self.main.get((model, column))
        ci = self.intervals.get((model, column))
        if value is None or ci is None:
            return _pct(value)
        return score_with_interval(value, *ci)

    def to_csv(self) -> str:
        """Every metric (raw values, 0-1 scale), one row per model."""
        metric_cols = sorted({(c, k) for (m, c), d in self.metrics.items() for k in d},
                             key=lambda ck: (self.task_columns.index(ck[0]), ck[1]))
        out = io.StringIO()
        w = csv.writer(out)
        w.writerow(["model", *(f"avg:{s}" for s in self.suite_columns), *self.task_columns,
                    *(f"{c}/{end}" for c in self.task_columns for end in _CI_COLUMNS),
                    *(f"{c}/{k}" for c, k in metric_cols)])
        for m in self.models:
            w.writerow([m, *(_raw(self.suite_avg.get((m, s))) for s in self.suite_columns),
                        *(_raw(self.main.get((m, c))) for c in self.task_columns),
                        *(_raw(ci[i] if (ci := self.intervals.get((m, c))) else None)
                          for c in self.task_columns for i in range(2)),
                        *(_raw(self.metrics.get((m, c), {}).get(k)) for c, k in metric_cols)])
        return out.getvalue()

    def to_markdown(self) -> str:
        """Main scores and suite averages as a Markdown table (scores x 100), with a note on
        what they are."""
        return ("Main score of each task, x 100, with its 95 % bootstrap interval over the "
                "evaluation samples (where the result records per-sample outcomes): "
                "`score ± half-width` where the interval is symmetric at two decimals, else "
                "`score [low, high]`; `avg:SUITE[/FAMILY]` columns average a "
                "suite's tasks within one variant family (seeds averaged per task first), "
                "only where every task of the suite has a result.\n\n") \
            + to_markdown(self.rows("markdown"), self.columns("markdown"))

    def print(self, console: Console, fmt: str = "table") -> None:
        """The main table (:meth:`rows`) in ``fmt``, titled :data:`TITLE`."""
        render(self.rows(fmt), self.columns(fmt), fmt, console, title=TITLE)

    def columns(self, fmt: str = "table") -> list[Column]:
        """The main table's columns for :func:`itra_bench.tables.render` in ``fmt`` (see
        :meth:`rows`): model and task names are never cut."""
        cols = [Column("model", whole=True),
                *(Column(f"avg:{s}", whole=True, align="right") for s in self.suite_columns)]
        for c in self.task_columns:
            cols.append(Column(c, whole=True, align="right"))
            if not readable(fmt):
                cols += [Column(f"{c}/{end}", whole=True, align="right") for end in _CI_COLUMNS]
        return cols

    def rows(self, fmt: str = "table") -> list[dict[str, Value]]:
        """One row per model: suite averages and main scores x 100 (None where missing).

        For ``table`` and ``markdown`` a score with an interval is the text
        ``71.20 ± 1.05`` or ``13.13 [10.20, 15.90]``; for ``csv`` and ``json`` scores stay
        numbers and each interval is given as ``TASK/low`` and ``TASK/high`` (x 100), keys
        that :meth:`columns` lists for those formats."""
        def pct(v: float | None) -> float | None:
            return None if v is None else 100 * v

        text = readable(fmt)
        out: list[dict[str, Value]] = []
        for m in self.models:
            row: dict[str, Value] = {"model": m, **{f"avg:{s}": pct(self.suite_avg.get((m, s)))
                                                    for s in self.suite_columns}}
            for c in self.task_columns:
                ci = self.intervals.get((m, c))
                if text:
                    row[c] = self.score_text(m, c) or None
                else:
                    row[c] = pct(self.main.get((m, c)))
                    for end, bound in zip(_CI_COLUMNS, ci or (None, None), strict=True):
                        row[f"{c}/{end}"] = pct(bound)
            out.append(row)
        return out


#: The interval's columns beside each task's (``TASK/low``, ``TASK/high``).
_CI_COLUMNS = INTERVAL_ENDS


def _pct(v: float | None) -> str:
    return "" if v is None else f"{100 * v:.2f}"


def score_with_interval(value: float, low: float, high: float) -> str:
    """``value`` x 100 with its interval: ``97.04 ± 1.30`` where both ends lie equally far
    from it at the printed precision, else ``13.13 [10.20, 15.90]`` (a ``±`` would claim a
    symmetry that is not there)."""
    below, above = f"{100 * (value - low):.2f}", f"{100 * (high - value):.2f}"
    if below == above:
        return f"{_pct(value)} ± {below}"
    return f"{_pct(value)} [{_pct(low)}, {_pct(high)}]"


def _raw(v: float | None) -> str:
    return "" if v is None else repr(float(v))


def model_labeller(records: list[dict[str, Any]]) -> Callable[[dict[str, Any]], str]:
    """The row name of a result's model: its name, with the fingerprint prefix appended
    when that name appears with more than one fingerprint among ``records``."""
    fps: dict[str, set[str]] = {}
    for r in records:
        fps.setdefault(r["model"]["name"], set()).add(r["model"]["fingerprint"])

    def label(r: dict[str, Any]) -> str:
        name = r["model"]["name"]
        return name if len(fps[name]) == 1 else f"{name} ({r['model']['fingerprint'][:8]})"
    return label


def suite_column(suite: str, family: str) -> str:
    """The name of a suite average: the suite, plus the variant family when it has one
    (``elevater/zeroshot``, ``elevater/linear_probe-5shot``)."""
    return f"{suite}/{family}" if family else suite


def suite_membership(records: Iterable[Mapping[str, Any]],
                     installed: Mapping[str, Iterable[str]] | None = None
                     ) -> dict[str, frozenset[str] | None]:
    """Each suite's members, as declared: by the installed plugins (``installed``) and as
    the results record their suite's declaration (``suite_members``). A suite that results
    name but nothing declares (a task file's own ``suites:``) maps to None: it gets no
    average. Results older than ``suite_members`` count their own task as a member."""
    members: dict[str, set[str]] = {s: set(m) for s, m in (installed or {}).items()}
    named: set[str] = set()
    for r in records:
        recorded = r.get("suite_members")
        for s in r.get("suites", []):
            named.add(s)
            if not isinstance(recorded, dict):
                members.setdefault(s, set()).add(r["task"])
            elif isinstance(recorded.get(s), list):
                members.setdefault(s, set()).update(recorded[s])
    return {s: frozenset(members[s]) if s in members else None for s in named | set(members)}


def collate(root: str | Path, problems: list[str] | None = None,
            suite_members: Mapping[str, Iterable[str]] | None = None) -> Leaderboard:
    """Read every result under ``root``. A model name that appears with two fingerprints
    gets the fingerprint prefix appended, so different weights never share a row.

    A suite average is taken per variant family (zero-shot, full linear probe, 5-shot linear
    probe, ...), never across families, and only when every task of the suite has a result
    in that family; seeds of one family are averaged per task first. A suite's tasks are
    those its declarations fix (:func:`suite_membership`: the results' record of them and
    ``suite_members`` given here, the installed plugins' suites); a suite nothing declares
    gets no average. Unreadable result files are described in ``problems`` when a list is
    given.
    """
    records = [r for _, r in iter_records(root, problems)]
    model_label = model_labeller(records)

    models: list[str] = []
    tasks: list[str] = []
    suite_tasks = suite_membership(records, suite_members)
    main: dict[tuple[str, str], float] = {}
    metrics: dict[tuple[str, str], dict[str, float]] = {}
    intervals: dict[tuple[str, str], tuple[float, float]] = {}
    # (model, suite, family) -> task -> main scores of that family's variants (seeds)
    by_family: dict[tuple[str, str, str], dict[str, list[float]]] = {}
    for r in records:
        m, c = model_label(r), column_label(r)
        if m not in models:
            models.append(m)
        if c not in tasks:
            tasks.append(c)
        family = variant_family(r["variant"], r.get("protocol", ""), r.get("variant_family"))
        for s in r.get("suites", []):
            by_family.setdefault((m, s, family), {}).setdefault(r["task"], []).append(
                float(r["main_score_value"]))
        main[(m, c)] = float(r["main_score_value"])
        ci = r.get("main_score_interval")
        if isinstance(ci, dict):
            low, high = (float(ci[end]) for end in INTERVAL_ENDS)
            intervals[(m, c)] = (low, high)
        # Older files' renamed metrics come with today's names (iter_records).
        metrics[(m, c)] = {k: float(v) for k, v in r["metrics"].items()}
    suite_avg = {}
    for (m, s, family), per_task in by_family.items():
        if set(per_task) == suite_tasks[s]:  # never for an undeclared suite (None)
            means = [sum(v) / len(v) for v in per_task.values()]
            suite_avg[(m, suite_column(s, family))] = sum(means) / len(means)
    # A suite no model completed gets no column (an empty one would read as "not run").
    columns = sorted({c for (_, c) in suite_avg})
    return Leaderboard(sorted(models), sorted(tasks), columns, main, metrics, suite_avg,
                       intervals)


def write_leaderboard(root: str | Path, out_dir: str | Path | None = None,
                      problems: list[str] | None = None,
                      suite_members: Mapping[str, Iterable[str]] | None = None) -> Leaderboard:
    """Collate ``root`` (see :func:`collate`) and write ``leaderboard.csv`` and
    ``leaderboard.md`` into ``out_dir`` (default: ``root``); unreadable result files are
    described in ``problems``."""
    board = collate(root, problems, suite_members)
    out = Path(out_dir or root)
    atomic_write_text(out / "leaderboard.csv", board.to_csv())
    atomic_write_text(out / "leaderboard.md", board.to_markdown())
    return board
