"""Stable identifiers for model weights and configurations (they key the feature cache)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20
#: Sets collecting the files hashed while they are open (see :func:`recording_digests`).
_recorders: list[set[str]] = []


@contextlib.contextmanager
def recording_digests() -> Iterator[set[str]]:
    """Collects the absolute paths of every file :func:`file_digest` hashes inside the block
    (a model build's weights and configs: what its fingerprint depends on)."""
    seen: set[str] = set()
    _recorders.append(seen)
    try:
        yield seen
    finally:
        _recorders.remove(seen)


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes, as hex."""
    for seen in _recorders:
        seen.add(os.path.abspath(path))
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


def files_identity(paths: Iterable[str | os.PathLike[str]], salt: str = "") -> str:
    """A short id of files by path, size and modification time (a missing file counts as
    'missing'): cheap, and it changes when a file is replaced, edited, added or removed.

    ``salt`` separates identities of the same files used differently (e.g. two splits).
    """
    digest = hashlib.sha256(f"{salt}\0".encode())
    for p in paths:
        try:
            st = os.stat(p)
            digest.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
        except OSError:
            # A missing image is named when it is decoded; it still shapes the identity.
            digest.update(f"{p}\0missing\0".encode())
    return digest.hexdigest()[:20]
