"""``itra-bench list KIND``: the models, losses, tasks, suites, metrics or plugins installed."""

from __future__ import annotations

import argparse
import difflib

from rich.console import Console

from itra_bench.commands import Command
from itra_bench.errors import LIST_KINDS
from itra_bench.registry import Registry
from itra_bench.tables import Column, Value, add_format_argument, render


def _list_kind(text: str) -> str:
    if text in LIST_KINDS:
        return text
    close = difflib.get_close_matches(text, LIST_KINDS, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise argparse.ArgumentTypeError(f"unknown kind {text!r}.{hint} Choose one of "
                                     f"{', '.join(LIST_KINDS)}.")


def add_arguments(lst: argparse.ArgumentParser) -> None:
    """The arguments of ``itra-bench list`` (besides the plugin flags)."""
    lst.add_argument("kind", type=_list_kind, metavar="{" + ",".join(LIST_KINDS) + "}")
    add_format_argument(lst)


def list_rows(kind: str, registry: Registry) -> tuple[list[Column], list[dict[str, Value]]]:
    """Columns and rows of ``itra-bench list KIND``."""
    plugin = [Column("plugin", whole=True), Column("distribution", whole=True)]
    if kind == "models":
        return ([Column("scheme", whole=True), Column("example"), Column("description"),
                 *plugin],
                [{"scheme": name, "example": p.item.example,
                  "description": p.item.description, "plugin": p.plugin.name,
                  "distribution": p.plugin.distribution}
                 for name, p in sorted(registry.models.items())])
    if kind == "losses":
        return ([Column("loss", whole=True), Column("description"), *plugin],
                [{"loss": name, "description": p.item.description, "plugin": p.plugin.name,
                  "distribution": p.plugin.distribution}
                 for name, p in sorted(registry.losses.items())])
    if kind == "tasks":
        return ([Column("task", whole=True), Column("aliases"),
                 Column("protocol", whole=True), Column("main_score", "main score", whole=True),
                 Column("suites"), Column("description"), *plugin],
                [{"task": name, "aliases": [a for a in p.item.aliases if a != name],
                  "protocol": p.item.protocol, "main_score": p.item.main_score,
                  "suites": list(p.item.suites), "description": p.item.description,
                  "plugin": p.plugin.name, "distribution": p.plugin.distribution}
                 for name, p in sorted(registry.tasks.items())])
    if kind == "suites":
        return ([Column("suite", whole=True), Column("tasks"),
                 Column("count", whole=True, align="right"), *plugin],
                [{"suite": name, "tasks": list(members), "count": len(members),
                  "plugin": registry.suite_providers[name].name,
                  "distribution": registry.suite_providers[name].distribution}
                 for name, members in sorted(registry.suites.items())])
    if kind == "metrics":
        from itra_bench.metric_names import declared_metrics

        better = {True: "higher", False: "lower", None: "(a setting)"}
        return ([Column("metric", whole=True), Column("better", whole=True),
                 Column("outcomes"), Column("description"), Column("declared_by")],
                [{"metric": m.name, "better": better[m.higher_is_better],
                  "outcomes": list(m.outcome_kinds), "description": m.description,
                  "declared_by": who}
                 for m, who in sorted(declared_metrics(registry), key=lambda x: x[0].name)])
    return ([Column("plugin", whole=True), Column("module", whole=True),
             Column("distribution", whole=True)],
            [{"plugin": name, "module": info.module, "distribution": info.distribution}
             for name, info in sorted(registry.plugins.items())])


def list_command(args: argparse.Namespace, registry: Registry, console: Console) -> int:
    """Print what is installed of ``args.kind``."""
    columns, rows = list_rows(args.kind, registry)
    render(rows, columns, args.format, Console(), title=f"itra-bench {args.kind}")
    return 0


COMMAND = Command("list", "show installed models, tasks, ...", run=list_command,
                  add_arguments=add_arguments)
