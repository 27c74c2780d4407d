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
        """Atomically store ``record`` (stamped with the schema, versions and git commit)."""
        record = {"schema": SCHEMA, **record, "versions": package_versions(),
                  "git_commit": git_commit()}
        return atomic_write_json(path, record)

    def remove_stale_temp_files(self) -> list[Path]:
        """Delete the temp files that writes killed half-way left in the store (results, and
        the tasks' files beside them, down to a subfolder of a task's folder); another live
        run's are kept."""
        return remove_stale_temp_files(self.root, depth=3)

    def read(self, path: Path) -> dict[str, Any]:
        """Load one stored record; an unreadable or incomplete one raises
        :class:`InvalidResultError` naming the file."""
        record = _load(Path(path))
        missing = [k for k in _REQUIRED if k not in record]
        if missing:
            raise InvalidResultError(f"result file {path} lacks {', '.join(missing)}")
        return record


class InvalidResultError(UserError):
    """A result file that cannot be read as a result document."""


_REQUIRED = ("schema", "model", "task", "variant", "main_score", "main_score_value", "metrics")


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
    """Every result document under ``root``. Other JSON documents (prediction files, ...) are
    ignored; files that are not JSON, empty, or results lacking fields are described in
    ``problems`` when a list is given."""
    for path in sorted(Path(root).rglob("*.json")):
        try:
            record = _load(path)
        except InvalidResultError as exc:
            # Non-empty JSON of another kind (a prediction list, ...) is not ours to judge.
            if problems is not None and not _other_document(path):
                problems.append(str(exc))
            continue
        missing = [k for k in _REQUIRED if k not in record]
        if missing:
            if problems is not None:
                problems.append(f"result file {path} lacks {', '.join(missing)}")
            continue
        yield path, record


def _other_document(path: Path) -> bool:
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return False
    return bool(doc) and not (isinstance(doc, dict) and doc.get("schema") == SCHEMA)
