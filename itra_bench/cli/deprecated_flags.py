"""Old option strings kept working beside today's: each stores into the new flag and leaves
one note, which the command line prints on stderr once parsing is done."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

#: The namespace attribute holding the notes (not a flag's dest: it starts with ``_``).
_NOTES = "_deprecation_notes"


class DeprecatedAlias(argparse.Action):
    """``--old VALUE`` read as ``--new VALUE`` (the same dest), noting that ``--old`` is
    deprecated. Give ``new=`` the option string users should type instead."""

    def __init__(self, option_strings: Sequence[str], dest: str, new: str,
                 **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        setattr(namespace, self.dest, values)
        notes = getattr(namespace, _NOTES, {})
        notes[f"{option_string} is deprecated; use {self.new} (it means the same)"] = None
        setattr(namespace, _NOTES, notes)


def add_deprecated_alias(parser: argparse.ArgumentParser, old: str, new: str,
                         **kwargs: Any) -> argparse.Action:
    """Accept ``old`` as a hidden alias of the flag ``new`` (``kwargs``: its type, ...)."""
    dest = new.lstrip("-").replace("-", "_")
    return parser.add_argument(old, dest=dest, action=DeprecatedAlias, new=new,
                               help=argparse.SUPPRESS, default=argparse.SUPPRESS, **kwargs)


def deprecation_notes(args: argparse.Namespace) -> list[str]:
    """The notes of the deprecated flags a parsed command line used, each once."""
    return list(getattr(args, _NOTES, {}))
