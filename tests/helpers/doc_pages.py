"""The project's documentation as the tests read it: README.md and the pages of docs/ (the
MkDocs site that mkdocs.yml builds), their sections, links and fenced blocks.

Pages are named by their path from the repository root (``README.md``,
``docs/results/compare.md``); ``pages()`` gives them in reading order: the site's navigation,
then README.md.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = "README.md"
#: Languages of the fenced blocks that are shell commands.
SHELL = ("bash", "sh", "shell", "console")
#: The comment that says why the shell block right below it is not run by the tests.
NOT_RUN = re.compile(r"<!--\s*not run:\s*(?P<reason>.*?)\s*-->", re.S)
HEADING = re.compile(r"^(?P<hashes>#{1,6}) (?P<title>.+?)\s*#*\s*$")


@cache
def nav() -> tuple[str, ...]:
    """The pages of mkdocs.yml's ``nav:``, in order, as paths from the repository root."""
    import yaml

    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    found: list[str] = []

    def walk(entry: object) -> None:
        if isinstance(entry, str):
            found.append(f"docs/{entry}")
        elif isinstance(entry, list):
            for item in entry:
                walk(item)
        elif isinstance(entry, dict):
            for value in entry.values():
                walk(value)

    walk(config["nav"])
    return tuple(found)


def doc_files() -> list[str]:
    """Every Markdown page under docs/ (the site's sources; docs/_tools/ holds none)."""
    return sorted(p.relative_to(ROOT).as_posix() for p in DOCS.rglob("*.md"))


@cache
def _read(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")


def page(name: str) -> str:
    """The text of one page: ``README.md`` or a path under docs/ (``docs/`` may be left out)."""
    if name != README and not name.startswith("docs/"):
        name = f"docs/{name}"
    return _read(name)


def pages() -> dict[str, str]:
    """Every page, the site's in navigation order (pages outside it after them), then the
    README."""
    order = [*nav(), *(p for p in doc_files() if p not in nav()), README]
    return {name: page(name) for name in order}


def without_code(text: str) -> str:
    """``text`` with its fenced blocks blanked (their lines kept empty, so line numbers hold)."""
    out, fence = [], None
    for line in text.split("\n"):
        stripped = line.strip()
        if fence is None and stripped.startswith("```"):
            fence = stripped[: len(stripped) - len(stripped.lstrip("`"))]
            out.append("")
        elif fence is not None:
            if stripped == fence:
                fence = None
            out.append("")
        else:
            out.append(line)
    return "\n".join(out)


def headings(text: str) -> list[tuple[int, str]]:
    """``(level, title)`` of every heading outside fenced blocks."""
    found = []
    for line in without_code(text).split("\n"):
        m = HEADING.match(line)
        if m:
            found.append((len(m["hashes"]), m["title"]))
    return found


def section(text: str, title: str) -> str:
    """The section whose heading starts with ``title`` (any level), up to the next heading of
    the same or a higher level."""
    lines = text.split("\n")
    plain = without_code(text).split("\n")
    for i, line in enumerate(plain):
        m = HEADING.match(line)
        if m and m["title"].startswith(title):
            level = len(m["hashes"])
            for j in range(i + 1, len(lines)):
                n = HEADING.match(plain[j])
                if n and len(n["hashes"]) <= level:
                    return "\n".join(lines[i:j])
            return "\n".join(lines[i:])
    raise AssertionError(f"no heading {title!r}")


def mkdocs_slug(title: str) -> str:
    """The anchor MkDocs gives a heading (Python-Markdown's toc ``slugify``)."""
    title = re.sub(r"`([^`]*)`", r"\1", title)
    title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode("ascii")
    title = re.sub(r"[^\w\s-]", "", title).strip().lower()
    return re.sub(r"[-\s]+", "-", title)


def github_slug(title: str) -> str:
    """The anchor GitHub gives a heading of a README."""
    title = re.sub(r"`([^`]*)`", r"\1", title).strip().lower()
    return re.sub(r"[^\w\- ]", "", title).replace(" ", "-")


def anchors(name: str) -> set[str]:
    """The anchors of a page's headings, as the page is shown: README.md on GitHub, docs/ by
    MkDocs."""
    slug = github_slug if name == README else mkdocs_slug
    return {slug(title) for _, title in headings(page(name))}


@dataclass(frozen=True)
class Block:
    page: str
    line: int  # of the opening fence, 1-based
    lang: str
    body: str
    #: Why the tests do not run it (``<!-- not run: REASON -->`` right above it); None: run.
    reason: str | None

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def blocks(name: str) -> list[Block]:
    """The fenced blocks of a page, in order."""
    lines = page(name).split("\n")
    found, i = [], 0
    while i < len(lines):
        stripped = lines[i].strip()
        if not stripped.startswith("```"):
            i += 1
            continue
        fence = stripped[: len(stripped) - len(stripped.lstrip("`"))]
        lang = stripped[len(fence):].strip()
        indent = len(lines[i]) - len(lines[i].lstrip())
        end = i + 1
        while end < len(lines) and lines[end].strip() != fence:
            end += 1
        body = "\n".join(line[indent:] for line in lines[i + 1:end])
        above = i - 1
        while above >= 0 and not lines[above].strip():
            above -= 1
        m = NOT_RUN.fullmatch(lines[above].strip()) if above >= 0 else None
        found.append(Block(name, i + 1, lang, body + "\n", m["reason"] if m else None))
        i = end + 1
    return found


def shell_blocks() -> list[Block]:
    """Every shell block of every page, in reading order."""
    return [b for name in pages() for b in blocks(name) if b.lang in SHELL]
