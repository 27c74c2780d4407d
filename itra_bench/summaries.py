"""Result summaries: views of a results folder that plugins add to ``itra-bench results``
(files written beside the leaderboard, tables in the terminal) and to the HTML report of
``itra-bench report`` (a section of tables). ELEVATER's per-mode summary comes this way."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from itra_bench.atomic_io import atomic_write_text
from itra_bench.errors import PluginBugError, PluginClashError, UserError
from itra_bench.paths import is_file_name
from itra_bench.tables import Column, Value, render

if TYPE_CHECKING:
    from rich.console import Console

    from itra_bench.plugin_tables import Provided

#: A summary's name: it names the report's section (``NAME-summary``) and its anchor.
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")


@dataclass(frozen=True)
class SummaryTable:
    """One table of a summary: its ``title``, ``columns`` (a right-aligned column holds
    numbers) and ``rows`` (column key -> cell), and an optional ``total`` row (an average
    over the rows) printed last; the report shows the total's cells named in ``emphasis``
    in bold."""

    title: str
    columns: Sequence[Column]
    rows: Sequence[Mapping[str, Value]]
    total: Mapping[str, Value] | None = None
    emphasis: tuple[str, ...] = ()

    def all_rows(self) -> list[Mapping[str, Value]]:
        """The rows, then the total row when there is one."""
        return [*self.rows, *([self.total] if self.total is not None else [])]


@dataclass(frozen=True)
class Summary:
    """What one summary view found in a results folder.

    ``tables`` are printed by ``itra-bench results`` (in its table format) and make the
    view's section of the HTML report, introduced by ``note`` (one paragraph of plain text;
    text in backticks is shown as code). ``files`` maps plain file names to their text,
    written by ``itra-bench results`` into its output folder (``--out``, else the results
    folder), whatever the format.
    """

    tables: Sequence[SummaryTable]
    files: Mapping[str, str] = field(default_factory=dict)
    note: str = ""


@dataclass(frozen=True)
class ResultSummary:
    """A view of a results folder that a plugin adds to ``itra-bench results`` and
    ``itra-bench report`` (see :func:`itra_bench.hookspecs.itra_bench_result_summaries`).

    ``summarize(root)`` reads the results under ``root`` (with
    :func:`itra_bench.results.iter_records`) and returns a :class:`Summary`, or None when
    none of them concerns it. ``name`` (lowercase letters, digits, ``-`` and ``_``) is
    unique across plugins; ``title`` heads the view's report section.
    """

    name: str
    title: str
    summarize: Callable[[Path], Summary | None]

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"result summary {self.name!r}: a name is lowercase letters, "
                             "digits, '-' and '_', starting with a letter or digit")


def collect_summaries(root: str | Path, summaries: Mapping[str, Provided[ResultSummary]]
                      ) -> list[tuple[ResultSummary, Summary]]:
    """Each summary view (the registry's ``result_summaries``) of the results under
    ``root`` that finds something, in the order of their names. A view that raises anything
    but a :class:`~itra_bench.errors.UserError` or ``OSError``, or returns something else
    than a :class:`Summary`, is its plugin's bug."""
    found = []
    for name in sorted(summaries):
        provided = summaries[name]
        view = provided.item
        try:
            summary = view.summarize(Path(root))
        except (UserError, OSError):
            raise
        except Exception as exc:
            raise PluginBugError(
                f"plugin bug: the result summary {name!r} of {provided.plugin.describe()}, "
                f"module {provided.plugin.module}, raised {type(exc).__name__}: {exc} "
                f"(summarizing {root}). Report it to the plugin's authors (rerun with --debug "
                "for the traceback), or skip it with "
                f"`--disable-plugin {provided.plugin.name}`.") from exc
        if summary is None:
            continue
        if not isinstance(summary, Summary):
            raise PluginBugError(
                f"plugin bug: the result summary {name!r} of {provided.plugin.describe()} "
                f"returned a {type(summary).__name__}; it must return an "
                "itra_bench.summaries.Summary or None. Report it to the plugin's authors.")
        found.append((view, summary))
    return found


def write_summaries(root: str | Path, out: str | Path,
                    summaries: Mapping[str, Provided[ResultSummary]]
                    ) -> list[tuple[Summary, list[Path]]]:
    """Write the files of each summary view of the results under ``root`` into the folder
    ``out``; returns each summary that found something with the paths it wrote."""
    written: list[tuple[Summary, list[Path]]] = []
    owners: dict[str, str] = {}
    for view, summary in collect_summaries(root, summaries):
        plugin = summaries[view.name].plugin
        paths = []
        for file_name, text in summary.files.items():
            if not is_file_name(file_name):
                raise PluginBugError(
                    f"plugin bug: the result summary {view.name!r} of {plugin.describe()} "
                    f"names a file {file_name!r}; summary files are plain file names, "
                    "written into the output folder. Report it to the plugin's authors.")
            if file_name in owners:
                raise PluginClashError(
                    f"summary file {file_name!r} is written by two result summaries: "
                    f"{owners[file_name]!r} and {view.name!r} ({plugin.describe()}). Block "
                    "one with `--disable-plugin NAME`.")
            owners[file_name] = view.name
            paths.append(atomic_write_text(Path(out) / file_name, text))
        written.append((summary, paths))
    return written


def print_summary(summary: Summary, console: Console) -> None:
    """Print a summary's tables as terminal tables that never cut a name or a number."""
    for table in summary.tables:
        render(table.all_rows(), table.columns, "table", console, title=table.title)
