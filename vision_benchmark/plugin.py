"""The ELEVATER plugin, registered as ``elevater_tasks``: one task per dataset card and the
``elevater`` task type of task files (the task: ``task.py``), the ``itra-bench submit``
command that builds the EvalAI zip, the ELEVATER summary of ``itra-bench results`` and
``report``, the resampled 11-point mAP that gives multilabel results their intervals, and
the declarations of the metrics its results report.
``--disable-plugin elevater_tasks`` removes all of it.

Loaded by every command: what it hands over names its heavy modules (numpy, torch) through
:class:`itra_bench.lazy_import.LazyFactory`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from itra_bench import hookimpl
from itra_bench.commands import Command
from itra_bench.lazy_import import LazyFactory
from itra_bench.metric_names import Metric
from itra_bench.outcome_statistics import OutcomeStatistic
from itra_bench.paths import expand_path
from itra_bench.summaries import ResultSummary
from itra_bench.task import Task
from itra_bench.vision_benchmark.cards import builtin_cards
from itra_bench.vision_benchmark.metric_names import DECLARED
from itra_bench.vision_benchmark.task import ElevaterTask, elevater_card_task


@hookimpl
def itra_bench_tasks() -> list[Task]:
    return [ElevaterTask(card=card) for card in builtin_cards()]


@hookimpl
def itra_bench_task_file_protocols() -> dict[str, Callable[[dict[str, Any], Path], Task]]:
    return {"elevater": elevater_card_task}


def _submit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", type=expand_path,
                        help="one model's results folder (or any folder of "
                             "*.predictions.json files)")
    parser.add_argument("-o", "--output", default="submission.zip", type=expand_path,
                        help="zip to write")
    parser.add_argument("--variant", metavar="PREFIX",
                        help="only prediction files whose variant starts with PREFIX, e.g. "
                             "zeroshot or linear_probe-5shot")


@hookimpl
def itra_bench_commands() -> list[Command]:
    return [Command("submit", "combine ELEVATER prediction files into an EvalAI zip",
                    run=LazyFactory("itra_bench.vision_benchmark.submission",
                                    "submit_command"),
                    add_arguments=_submit_arguments)]


@hookimpl
def itra_bench_result_summaries() -> list[ResultSummary]:
    return [ResultSummary("elevater", "ELEVATER summary",
                          LazyFactory("itra_bench.vision_benchmark.summary", "result_summary"))]


@hookimpl
def itra_bench_metrics() -> list[Metric]:
    return list(DECLARED)


@hookimpl
def itra_bench_outcome_statistics() -> list[OutcomeStatistic]:
    # Vectorised over resamples, and bit-identical to ELEVATER's metric on each one. A
    # duplicated positive ranks right beside its copy, which displaces the bootstrap
    # distribution: intervals are recentred within the metric's range.
    return [OutcomeStatistic("multilabel", "11point_mAP",
                             LazyFactory("itra_bench.vision_benchmark.resampled_map",
                                         "resampled_eleven_point_map"),
                             recentred=(0.0, 1.0))]
