"""User-facing errors: bad input the user can fix, reported as one message and exit code 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping


class UserError(Exception):
    """An error caused by input the user controls (a flag, a file, a dataset folder).

    The CLI prints the message alone (no traceback unless ``--debug``) and exits with 2,
    so the message must name the file, line or field at fault and say how to fix it.
    """

    exit_code = 2


#: The plural of each kind of name a message counts.
PLURALS = {"model": "models", "loss": "losses", "task": "tasks", "suite": "suites",
           "plugin": "plugins", "alias": "aliases", "dataset": "datasets",
           "model scheme": "model schemes"}
#: The kinds ``itra-bench list KIND`` shows, by the word it takes.
LIST_KINDS = ("models", "losses", "tasks", "suites", "metrics", "plugins")
#: Kinds that ``itra-bench list`` shows under another word (``list models`` lists schemes).
_LISTED_AS = {"model schemes": "models"}


def plural(kind: str) -> str:
    """The plural of ``kind`` (a kind of name: model, loss, task, ...)."""
    return PLURALS.get(kind, kind + "s")


class UnknownNameError(UserError):
    """A model, task, suite or loss name that no plugin provides.

    ``known`` is the accepted names of ``kind``, ``also`` those of other kinds accepted in
    its place (``{"suite": ..., "alias": ...}``); the message counts each kind, as
    ``itra-bench list`` shows them.
    """

    def __init__(self, kind: str, name: str, known: Iterable[str], hint: str = "",
                 also: Mapping[str, Iterable[str]] | None = None) -> None:
        groups = {kind: set(known), **{k: set(v) for k, v in (also or {}).items()}}
        names = sorted(set().union(*groups.values()))
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        msg = f"unknown {kind} {name!r}."
        if close:
            msg += " Did you mean " + ", ".join(repr(c) for c in close) + "?"
        counts = [f"{len(v)} {plural(k) if len(v) != 1 else k}" for k, v in groups.items()]
        counted = counts[0] if len(counts) == 1 else \
            ", ".join(counts[:-1]) + " and " + counts[-1]
        listed = _LISTED_AS.get(plural(kind), plural(kind))
        if listed in LIST_KINDS:
            msg += f" Run `itra-bench list {listed}` to see them ({counted})."
        else:
            msg += f" There are {counted}; the {plural(kind)}: " + ", ".join(
                sorted(groups[kind])) + "."
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
