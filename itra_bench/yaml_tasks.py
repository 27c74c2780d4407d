"""Tasks declared in a YAML file: a protocol plus a data layout, no code.

Example (classification on an ImageFolder tree)::

    name: my-pets
    protocol: zeroshot          # zeroshot | linear_probe | knn | clustering | retrieval
    root: pets                  # ROOT/<split>/<class>/<image>, relative to --data-root
    paths_relative_to: data-root  # or task-file: root is beside this file (data it ships)
    split: test
    templates: ["a photo of a {}, a type of pet."]

Example (retrieval on the trainer's caption table)::

    name: my-captions
    protocol: retrieval
    file: captions/val.tsv      # columns filepath<TAB>title
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
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

PROTOCOLS = (*CLASSIFICATION_PROTOCOLS, "retrieval")

# key -> (type, required for which protocols, default)
_COMMON: dict[str, tuple[type | tuple[type, ...], bool, Any]] = {
    "name": (str, True, None),
    "protocol": (str, True, None),
    "description": (str, False, ""),
    "suites": (list, False, []),
    "paths_relative_to": (str, False, "data-root"),
}
#: Values of ``paths_relative_to``: what a relative ``root`` or ``file`` is under.
PATHS_RELATIVE_TO = ("data-root", "task-file")
_CLASSIFICATION = {
    "root": (str, True, None),
    "split": (str, False, "test"),
    "train_split": (str, False, "train"),
    "val_split": (str, False, None),
    "classnames": (list, False, None),
    "templates": (list, False, ["a photo of a {}."]),
    "k": (int, False, 20),
    "weighting": (str, False, "uniform"),
    "temperature": ((int, float), False, 0.07),
}
_RETRIEVAL = {
    "file": (str, True, None),
    "separator": (str, False, "\t"),
    "img_key": (str, False, "filepath"),
    "caption_key": (str, False, "title"),
}


#: A field schema: key -> (accepted type(s), required, default).
Schema = Mapping[str, tuple[Any, bool, Any]]


def check_fields(doc: Mapping[str, Any], schema: Schema, path: Path, what: str
                 ) -> dict[str, Any]:
    """Validate a task file's mapping against ``schema`` and fill defaults.

    An unknown key (with a close match suggested), a missing required key or a value of the
    wrong type is a UserError naming ``path``, the key and ``what`` the file describes.
    Lists must hold strings. Task-file factories of plugins use this too.
    """
    for key in doc:
        if key not in schema:
            close = difflib.get_close_matches(str(key), schema, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UserError(f"{path}: unknown key {key!r}{hint} for {what}; "
                            f"valid keys: {', '.join(schema)}")
    values: dict[str, Any] = {}
    for key, (typ, required, default) in schema.items():
        if key not in doc or doc[key] is None:
            if required:
                raise UserError(f"{path}: missing required key {key!r} for {what}")
            values[key] = default
            continue
        value = doc[key]
        if not isinstance(value, typ) or isinstance(value, bool) and typ is not bool:
            want = typ.__name__ if isinstance(typ, type) else "number"
            raise UserError(f"{path}: key {key!r} must be a {want}, got "
                            f"{type(value).__name__} ({value!r})")
        if typ is list and not all(isinstance(v, str) for v in value):
            raise UserError(f"{path}: key {key!r} must be a list of strings")
        values[key] = value
    return values


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


_SUITE = {"suite": (str, True, None), "tasks": (list, True, None),
          "description": (str, False, "")}


def load_suite_file(path: str | Path) -> SuiteFile:
    """Read a suite file (see :class:`SuiteFile`), with one clear error per wrong key."""
    path = Path(path)
    return _suite(read_mapping(path, "suite file", "suite, tasks, description"), path)


def load_task_or_suite(path: str | Path,
                       protocols: Mapping[str, Callable[[dict[str, Any], Path], Task]]
                       ) -> Task | SuiteFile:
    """The task of a task file, or the suite of a suite file (a top-level ``suite:`` key),
    for a ``.yaml`` named in ``--tasks``; the file is read once."""
    path = Path(path)
    doc = read_mapping(path, "task file", "name, protocol, ...")
    return _suite(doc, path) if "suite" in doc else _task(doc, path, protocols)


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


def load_task_file(path: str | Path,
                   protocols: Mapping[str, Callable[[dict[str, Any], Path], Task]] | None = None,
                   *, shipped: bool = False) -> Task:
    """Build a task from a YAML file, with one clear error per wrong, missing or unknown key.

    ``protocols`` adds task types that plugins declare for task files
    (``itra_bench_task_file_protocols``); the built-in image protocols are always known.
    ``shipped``: the file is one of itra-bench's own cards, which libyaml may parse.
    """

    path = Path(path)
    return _task(read_mapping(path, "task file", "name, protocol, ...", shipped), path,
                 protocols or {})


def _task(doc: dict[str, Any], path: Path,
          protocols: Mapping[str, Callable[[dict[str, Any], Path], Task]]) -> Task:
    """The task the mapping ``doc`` of the task file ``path`` declares."""
    protocol = doc.get("protocol")
    known = ", ".join([*PROTOCOLS, *sorted(protocols)])
    if protocol is not None and not isinstance(protocol, str):
        raise UserError(f"{path}: key 'protocol' must be a string, got "
                        f"{type(protocol).__name__} ({protocol!r}); set `protocol:` to one "
                        f"of {known}")
    if protocol in protocols and protocol not in PROTOCOLS:
        task = protocols[protocol](doc, path)
        task.task_file_protocol = protocol  # whose plugin built it (a result's provenance)
        _require_task_name(task.name, path)
        return task
    if protocol not in PROTOCOLS:
        hint = "missing key 'protocol'" if protocol is None else f"protocol {protocol!r}"
        raise UserError(f"{path}: {hint}; set `protocol:` to one of {known}")
    schema = {**_COMMON, **(_RETRIEVAL if protocol == "retrieval" else _CLASSIFICATION)}
    values = check_fields(doc, schema, path, f"protocol {protocol}")
    _require_task_name(values["name"], path)
    for t in values.get("templates") or []:
        if "{}" not in t and "{c}" not in t:
            raise UserError(f"{path}: template {t!r} has no '{{}}' slot for the class name")
        try:
            fill_template(t, "cat")
        except (ValueError, AttributeError, TypeError) as exc:
            raise UserError(f"{path}: template {t!r}: {exc}") from None
    if protocol == "knn" and values["k"] < 1:
        raise UserError(f"{path}: key 'k' must be a positive integer, got {values['k']}")
    if protocol == "knn" and not 0 < values["temperature"] < math.inf:
        raise UserError(f"{path}: key 'temperature' must be a positive number, got "
                        f"{values['temperature']}")
    if protocol == "retrieval" and (len(values["separator"]) != 1
                                    or values["separator"] in "\"\r\n"):
        raise UserError(f"{path}: key 'separator' must be one character (not a quote or a "
                        f"line break), got {values['separator']!r}")
    if values["paths_relative_to"] not in PATHS_RELATIVE_TO:
        raise UserError(f"{path}: key 'paths_relative_to' must be one of "
                        f"{', '.join(PATHS_RELATIVE_TO)} (what a relative `root` or `file` is "
                        f"under), got {values['paths_relative_to']!r}")
    if values["paths_relative_to"] == "task-file":
        # An absolute path is taken as it is, whatever --data-root is.
        key = "file" if protocol == "retrieval" else "root"
        values[key] = str((path.parent / values[key]).resolve())
    if protocol == "knn":
        from itra_bench.protocols.knn import WEIGHTINGS as KNN_WEIGHTINGS  # imports torch

        if values["weighting"] not in KNN_WEIGHTINGS:
            raise UserError(f"{path}: key 'weighting' must be one of {KNN_WEIGHTINGS}")

    common = {"name": values["name"], "description": values["description"],
              "suites": tuple(values["suites"])}
    if protocol == "retrieval":
        data = CaptionsCSVData(values["file"], values["separator"], values["img_key"],
                               values["caption_key"])
        return RetrievalTask(data=data, **common)
    return ClassificationTask(
        data=ImageFolderData(values["root"]), protocol=protocol, eval_split=values["split"],
        train_split=values["train_split"], val_split=values["val_split"],
        classnames=values["classnames"], templates=values["templates"], knn_k=values["k"],
        knn_weighting=values["weighting"], knn_temperature=float(values["temperature"]),
        source=str(path), **common)
