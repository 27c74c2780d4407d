"""Built-in task plugins (mounted as itra_bench.tasks)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from itra_bench.task import Task
from itra_bench.yaml_tasks import load_task_file

#: The YAML cards of the built-in tasks whose data files are parameters.
CARDS_DIR = Path(__file__).parent / "cards"


def load_cards(names: Iterable[str],
               protocols: Mapping[str, Callable[[dict[str, Any], Path], Task]]) -> list[Task]:
    """The built-in tasks of the shipped cards ``tasks/cards/<name>.yaml``, read and
    validated exactly as a user's task file of the same protocol."""
    return [load_task_file(CARDS_DIR / f"{name}.yaml", protocols, shipped=True)
            for name in names]
