"""Tasks declared in a YAML file: a task type plus a data layout, no code.

Example (classification on an ImageFolder tree)::

    name: my-pets
    task_type: zeroshot         # zeroshot | linear_probe | knn | clustering | retrieval
    root: pets                  # ROOT/<split>/<class>/<image>, relative to --data-root
    paths_relative_to: data-root  # or task-file: root is beside this file (data it ships)
    split: test
    templates: ["a photo of a {}, a type of pet."]

Example (retrieval on the trainer's caption table)::

    name: my-captions
    task_type: retrieval
    file: captions/val.tsv      # columns filepath<TAB>title

The built-in task types are named after the shared protocol they run. The keys of each task
type are the fields of the dataclasses that read it (the task type and its data;
:mod:`itra_bench.task_fields`): :func:`itra_bench.task_fields.key_rows` of
``TASK_FILE_KEYS[task_type]`` lists them, with their types, defaults and help. ``protocol:``,
the old name of ``task_type:``, is still read, with a note
(:func:`itra_bench.vocabulary.current_task_file`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from itra_bench.datasets.text_files import load_yaml, read_text
from itra_bench.errors import UserError
from itra_bench.generic_tasks import (
    CLASSIFICATION_PROTOCOLS,
    CaptionsCSVData,
    ClassificationTask,
    ImageFolderData,
    RetrievalTask,
)
from itra_bench.protocols.templates import fill_template
from itra_bench.results import NAME_RULE, is_safe_name
from itra_bench.task import Task
from itra_bench.task_fields import KeySpec, build, check_keys, file_key, from_file, read_keys
from itra_bench.vocabulary import RENAMED_TASK_FILE_KEYS, current_task_file

#: What a plugin declares for a task type of task files (``itra_bench_task_file_protocols``):
#: a factory ``(doc, path) -> Task``, or a task type (a dataclass) whose fields are the keys.
TaskFileProtocol = Callable[[dict[str, Any], Path], Task] | type[Task]

#: The built-in task types, each named after the shared protocol it runs.
PROTOCOLS = (*CLASSIFICATION_PROTOCOLS, "retrieval")

#: Values of ``paths_relative_to``: what a relative ``root`` or ``file`` is under.
PATHS_RELATIVE_TO = ("data-root", "task-file")


@dataclass(frozen=True)
class FilePaths:
    """The key of the built-in task types' files that places their relative paths."""

    paths_relative_to: str = file_key(
        "data-root", help="what a relative root or file is under: data-root (--data-root) or "
        "task-file (the task file's folder: data the file ships)")


#: The dataclasses whose keys a task file of each built-in task type holds, in order (Task
#: first: its keys lead): the task type, and the data it is built with.
_CLASSIFICATION = (Task, FilePaths, ImageFolderData, ClassificationTask)
_RETRIEVAL = (Task, FilePaths, CaptionsCSVData, RetrievalTask)
TASK_FILE_KEYS = {**dict.fromkeys(CLASSIFICATION_PROTOCOLS, _CLASSIFICATION),
                  "retrieval": _RETRIEVAL}


#: A field schema: key -> (accepted type(s), required, default).
Schema = Mapping[str, tuple[Any, bool, Any]]


def check_fields(doc: Mapping[str, Any], schema: Schema, path: Path, what: str
                 ) -> dict[str, Any]:
    """Validate a file's mapping against ``schema`` and fill defaults.

    An unknown key (with a close match suggested), a missing required key or a value of the
    wrong type is a UserError naming ``path``, the key and ``what`` the file describes.
    Lists must hold strings. For files whose keys no dataclass declares (suite files); a
    task type declares its keys as its fields (:func:`itra_bench.task_fields.read_keys`).
    A schema that names a renamed key by its old name (a plugin's factory checking
    ``protocol``) is given the file's value of the new one under that name.
    """
    specs = [KeySpec(key, typ, required, default) for key, (typ, required, default)
             in schema.items()]
    for old, new in RENAMED_TASK_FILE_KEYS.items():
        # Plugins written before the rename check the old key: task files arrive with the
        # new one (task_from_mapping), which their schema would refuse as unknown.
        if old in schema and new not in schema and new in doc and old not in doc:
            doc = {(old if k == new else k): v for k, v in doc.items()}
    return check_keys(doc, specs, path, what)


