"""Expand a ``--tasks`` list (task names, suites, task files, suite files) into tasks, with
the declared members of their suites; refuse tasks whose results would share a folder."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from itra_bench.errors import UnknownNameError, UserError
from itra_bench.registry import Registry
from itra_bench.results import result_folder
from itra_bench.task import Task


@dataclass
class TaskSelection:
    """The tasks a ``--tasks`` list names, and the members of each suite they belong to as
    its declaration fixes them (an installed plugin's, or a suite file's in the list)."""

    tasks: list[Task]
    #: Suite -> its member task names, for every declared suite of a selected task.
    suites: dict[str, list[str]]
    #: Suites that selected task files name but nothing declares (no average is taken).
    undeclared: dict[str, list[str]] = field(default_factory=dict)

    def suites_of(self, task: Task) -> list[str]:
        """The suites ``task`` belongs to: those it names, and declared ones listing it."""
        return [*task.suites, *(s for s, members in self.suites.items()
                                if task.name in members and s not in task.suites)]


def resolve_tasks(names: list[str], registry: Registry) -> list[Task]:
    """Expand task names, suite names and YAML task files into tasks (first mention wins)."""
    return select_tasks(names, registry).tasks


def select_tasks(names: list[str], registry: Registry) -> TaskSelection:
    """Expand task names, suite names, task files and suite files into tasks (first mention
    wins), with the declared members of their suites. A task may not name a suite that is
    declared elsewhere without it: its average would then depend on what was run."""
    from itra_bench.yaml_tasks import SuiteFile, load_task_file, load_task_or_suite

    out: dict[str, Task] = {}
    #: task name -> the file that declared it (for messages)
    files: dict[str, str] = {}
    declared = {s: list(members) for s, members in registry.suites.items()}
    declared_by = {s: f"plugin {info.name!r}" for s, info in registry.suite_providers.items()}

    def add(task: Task, source: str | None = None) -> Task:
        if source is not None:
            files.setdefault(task.name, source)
        return out.setdefault(task.name, task)

    protocols = {p: f.item for p, f in registry.task_file_protocols.items()}

    def task_file(path: str | Path, task: Task | None = None) -> Task:
        """Add the task of the task file ``path`` (``task``, when it is read already)."""
        task = task or load_task_file(path, protocols)
        if task.name in registry.tasks:
            raise UserError(f"{path}: task name {task.name!r} is already provided by "
                            f"plugin {registry.tasks[task.name].plugin.name!r}; "
                            "choose another `name`.")
        return add(task, str(path))

    def suite_file(path: str, suite: SuiteFile) -> None:
        """Declare the suite of the suite file ``path`` and add its members."""
        if suite.name in declared or suite.name in registry.tasks:
            raise UserError(f"{path}: suite {suite.name!r} is already declared by "
                            f"{declared_by.get(suite.name, 'another suite file')}"
                            "; choose another `suite` name.")
        declared[suite.name] = [
            (task_file(m) if isinstance(m, Path) else
             installed(m, f"listed in the suite file {path}")).name
            for m in suite.members]
        declared_by[suite.name] = f"the suite file {path}"

    def installed(name: str, where: str) -> Task:
        if name not in registry.tasks and name not in registry.aliases:
            raise UnknownNameError("task", name, registry.tasks, hint=f"({where})",
                                   also={"alias": registry.aliases})
        return add(registry.tasks[registry.aliases.get(name, name)].item)

    for raw in names:
        for name in (n.strip() for n in raw.split(",")):
            if not name:
                continue
            prefix, colon, rest = name.partition(":")
            if colon and prefix in registry.task_prefixes:
                # A task named directly by a plugin's prefix (`wds:PATH`, a clip-benchmark
                # webdataset folder), with no task file.
                task = registry.task_prefixes[prefix].item(rest)
                task.task_type = prefix
                add(task)
            elif name.endswith((".yaml", ".yml")):
                entry = load_task_or_suite(name, protocols)
                if isinstance(entry, SuiteFile):
                    suite_file(name, entry)
                else:
                    task_file(name, entry)
            elif name in registry.tasks or name in registry.aliases:
                installed(name, "--tasks")
            elif name in registry.suites:
                for member in registry.suites[name]:
                    if member not in registry.tasks:
                        raise UserError(f"suite {name!r} names task {member!r}, which no "
                                        "installed plugin provides")
                    add(registry.tasks[member].item)
            else:
                raise UnknownNameError("task", name, registry.tasks,
                                       also={"suite": registry.suites,
                                             "alias": registry.aliases},
                                       hint="Suites are accepted too (`itra-bench list "
                                            "suites`), and so are a path to a task .yaml file "
                                            + "".join(f" and {p}:..." for p in
                                                      sorted(registry.task_prefixes))
                                            + ".")
    if not out:
        raise UserError("--tasks is empty: name at least one task, suite or task .yaml file")
    tasks = list(out.values())
    _refuse_shared_folders(tasks)
    undeclared: dict[str, list[str]] = {}
    for task in tasks:
        for suite in task.suites:
            if suite not in declared:
                undeclared.setdefault(suite, []).append(task.name)
            elif task.name not in declared[suite]:
                raise UserError(
                    f"{files.get(task.name, f'task {task.name!r}')}: the task names suite "
                    f"{suite!r}, which {declared_by[suite]} declares without it; a suite's "
                    "members are fixed where it is declared. Remove it from `suites`, or "
                    "list your tasks in a suite file of your own (`suite: NAME`, `tasks: "
                    "[...]`) and pass that.")
    suites = {s: declared[s] for task in tasks for s in declared
              if task.name in declared[s] or s in task.suites}
    return TaskSelection(tasks, suites, undeclared)


def _refuse_shared_folders(tasks: list[Task]) -> None:
    """Refuse two tasks whose results would share a folder, where one would overwrite the
    other: names that differ only in case do on file systems that ignore case (macOS,
    Windows), and so do a ``wds:`` folder's task and a task named alike."""
    seen: dict[str, str] = {}
    for task in tasks:
        other = seen.setdefault(result_folder(task.name).lower(), task.name)
        if other != task.name:
            a, b = result_folder(other), result_folder(task.name)
            why = (f"both are stored in the folder {a!r}" if a == b else
                   "names that differ only in case are one folder on file systems that "
                   "ignore case, as on macOS and Windows")
            raise UserError(f"tasks {other!r} and {task.name!r} would overwrite each other's "
                            f"results ({why}): rename one of them")
