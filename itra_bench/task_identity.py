"""Who provided a task and what it computes: the plugin a result records, and the id of the
task's definition that decides whether a stored result is still its result."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from typing import Any

from itra_bench.registry import PluginInfo, Registry
from itra_bench.task import DEFINITION, Task


def task_provider(task: Task, registry: Registry) -> PluginInfo:
    """The plugin that provided ``task``: its registering plugin, or for a task file the
    plugin of its protocol (itra-bench itself for the built-in protocols)."""
    provided = registry.tasks.get(task.name)
    if provided is not None and provided.item is task:
        return provided.plugin
    protocol = registry.task_file_protocols.get(task.task_type)
    if protocol is not None:
        return protocol.plugin
    from itra_bench import __version__

    return PluginInfo("task file", "itra-bench", "itra_bench.yaml_tasks", __version__)


def task_definition(task: Task) -> str:
    """An id of what a task computes beyond its data (its fields: templates, class names, k,
    splits, card, ...), so that a rerun after editing a task file recomputes.

    The fields are the ``__init__`` fields of its dataclass, those marked
    :data:`itra_bench.task.BOOKKEEPING` left out: the others are derived from them.
    """
    mro = type(task).__mro__
    if not any("__dataclass_fields__" in vars(c) for c in mro[:mro.index(Task)]):
        return ""  # a plain class's settings live in its code (Task's own fields are common)
    text = json.dumps(_canonical(task), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _canonical(value: Any) -> Any:
    """``value`` as JSON that is the same in every process (sets sorted, no addresses)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"class": type(value).__qualname__,
                **{f.name: _canonical(getattr(value, f.name)) for f in dataclasses.fields(value)
                   if f.init and f.metadata.get(DEFINITION, True)}}
    if isinstance(value, set | frozenset):
        return sorted((_canonical(v) for v in value), key=repr)
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))
