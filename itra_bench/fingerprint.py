"""Stable identifiers for model weights and configurations (they key the feature cache)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes, as hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def fingerprint(config: Any, files: Iterable[str | os.PathLike[str]] = ()) -> str:
    """A short stable id of a JSON-able config plus the contents of weight files.

    The same config and the same bytes give the same id on any machine and path, so a cache
    built for a model survives moving its weights; changing one byte of weights changes it.
    """
    h = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for path in sorted(Path(p) for p in files):
        h.update(path.name.encode())
        h.update(file_digest(path).encode())
    return h.hexdigest()[:16]
