"""Built-in task plugins (mounted as itra_bench.tasks): one package per benchmark, holding its
plugin (``plugin.py``, the module its entry point names), the modules only it uses, and its
YAML cards (``cards/``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from itra_bench.task import Task
from itra_bench.yaml_tasks import TaskFileProtocol, load_task_file


def load_cards(folder: Path, protocols: Mapping[str, TaskFileProtocol]) -> list[Task]:
    """The built-in tasks of a benchmark's YAML cards in ``folder``, in the order of their file
    names, each read and validated exactly as a user's task file of its ``task_type`` (one
    of ``protocols``, the benchmark's own)."""
    return [load_task_file(path, protocols, shipped=True)
            for path in sorted(folder.glob("*.yaml"))]