def _require_task_name(name: object, path: Path) -> None:
    """Refuse a task file whose task name cannot name the folder of the task's results (one
    that would leave it, such as ``..``, or share it with another task)."""
    if not is_safe_name(name):
        raise UserError(f"{path}: key 'name' is {name!r}, which cannot name a task (it names "
                        f"the folder of the task's results): use {NAME_RULE}")


def read_mapping(path: Path, what: str, keys: str, shipped: bool = False) -> dict[str, Any]:
    """The YAML mapping in ``path`` (a ``what``: task file, suite file), with one clear error
    for a missing file, bad YAML or a document that is not a mapping (of ``keys``).
    ``shipped``: one of itra-bench's own files (see ``load_yaml``)."""
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    text = read_text(path, fix=f"save the {what} as UTF-8")
    try:
        doc = load_yaml(text, shipped=shipped)
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({exc})") from exc
    except RecursionError:
        raise UserError(f"{path}: not a {what} (its YAML is nested too deeply)") from None
    except (ValueError, TypeError, AttributeError) as exc:
        # PyYAML's constructors let Python's own errors through for values such as
        # 2001-02-30, `!!int x` or a 5,000-digit integer.
        raise UserError(f"{path}: not valid YAML (a value cannot be read: {exc})") from None
    if not isinstance(doc, dict):
        raise UserError(f"{path}: expected a mapping of keys ({keys}), "
                        f"got {type(doc).__name__}")
    return doc


@dataclass(frozen=True)
class SuiteFile:
    """A suite declared in a YAML file: its name and members, fixed there.

    Example::

        suite: my-suite
        description: our pets, three ways
        tasks: [pets-zeroshot.yaml, pets-knn.yaml, digits-knn]

    Each entry of ``tasks`` is a task file (a path relative to the suite file) or the name of
    an installed task. The suite's average is shown only where every member has a result.
    """

    name: str
    description: str
    #: Task files, as paths; names of installed tasks, as given.
    members: tuple[str | Path, ...]
    path: Path


# Not SuiteFile's fields: a suite file's `tasks` become members resolved against its folder.
_SUITE = {"suite": (str, True, None), "tasks": (list, True, None),
          "description": (str, False, "")}


def load_suite_file(path: str | Path) -> SuiteFile:
    """Read a suite file (see :class:`SuiteFile`), with one clear error per wrong key."""
    path = Path(path)
    return _suite(read_mapping(path, "suite file", "suite, tasks, description"), path)


def load_task_or_suite(path: str | Path, protocols: Mapping[str, TaskFileProtocol]
                       ) -> Task | SuiteFile:
    """The task of a task file, or the suite of a suite file (a top-level ``suite:`` key),
    for a ``.yaml`` named in ``--tasks``; the file is read once."""
    path = Path(path)
    doc = read_mapping(path, "task file", "name, task_type, ...")
    return _suite(doc, path) if "suite" in doc else task_from_mapping(doc, path, protocols)


def _suite(doc: dict[str, Any], path: Path) -> SuiteFile:
    """The suite the mapping ``doc`` of the suite file ``path`` declares."""
    values = check_fields(doc, _SUITE, path, "a suite file")
    if not is_safe_name(values["suite"]):
        raise UserError(f"{path}: key 'suite' is {values['suite']!r}, which cannot name a "
                        f"suite: use {NAME_RULE}")
    if not values["tasks"]:
        raise UserError(f"{path}: key 'tasks' is empty; list the suite's task files or task "
                        "names")
    members = tuple(path.parent / t if t.endswith((".yaml", ".yml")) else t
                    for t in values["tasks"])
    return SuiteFile(values["suite"], values["description"], members, path)


