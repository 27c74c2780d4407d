"""``itra-bench check-data``: which tasks have their data, and the files each looks for."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from itra_bench.commands import Command
from itra_bench.registry import Registry
from itra_bench.run_flags import add_run_flag, task_options
from itra_bench.tables import Column, Value, add_format_argument, render


def add_arguments(check: argparse.ArgumentParser) -> None:
    """The flags of ``itra-bench check-data`` (besides the plugin and protocol groups)."""
    check.add_argument("--tasks", required=True, nargs="+", metavar="TASK")
    add_run_flag(check, "data_root")
    add_format_argument(check)


def check_data_command(args: argparse.Namespace, registry: Registry, console: Console) -> int:
    """Show each task's files under ``--data-root``; exit 1 when a task is not ready."""
    from itra_bench.task_selection import resolve_tasks

    data_root = Path(args.data_root)
    options = task_options(args)
    tasks = resolve_tasks(args.tasks, registry)
    # One row per file: names and paths are never cut, the layout and problems wrap.
    columns = [Column("task", whole=True), Column("status", whole=True),
               Column("found", whole=True), Column("file", whole=True), Column("notes")]
    rows: list[dict[str, Value]] = []
    bad_tasks = 0
    for task in tasks:
        paths = task.required_paths(data_root, options)
        missing = [p for p in paths if not p.exists()]
        problems = [] if missing else task.check_files(data_root, options)
        bad_tasks += bool(missing or problems)
        status = "missing" if missing else "mismatch" if problems else "ready"
        files = [{"found": "no" if p in missing else "yes", "file": str(p)} for p in paths] \
            or [{"file": "(embedded data)"}]
        notes = [f"layout: {task.layout}", *(f"! {line}" for line in problems)]
        for n in range(max(len(files), len(notes))):
            row: dict[str, Value] = {"task": task.name, "status": status}
            row.update(files[n] if n < len(files) else {})
            row["notes"] = notes[n] if n < len(notes) else None
            rows.append(row)
    render(rows, columns, args.format, Console(),
           title=f"data under {data_root} (--mode {args.mode})")
    if bad_tasks:
        console.print(f"{bad_tasks} task(s) are not ready: files found `no` are missing, "
                      "notes marked ! disagree with what the task expects")
        return 1
    return 0


COMMAND = Command("check-data", "show which tasks have their data, and the files looked for",
                  run=check_data_command, add_arguments=add_arguments,
                  flags=("plugin", "protocol"))
