"""``itra-bench compare``: is model B better than model A? Per task, both main scores, the
difference B - A with its paired bootstrap interval and a paired permutation p-value, a
marker for differences that survive Holm's correction across the tasks compared, and per
suite the mean difference with its interval."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from itra_bench.bootstrap import CONFIDENCE, RESAMPLES, holm
from itra_bench.errors import UserError
from itra_bench.leaderboard import (
    column_label,
    model_labeller,
    suite_column,
    suite_membership,
)
from itra_bench.results import iter_records
from itra_bench.sample_outcomes import OutcomeMismatchError, compare, read_outcomes
from itra_bench.tables import Column, Value, readable, render
from itra_bench.task import variant_family
from itra_bench.vocabulary import INTERVAL_ENDS

if TYPE_CHECKING:
    from rich.console import Console

#: Family-wise error rate of the Holm marker.
ALPHA = 0.05


@dataclass
class TaskDifference:
    """One task (variant) compared: both scores, B - A, its interval and p-value."""

    task: str
    column: str
    main_score: str
    a: float
    b: float
    difference: float
    low: float
    high: float
    p_value: float
    significant: bool
    suites: tuple[str, ...]
    family: str
    distribution: np.ndarray


@dataclass
class SuiteDifference:
    """The mean of B - A over a suite's compared tasks (one variant family)."""

    suite: str
    tasks: int
    a: float
    b: float
    difference: float
    low: float
    high: float


@dataclass
class Comparison:
    """Everything ``itra-bench compare`` prints."""

    model_a: str
    model_b: str
    tasks: list[TaskDifference]
    suites: list[SuiteDifference]
    only_a: list[str]
    only_b: list[str]
    resamples: int
    confidence: float

    def columns(self, fmt: str = "table") -> list[Column]:
        """Columns of :meth:`rows` in ``fmt`` for :func:`itra_bench.tables.render`."""
        interval = ([Column("ci", f"{100 * self.confidence:g}% CI", whole=True, align="right")]
                    if readable(fmt) else [Column(end) for end in INTERVAL_ENDS])
        return [Column("task", whole=True), Column("main_score", "main score", whole=True),
                Column("a", "A", whole=True, align="right"),
                Column("b", "B", whole=True, align="right"),
                Column("difference", "B - A", whole=True, align="right"), *interval,
                Column("p_value", "p", whole=True, align="right", number="{:.4f}"),
                Column("significant", "Holm", whole=True)]

    def rows(self, fmt: str = "table") -> list[dict[str, Value]]:
        """One row per task, then one per suite (``avg:SUITE``); scores x 100. For ``csv``
        and ``json`` the interval is two numbers, ``low`` and ``high``."""
        text = readable(fmt)
        rows = [(t.column, t.main_score, t, t.p_value, t.significant) for t in self.tasks]
        rows += [(f"avg:{s.suite} ({s.tasks} tasks)", "mean", s, None, None)
                 for s in self.suites]
        out: list[dict[str, Value]] = []
        for label, main_score, d, p_value, significant in rows:
            marker = ("*" if significant else "") if text else significant
            out.append({"task": label, "main_score": main_score, "a": 100 * d.a,
                        "b": 100 * d.b,
                        "difference": f"{100 * d.difference:+.2f}" if text
                        else 100 * d.difference,
                        "p_value": p_value, "significant": marker,
                        **({"ci": f"[{100 * d.low:+.2f}, {100 * d.high:+.2f}]"} if text
                           else dict(zip(INTERVAL_ENDS, (100 * d.low, 100 * d.high),
                                         strict=True)))})
        return out

    def print(self, console: Console, fmt: str = "table") -> None:
        """The comparison (:meth:`rows`) in ``fmt``, titled :meth:`title`."""
        render(self.rows(fmt), self.columns(fmt), fmt, console, title=self.title())

    def title(self) -> str:
        """What the table shows, in one paragraph."""
        return (f"B = {self.model_b} vs A = {self.model_a}: main scores x 100; B - A with "
                f"its paired bootstrap {100 * self.confidence:g}% interval ({self.resamples} "
                "resamples of the evaluation samples) and a p-value (paired permutation; "
                "bootstrap for correlations, AUC, mAP and clustering); "
                f"* = significant after Holm's correction across the {len(self.tasks)} "
                f"task(s) at {ALPHA}")


def _pick(label: str, models: Mapping[str, list[dict[str, Any]]], flag: str) -> str:
    """The model a ``--models`` entry names: its row name as ``itra-bench results`` shows
    it, a unique file name of that (``epoch_2.pt``), or a unique fingerprint prefix."""
    if label in models:
        return label
    by_file = [m for m in models if Path(m.split(" (")[0]).name == label]
    by_fp = [m for m, recs in models.items()
             if len(label) >= 4 and recs[0]["model"]["fingerprint"].startswith(label)]
    for found in (by_file, by_fp):
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise UserError(f"{flag} {label!r} matches several models ({', '.join(found)}); "
                            "give the full name as `itra-bench results` shows it")
    raise UserError(f"{flag} {label!r}: no such model in the results; the models are: "
                    + ", ".join(sorted(models)))


