"""What the HTML report of ``itra-bench report`` shows, gathered from the results: which
results folder a folder stands for (itself, or an itra-train run folder's evaluation results),
which leaderboard columns each chart holds, and each task's main score over epochs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from itra_bench.errors import UserError
from itra_bench.leaderboard import Leaderboard, column_label, suite_column
from itra_bench.results import iter_records
from itra_bench.task import variant_family

#: Where ``itra-bench watch`` stores a run's results, and where in-training evaluation does.
WATCH_RESULTS = "watch-results"
TRAINING_EVAL = "eval"
#: Chart key of the tasks that belong to no suite.
OTHER = "other tasks"

# ``logs/run/checkpoints/epoch_3.pt`` (watch), ``run@epoch_3`` (evaluation during training);
# collate may append `` (fingerprint)`` when one name has two sets of weights.
_EPOCH = re.compile(r"(?:^|[/@\\])epoch_(\d+)(?:\.pt)?(?: \([0-9a-f]+\))?$")


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
class ChartColumns:
    """Per chart (suite and variant family, or tasks in no suite) its leaderboard columns,
    and each column's main score name."""

    charts: dict[str, list[str]]
    main_score: dict[str, str]


def chart_columns(root: Path, board: Leaderboard) -> ChartColumns:
    """The charts of the results under ``root``, their columns in the order of ``board``."""
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
    return ChartColumns({k: sorted(charts[k], key=order.__getitem__) for k in keys},
                        main_score)


@dataclass
class EpochPoint:
    """A task's main score at one epoch: the model (checkpoint) that gave it, and its
    interval where the result has one."""

    epoch: int
    model: str
    value: float
    interval: tuple[float, float] | None


def epoch_points(board: Leaderboard) -> dict[str, list[EpochPoint]]:
    """Per task column, its main score at each epoch (the models named after epochs)."""
    points: dict[str, dict[int, EpochPoint]] = {}
    for model in board.models:
        epoch = epoch_of(model)
        if epoch is None:
            continue
        for column in board.task_columns:
            if (model, column) in board.main:
                points.setdefault(column, {})[epoch] = EpochPoint(
                    epoch, model, board.main[(model, column)],
                    board.intervals.get((model, column)))
    return {c: [p[e] for e in sorted(p)] for c, p in points.items()}
