"""Checks of the selected tasks before any encoding: their variants can name result files,
and their data is all there and matches what each task knows of it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from itra_bench.errors import MissingDataError, PluginBugError, UserError
from itra_bench.registry import Registry
from itra_bench.results import NAME_RULE, is_safe_name
from itra_bench.task import Task
from itra_bench.task_identity import task_provider


def check_variants(tasks: list[Task], options: Mapping[str, Any], registry: Registry) -> None:
    """Refuse, as the bug of the task's plugin, a variant name that cannot name a result file
    and two variants of one task that would share one (names equal up to case)."""
    for task in tasks:
        seen: dict[str, str] = {}
        for variant in task.variants(options):
            name = variant.name
            if not is_safe_name(name):
                problem = (f"a variant named {name!r}, which cannot name a result file: "
                           f"variant names use {NAME_RULE}")
            elif name.lower() in seen:
                other = seen[name.lower()]
                problem = (f"the variant {name!r} twice" if other == name else
                           f"variants {other!r} and {name!r}, one result file where case is "
                           "ignored (macOS, Windows)")
            else:
                seen[name.lower()] = name
                continue
            raise PluginBugError(f"plugin bug: task {task.name!r} of "
                                 f"{task_provider(task, registry).describe()} lists {problem}. "
                                 "Report it to the plugin's authors.")


def missing_data(tasks: list[Task], data_root: Path, options: Mapping[str, Any]
                 ) -> dict[str, list[Path]]:
    """For each task whose files are not all there, the paths that are missing."""
    out = {}
    for task in tasks:
        missing = [p for p in task.required_paths(data_root, options) if not p.exists()]
        if missing:
            out[task.name] = missing
    return out


def check_data(tasks: list[Task], data_root: Path, options: Mapping[str, Any]) -> None:
    """Fail before any encoding when a task's files are missing, listing all of them."""
    missing = missing_data(tasks, data_root, options)
    if missing:
        by_name = {t.name: t for t in tasks}
        problems = [f"task {name!r}: missing " + ", ".join(map(str, paths))
                    + f"\n    expected layout: {by_name[name].layout}"
                    for name, paths in missing.items()]
        raise MissingDataError(
            f"data not found under --data-root {data_root}:\n  " + "\n  ".join(problems)
            + "\n  (--skip-missing runs the tasks whose data is present)")


def check_files(tasks: list[Task], data_root: Path, options: Mapping[str, Any]) -> None:
    """Fail before any encoding when files disagree with what their task knows."""
    problems = [f"task {t.name!r}: {line}" for t in tasks
                for line in t.check_files(data_root, options)]
    if problems:
        raise UserError("data does not match its description:\n  " + "\n  ".join(problems))