def load_task_file(path: str | Path, protocols: Mapping[str, TaskFileProtocol] | None = None,
                   *, shipped: bool = False) -> Task:
    """Build a task from a YAML file, with one clear error per wrong, missing or unknown key.

    ``protocols`` adds task types that plugins declare for task files
    (``itra_bench_task_file_protocols``); the built-in ones are always known.
    ``shipped``: the file is one of itra-bench's own cards, which libyaml may parse.
    """

    path = Path(path)
    return task_from_mapping(read_mapping(path, "task file", "name, task_type, ...", shipped),
                             path, protocols or {})


def task_from_mapping(doc: dict[str, Any], path: Path,
                      protocols: Mapping[str, TaskFileProtocol]) -> Task:
    """The task that the mapping ``doc`` of the task file ``path`` declares (as read by
    :func:`read_mapping`), by its task type: a built-in one or one of ``protocols``. The
    old key ``protocol:`` is read as ``task_type:``, with a note."""
    doc = current_task_file(doc, path)
    protocol = doc.get("task_type")
    known = ", ".join([*PROTOCOLS, *sorted(protocols)])
    if protocol is not None and not isinstance(protocol, str):
        raise UserError(f"{path}: key 'task_type' must be a string, got "
                        f"{type(protocol).__name__} ({protocol!r}); set `task_type:` to one "
                        f"of {known}")
    if protocol in protocols and protocol not in PROTOCOLS:
        declared = protocols[protocol]
        task = (from_file(declared, doc, path, f"task type {protocol}")
                if isinstance(declared, type) and is_dataclass(declared)
                else declared(doc, path))
        task.task_type = protocol  # whose plugin built it (a result's provenance)
        _require_task_name(task.name, path)
        return task
    if protocol not in PROTOCOLS:
        hint = "missing key 'task_type'" if protocol is None else f"task type {protocol!r}"
        raise UserError(f"{path}: {hint}; set `task_type:` to one of {known}")
    retrieval = protocol == "retrieval"
    values = read_keys(_RETRIEVAL if retrieval else _CLASSIFICATION, doc, path,
                       f"task type {protocol}")
    _require_task_name(values["name"], path)
    for t in values.get("templates") or []:
        if "{}" not in t and "{c}" not in t:
            raise UserError(f"{path}: template {t!r} has no '{{}}' slot for the class name")
        try:
            fill_template(t, "cat")
        except (ValueError, AttributeError, TypeError) as exc:
            raise UserError(f"{path}: template {t!r}: {exc}") from None
    if protocol == "knn" and values["knn_k"] < 1:
        raise UserError(f"{path}: key 'k' must be a positive integer, got {values['knn_k']}")
    if protocol == "knn" and not 0 < values["knn_temperature"] < math.inf:
        # As the file wrote it (the value read is a float: 0.0 where the file says 0).
        raise UserError(f"{path}: key 'temperature' must be a positive number, got "
                        f"{doc['temperature']}")
    if retrieval and (len(values["separator"]) != 1 or values["separator"] in "\"\r\n"):
        raise UserError(f"{path}: key 'separator' must be one character (not a quote or a "
                        f"line break), got {values['separator']!r}")
    if values["paths_relative_to"] not in PATHS_RELATIVE_TO:
        raise UserError(f"{path}: key 'paths_relative_to' must be one of "
                        f"{', '.join(PATHS_RELATIVE_TO)} (what a relative `root` or `file` is "
                        f"under), got {values['paths_relative_to']!r}")
    if values["paths_relative_to"] == "task-file":
        # An absolute path is taken as it is, whatever --data-root is.
        key = "file" if retrieval else "root"
        values[key] = str((path.parent / values[key]).resolve())
    if protocol == "knn":
        from itra_bench.protocols.knn import WEIGHTINGS as KNN_WEIGHTINGS  # imports torch

        if values["knn_weighting"] not in KNN_WEIGHTINGS:
            raise UserError(f"{path}: key 'weighting' must be one of {KNN_WEIGHTINGS}")
    if retrieval:
        return build(RetrievalTask, values, data=build(CaptionsCSVData, values))
    return build(ClassificationTask, values, data=build(ImageFolderData, values),
                 protocol=protocol, source=str(path))
