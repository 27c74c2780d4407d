"""A Griffe extension for the API reference (mkdocs.yml loads it): the package's docstrings
are written for Sphinx-style readers, and the reference renders them as Markdown.

- ``:func:`x```-style roles become code spans (`` `x` ``);
- a ``name::`` paragraph ending that introduces an indented literal block loses one colon;
- an attribute documented by ``#:`` comment lines right above it gets them as its docstring.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|meth|attr|mod|data|obj|exc|const):`~?([^`]+)`")
LITERAL = re.compile(r"::\n(\n[ \t]+\S)")


def _markdown(text: str) -> str:
    return LITERAL.sub(r":\n\1", ROLE.sub(r"`\1`", text))


class SphinxToMarkdown(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _markdown(obj.docstring.value)

    def on_attribute_instance(self, *, attr: griffe.Attribute, **kwargs: Any) -> None:
        if attr.docstring is not None or attr.lineno is None or attr.filepath is None:
            return
        try:
            lines = attr.lines_collection[attr.filepath]
        except KeyError:
            return
        comment: list[str] = []
        i = attr.lineno - 2  # the line above, 0-based
        while i >= 0 and lines[i].strip().startswith("#:"):
            comment.insert(0, lines[i].strip()[2:].strip())
            i -= 1
        if comment:
            attr.docstring = griffe.Docstring(_markdown("\n".join(comment)), parent=attr)