def compare_results(root: str | Path, model_a: str, model_b: str, *,
                    resamples: int = RESAMPLES, confidence: float = CONFIDENCE,
                    seed: int = 0,
                    suite_members: Mapping[str, Iterable[str]] | None = None,
                    problems: list[str] | None = None) -> Comparison:
    """Compare two models' results under ``root`` task by task (see the module).
    ``suite_members``: the installed plugins' suites (a suite's mean difference needs every
    member, see :func:`itra_bench.leaderboard.suite_membership`). Unreadable result files
    are described in ``problems`` when a list is given."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"results folder not found: {root}")
    if resamples < 1:
        raise UserError("--resamples must be at least 1")
    found = list(iter_records(root, problems))
    label = model_labeller([r for _, r in found])
    models: dict[str, list[dict[str, Any]]] = {}
    paths: dict[int, Path] = {}
    for path, record in found:
        models.setdefault(label(record), []).append(record)
        paths[id(record)] = path
    if not models:
        raise UserError(f"no itra-bench result files under {root}")
    a_name, b_name = _pick(model_a, models, "--models"), _pick(model_b, models, "--models")
    if a_name == b_name:
        raise UserError(f"--models names the same model twice ({a_name})")
    a_by = {column_label(r): r for r in models[a_name]}
    b_by = {column_label(r): r for r in models[b_name]}
    common = [c for c in sorted(a_by) if c in b_by]
    if not common:
        raise UserError(f"{a_name} and {b_name} have no task in common under {root}")
    diffs = []
    for column in common:
        ra, rb = a_by[column], b_by[column]
        _same_data(column, ra, rb)
        try:
            pa = read_outcomes(paths[id(ra)], ra)
            pb = read_outcomes(paths[id(rb)], rb)
            d = compare(pa, pb, ra["main_score"], resamples=resamples, confidence=confidence,
                        seed=seed)
        except OutcomeMismatchError as exc:
            raise UserError(f"task {column}: {exc}") from exc
        diffs.append(TaskDifference(
            ra["task"], column, ra["main_score"], d.b, d.a, d.difference.estimate,
            d.difference.low, d.difference.high, d.p_value, False,
            tuple(ra.get("suites", [])),
            variant_family(ra["variant"], ra.get("protocol", ""), ra.get("variant_family")),
            d.distribution))
    for t, rejected in zip(diffs, holm([t.p_value for t in diffs], ALPHA), strict=True):
        t.significant = rejected
    members = suite_membership([*models[a_name], *models[b_name]], suite_members)
    return Comparison(a_name, b_name, diffs, _suites(diffs, members, confidence),
                      [c for c in sorted(a_by) if c not in b_by],
                      [c for c in sorted(b_by) if c not in a_by], resamples, confidence)


def _same_data(column: str, a: Mapping[str, Any], b: Mapping[str, Any]) -> None:
    """Refuse a pair of results that were not computed on the same data the same way."""
    da, db = a.get("data", {}), b.get("data", {})
    if da.get("identity") != db.get("identity"):
        raise UserError(f"task {column}: the two models were evaluated on different data (the "
                        "results' data identity differs); rerun both on the same files to "
                        "compare them")
    if da.get("task_definition", "") != db.get("task_definition", ""):
        raise UserError(f"task {column}: the two results come from different task definitions "
                        "(templates, class names, splits, ...); rerun both with one definition")
    if a["main_score"] != b["main_score"] or a.get("num_samples") != b.get("num_samples"):
        raise UserError(f"task {column}: the two results measured different things "
                        f"({a['main_score']} on {a.get('num_samples')} samples, "
                        f"{b['main_score']} on {b.get('num_samples')})")


def _suites(diffs: list[TaskDifference], members: Mapping[str, frozenset[str] | None],
            confidence: float) -> list[SuiteDifference]:
    """Per suite and variant family whose every declared member (``members``) was compared:
    the mean over tasks (seeds averaged per task first) of the scores and of B - A, whose
    interval averages the tasks' bootstrap resamples."""
    by_suite: dict[tuple[str, str], dict[str, list[TaskDifference]]] = {}
    for t in diffs:
        for s in t.suites:
            by_suite.setdefault((s, t.family), {}).setdefault(t.task, []).append(t)
    groups = {suite_column(s, family): tasks for (s, family), tasks in by_suite.items()
              if set(tasks) == members.get(s)}
    tail = 100 * (1 - confidence) / 2
    out = []
    for name in sorted(groups):
        per_task = list(groups[name].values())

        def avg(values: list[Any]) -> Any:
            return sum(values) / len(values)
        a = avg([avg([t.a for t in ts]) for ts in per_task])
        b = avg([avg([t.b for t in ts]) for ts in per_task])
        dist = avg([avg([t.distribution for t in ts]) for ts in per_task])
        low, high = np.nanpercentile(dist, [tail, 100 - tail])
        out.append(SuiteDifference(name, len(per_task), a, b, b - a, float(low), float(high)))
    return out
