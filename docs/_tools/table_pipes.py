"""A MkDocs hook (mkdocs.yml loads it): in a table row, GitHub needs a `|` inside code written
as `\\|`, and shows `|`; Python-Markdown keeps the backslash. The site's copy of each page
gets the bare `|`, so one source reads right in both places."""

from __future__ import annotations

import re
from typing import Any

CODE = re.compile(r"(`+)(.+?)\1")


def _unescape(match: re.Match) -> str:
    return match.group(1) + match.group(2).replace("\\|", "|") + match.group(1)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    lines, fence = markdown.split("\n"), None
    for i, line in enumerate(lines):
        stripped = line.lstrip()
        if stripped.startswith(("```", "~~~")):
            mark = stripped[:3]
            fence = mark if fence is None else (None if fence == mark else fence)
        elif fence is None and stripped.startswith("|"):
            lines[i] = CODE.sub(_unescape, line)
    return "\n".join(lines)
