"""The results store: one JSON document per (model, task, protocol variant), written
atomically; a rerun skips what exists unless asked to overwrite."""

from __future__ import annotations

import functools
import json
import platform
import re
import subprocess
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from itra_bench.atomic_io import atomic_write_json, remove_stale_temp_files
from itra_bench.errors import UserError
from itra_bench.metric_names import check_reported
from itra_bench.vocabulary import current_record

SCHEMA = "itra-bench/result/v1"
_VERSIONED = ("itra-bench", "torch", "torchvision", "open_clip_torch", "timm", "transformers",
              "sentence-transformers", "scikit-learn", "numpy")


#: The longest task or variant name (the length :meth:`ResultStore.path` keeps).
NAME_LIMIT = 120
#: What a task or variant name may be, in messages (see :func:`is_safe_name`).
NAME_RULE = (f"ASCII letters, digits, '.', '_' and '-', beginning and ending with a letter or "
             f"digit, at most {NAME_LIMIT} characters")
_SAFE_NAME = re.compile(rf"[A-Za-z0-9](?:[A-Za-z0-9._-]{{0,{NAME_LIMIT - 2}}}[A-Za-z0-9])?")


def is_safe_name(name: object) -> bool:
    """Whether ``name`` may name a task or a variant (:data:`NAME_RULE`).

    Such a name is one path component under ``--output`` that stays what it is: never ``.``
    or ``..``, no separator, not hidden, not taken for a flag, and unchanged by :func:`slug`,
    so two different names never share a result file (names that differ only in case
    excepted: see :func:`result_folder`).
    """
    return isinstance(name, str) and _SAFE_NAME.fullmatch(name) is not None


def slug(text: str, limit: int = 60) -> str:
    """A filesystem-safe version of ``text``: one path component, never ``.`` or ``..``."""
    out = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:limit] or "_"
    # Dots alone would name this folder or its parent.
    return out if out.strip(".") else out.replace(".", "_")


def result_folder(task: str) -> str:
    """The folder of a task's results inside a model's folder: the task's name (the ``/`` of
    the ``wds/NAME`` tasks that ``--tasks wds:PATH`` names becomes ``_``). On file systems
    that ignore case, tasks whose folders differ only in case share one."""
    return slug(task, NAME_LIMIT)


def model_dir_name(model_name: str, fingerprint: str) -> str:
    """Folder of one model's results: readable name plus a fingerprint prefix (so two
    checkpoints with the same file name never share a folder)."""
    name = Path(model_name).name if "/" in model_name else model_name
    return slug(f"{slug(name)}-{fingerprint[:8]}", 80)


@functools.lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    """Versions of the packages that can change a number, plus Python's."""
    versions = {"python": platform.python_version()}
    for dist in _VERSIONED:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the itra-bench source tree when it runs from a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


class ResultStore:
    """``<root>/<model dir>/<task>/<variant>.json`` documents."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, model_name: str, fingerprint: str, task: str, variant: str) -> Path:
        """Where the result of one (model, task, variant) lives."""
        return self.root / model_dir_name(model_name, fingerprint) / result_folder(task) / (
            slug(variant, NAME_LIMIT) + ".json")

    def write(self, path: Path, record: dict[str, Any]) -> Path:
        """Atomically store ``record`` (stamped with the schema, versions and git commit).
        A metric that no loaded plugin declares (:mod:`itra_bench.metric_names`) is refused
        as its task's plugin's bug."""
        check_reported(record)
        record = {"schema": SCHEMA, **record, "versions": package_versions(),
                  "git_commit": git_commit()}
        return atomic_write_json(path, record)

    def remove_stale_temp_files(self) -> list[Path]:
        """Delete the temp files that writes killed half-way left in the store (results, and
        the tasks' files beside them, down to a subfolder of a task's folder); another live
        run's are kept."""
        return remove_stale_temp_files(self.root, depth=3)

    def read(self, path: Path) -> dict[str, Any]:
        """Load one stored record, in today's words (:func:`itra_bench.vocabulary.
        current_record`); an unreadable or incomplete one raises
        :class:`InvalidResultError` naming the file."""
        record = _load(Path(path))
        check_record(path, record)
        return current_record(record)


class InvalidResultError(UserError):
    """A result file that cannot be read as a result document."""


def _is_number(value: object) -> bool:
    return isinstance(value, int | float)


def _is_int(value: object) -> bool:
    return isinstance(value, int)


def _is_text(value: object) -> bool:
    return isinstance(value, str)


