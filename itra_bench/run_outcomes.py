"""What happened to each task of a run (:class:`Outcome`), and the summary table of them: one
row per task, its main score x 100 with its 95 % interval, time and status.

Torch-free: :meth:`itra_bench.Results.print` prints stored scores with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from itra_bench.tables import Column, render

if TYPE_CHECKING:
    from rich.console import Console


@dataclass
class Outcome:
    """What happened to one task in a run."""

    task: str
    variant: str
    status: str  # "done", "skipped (exists)", "skipped (<reason>)"
    main_score: str = ""
    value: float | None = None
    seconds: float = 0.0
    path: str = ""
    #: The main score's 95 % bootstrap interval, when the task records per-sample outcomes.
    low: float | None = None
    high: float | None = None
    #: Every metric the task reported (empty for a skipped task).
    metrics: dict[str, Any] = field(default_factory=dict)


def print_outcomes(outcomes: list[Outcome], model: str, console: Console,
                   fmt: str = "table") -> None:
    """The summary of a run: each task's main score x 100 with its 95 % interval."""
    render(outcome_rows(outcomes), outcome_columns(), fmt, console,
           title=f"itra-bench run: {model}")


def outcome_columns() -> list[Column]:
    """Columns of :func:`outcome_rows` for :func:`itra_bench.tables.render`."""
    return [Column("task", whole=True), Column("variant", whole=True),
            Column("main score", whole=True), Column("value", align="right", whole=True),
            Column("95% CI", align="right", whole=True),
            Column("seconds", align="right", whole=True), Column("status")]


def outcome_rows(outcomes: list[Outcome]) -> list[dict[str, Any]]:
    """One row per task of a run: main score x 100, its interval, time and status."""
    return [{"task": o.task, "variant": o.variant, "main score": o.main_score,
             "value": None if o.value is None else f"{100 * o.value:.2f}",
             "95% CI": "" if o.low is None else f"[{100 * o.low:.2f}, {100 * o.high:.2f}]",
             "seconds": f"{o.seconds:.1f}" if o.status == "done" else "",
             "status": o.status} for o in outcomes]
