"""Checks on paths that users' files name (index lines, caption tables, result files), and
the expansion of paths users type."""

from __future__ import annotations

import os

#: Where ``itra-bench run`` keeps encoded features unless ``--cache-dir`` says otherwise.
DEFAULT_CACHE_DIR = "~/.cache/itra_bench/features"


def expand_path(text: str) -> str:
    """``text`` with a leading ``~`` (or ``~user``) and ``$VAR`` / ``${VAR}`` expanded, as a
    shell would: for every path a user types (model specs' path parts, ``--pretrained``,
    path flags and settings); other text comes back unchanged."""
    # Quoted, or after `=` or `@`, the shell leaves `~` alone: the program must expand it.
    return os.path.expanduser(os.path.expandvars(text)) if text else text


def is_existing_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an existing file; a path the system cannot even look up (a name
    longer than the file system allows, ...) is not one, instead of raising OSError."""
    try:
        return os.path.isfile(path)
    except (OSError, ValueError):
        return False


def is_file_name(name: object) -> bool:
    """Whether ``name`` is one plain file name: no folder part, not absolute, not ``.`` or
    ``..``, no NUL, so that a folder joined with it names a file inside that folder."""
    return (isinstance(name, str) and name not in ("", ".", "..") and "\0" not in name
            and os.path.basename(name) == name)