def _is_texts(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _is_mapping(value: object) -> bool:
    return isinstance(value, dict)


#: The fields the readers of results use: (dotted name, what it must be, its test, whether
#: a result must have it). A field inside another is checked where that one is a mapping.
_SCHEMA: tuple[tuple[str, str, Any, bool], ...] = (
    ("model", "a mapping", _is_mapping, True),
    ("model.name", "a string", _is_text, True),
    ("model.fingerprint", "a string", _is_text, True),
    ("task", "a string", _is_text, True),
    ("variant", "a string", _is_text, True),
    ("protocol", "a string", _is_text, False),
    ("variant_family", "a string or null", lambda v: v is None or _is_text(v), False),
    ("main_score", "a string", _is_text, True),
    ("main_score_value", "a number", _is_number, True),
    ("metrics", "a mapping of metric names to numbers",
     lambda v: _is_mapping(v) and all(map(_is_number, v.values())), True),
    ("main_score_interval", "a mapping or null", lambda v: v is None or _is_mapping(v), False),
    ("main_score_interval.low", "a number", _is_number, True),
    ("main_score_interval.high", "a number", _is_number, True),
    ("suites", "a list of suite names", _is_texts, False),
    ("suite_members", "a mapping of suite names to lists of task names",
     lambda v: v is None or _is_mapping(v) and all(map(_is_texts, v.values())), False),
    ("samples", "a mapping or null", lambda v: v is None or _is_mapping(v), False),
    ("data", "a mapping", _is_mapping, False),
    ("details", "a mapping", _is_mapping, False),
)
#: The fields that the readers of one protocol's results use besides (as :data:`_SCHEMA`).
_PROTOCOL_SCHEMA: dict[str, tuple[tuple[str, str, Any, bool], ...]] = {
    # the ELEVATER summary's rows: mode, knowledge source, shots and seed
    "elevater": (("details.mode", "a string", _is_text, False),
                 ("details.knowledge", "a string", _is_text, False),
                 ("details.n_shot", "an integer", _is_int, False),
                 ("details.seed", "an integer", _is_int, False)),
}


def _kind_of(value: object) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), "a number")


def check_record(path: str | Path, record: dict[str, Any]) -> None:
    """Refuse a result document (read from ``path``) whose fields are not what every reader
    of results expects: :class:`InvalidResultError` names the file and the field."""
    fix = "rerun that task with --overwrite, or delete the file"
    protocol = record.get("protocol")
    extra = _PROTOCOL_SCHEMA.get(protocol, ()) if isinstance(protocol, str) else ()
    for name, what, valid, required in (*_SCHEMA, *extra):
        *parents, last = name.split(".")
        holder: Any = record
        for key in parents:
            holder = holder.get(key)
            if not isinstance(holder, dict):
                break
        if not isinstance(holder, dict):
            continue  # its parent is absent, null or already refused
        if last not in holder:
            if required:
                raise InvalidResultError(f"result file {path} lacks the field `{name}`; {fix}")
            continue
        if not valid(holder[last]):
            raise InvalidResultError(f"result file {path}: the field `{name}` must be {what}, "
                                     f"not {_kind_of(holder[last])}; {fix}")


def _load(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_bytes())
    except OSError as exc:
        raise InvalidResultError(f"result file {path} is unreadable ({exc.strerror})") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidResultError(f"result file {path} is corrupt (not JSON: {exc})") from exc
    if not isinstance(record, dict) or not record:
        raise InvalidResultError(f"result file {path} is corrupt (holds "
                                 f"{json.dumps(record)[:20]}, not a result document)")
    if record.get("schema") != SCHEMA:
        raise InvalidResultError(f"result file {path} is not an itra-bench result "
                                 f"(schema {record.get('schema')!r})")
    return record


def iter_records(root: str | Path, problems: list[str] | None = None
                 ) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every result document under ``root``, in today's words (older files' renamed metrics
    and settings read as :func:`itra_bench.vocabulary.current_record` renames them). Other
    JSON documents (prediction files, ...) are ignored; files that are not JSON, empty, or
    results whose fields do not match the schema (:func:`check_record`) are described in
    ``problems`` when a list is given."""
    for path in sorted(Path(root).rglob("*.json")):
        try:
            record = _load(path)
        except InvalidResultError as exc:
            # Non-empty JSON of another kind (a prediction list, ...) is not ours to judge.
            if problems is not None and not _other_document(path):
                problems.append(str(exc))
            continue
        try:
            check_record(path, record)
        except InvalidResultError as exc:
            if problems is not None:
                problems.append(str(exc))
            continue
        yield path, current_record(record)


def _other_document(path: Path) -> bool:
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return False
    return bool(doc) and not (isinstance(doc, dict) and doc.get("schema") == SCHEMA)
