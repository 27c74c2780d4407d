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

from itra_bench.atomic_io import atomic_write_json

SCHEMA = "itra-bench/result/v1"
_VERSIONED = ("itra-bench", "torch", "torchvision", "open_clip_torch", "timm", "transformers",
              "sentence-transformers", "scikit-learn", "numpy")


def slug(text: str, limit: int = 60) -> str:
    """A filesystem-safe version of ``text``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:limit] or "_"


def model_dir_name(model_name: str, fingerprint: str) -> str:
    """Folder of one model's results: readable name plus a fingerprint prefix (so two
    checkpoints with the same file name never share a folder)."""
    return f"{slug(Path(model_name).name if '/' in model_name else model_name)}-{fingerprint[:8]}"


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
        return self.root / model_dir_name(model_name, fingerprint) / slug(task, 120) / (
            slug(variant, 120) + ".json")

    def write(self, path: Path, record: dict[str, Any]) -> Path:
        """Atomically store ``record`` (stamped with the schema, versions and git commit)."""
        record = {"schema": SCHEMA, **record, "versions": package_versions(),
                  "git_commit": git_commit()}
        return atomic_write_json(path, record)

    def read(self, path: Path) -> dict[str, Any]:
        """Load one stored record."""
        return json.loads(Path(path).read_text())


def iter_records(root: str | Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every result document under ``root`` (other JSON files are ignored)."""
    for path in sorted(Path(root).rglob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(record, dict) and record.get("schema") == SCHEMA:
            yield path, record
