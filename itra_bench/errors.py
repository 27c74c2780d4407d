"""User-facing errors: bad input the user can fix, reported as one message and exit code 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """An error caused by input the user controls (a flag, a file, a dataset folder).

    The CLI prints the message alone (no traceback unless ``--debug``) and exits with 2,
    so the message must name the file, line or field at fault and say how to fix it.
    """

    exit_code = 2


class UnknownNameError(UserError):
    """A model, task, suite or loss name that no plugin provides."""

    def __init__(self, kind: str, name: str, known: Iterable[str], hint: str = "") -> None:
        known = sorted(set(known))
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        msg = f"unknown {kind} {name!r}."
        if close:
            msg += " Did you mean " + ", ".join(repr(c) for c in close) + "?"
        msg += f" Run `itra-bench list {kind}s` to see all {len(known)} available."
        if hint:
            msg += " " + hint
        super().__init__(msg)
        self.name = name
        self.suggestions = close


class PluginClashError(UserError):
    """Two plugins registered the same name for the same kind of thing."""


class MissingDataError(UserError):
    """A dataset file or folder is not where the task expects it."""


class CorruptImageError(UserError):
    """An image file could not be decoded."""


class PluginBugError(UserError):
    """A plugin broke its contract (a task returned something other than a ``TaskResult``,
    or raised an unexpected exception): not the user's input, so a different exit code."""

    exit_code = 3
