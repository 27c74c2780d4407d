"""Checks on paths that users' files name (index lines, caption tables)."""

from __future__ import annotations

import os


def is_existing_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an existing file; a path the system cannot even look up (a name
    longer than the file system allows, ...) is not one, instead of raising OSError."""
    try:
        return os.path.isfile(path)
    except (OSError, ValueError):
        return False
