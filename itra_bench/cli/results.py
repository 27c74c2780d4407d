"""The commands that read a results folder: ``results`` (the leaderboard and the plugins'
summaries), ``compare`` (model B against model A, task by task) and ``report`` (one HTML
file)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from itra_bench.atomic_io import writing_into
from itra_bench.cli.deprecated_flags import add_deprecated_alias
from itra_bench.cli_types import positive_int
from itra_bench.commands import Command
from itra_bench.errors import UserError
from itra_bench.paths import expand_path
from itra_bench.registry import Registry
from itra_bench.run_flags import add_run_flag
from itra_bench.tables import add_format_argument

#: What the folder argument of these commands is.
_FOLDER_HELP = "results folder written by `itra-bench run`"


def _warn_left_out(problems: list[str], console: Console) -> None:
    """Warn of each result file a command left out (unreadable, or not a valid result)."""
    for problem in problems:
        console.print(f"[yellow]warning: unreadable result left out: {escape(problem)}[/]")


def _results_arguments(res: argparse.ArgumentParser) -> None:
    res.add_argument("folder", type=expand_path, help=_FOLDER_HELP)
    res.add_argument("--output", type=expand_path,
                     help="where to write leaderboard.csv/.md (default: FOLDER)")
    # The flag's name before every command called its output --output.
    add_deprecated_alias(res, "--out", "--output", type=expand_path)
    add_format_argument(res)


def results_command(args: argparse.Namespace, registry: Registry, console: Console) -> int:
    """Collate the results folder into a leaderboard and the plugins' summaries."""
    from itra_bench.leaderboard import write_leaderboard

    folder = Path(args.folder)
    if not folder.is_dir():
        raise UserError(f"results folder not found: {folder}")
    problems: list[str] = []
    out = Path(args.output or folder)
    # Written into --output, or into the results folder itself.
    flag, how = ("--output", None) if args.output else \
        ("results folder", "Write elsewhere with --output")
    with writing_into(out, flag, how):
        board = write_leaderboard(folder, args.output, problems, registry.suites)
    _warn_left_out(problems, console)
    if not board.models:
        raise UserError(f"no itra-bench result files under {folder}")
    board.print(Console(), args.format)
    console.print(f"wrote {out / 'leaderboard.csv'} and {out / 'leaderboard.md'}")
    from itra_bench.summaries import print_summary, write_summaries

    with writing_into(out, flag, how):
        written = write_summaries(folder, out, registry.result_summaries)
    # Only the table format adds the plugins' summaries: scripts read one document.
    if args.format == "table":
        for summary, paths in written:
            print_summary(summary, Console())
            if paths:
                console.print(f"wrote {' and '.join(map(str, paths))}")
    return 0


def _compare_arguments(cmp: argparse.ArgumentParser) -> None:
    cmp.add_argument("folder", type=expand_path, help=_FOLDER_HELP)
    cmp.add_argument("--models", nargs=2, required=True, metavar=("A", "B"),
                     help="the two models, as `itra-bench results` names them (a unique file "
                          "name such as epoch_2.pt or a fingerprint prefix also works)")
    cmp.add_argument("--resamples", type=positive_int, default=1000, metavar="N",
                     help="bootstrap and permutation resamples (default %(default)s)")
    add_run_flag(cmp, "seed", help="seed of the resampling (default 0)")
    add_format_argument(cmp)


def compare_command(args: argparse.Namespace, registry: Registry, console: Console) -> int:
    """Compare two models' results task by task, with paired tests."""
    from itra_bench.compare import compare_results

    problems: list[str] = []
    result = compare_results(args.folder, *args.models, resamples=args.resamples,
                             seed=args.seed, suite_members=registry.suites, problems=problems)
    _warn_left_out(problems, console)
    result.print(Console(), args.format)
    for who, columns in (("A", result.only_a), ("B", result.only_b)):
        if columns:
            console.print(f"only {who} has: {escape(', '.join(columns))} (not compared)")
    return 0


def _report_arguments(rep: argparse.ArgumentParser) -> None:
    rep.add_argument("folder", type=expand_path,
                     help="results folder written by `itra-bench run`, or an itra-train run "
                          "folder <logs>/<name> evaluated by `itra-bench watch`")
    rep.add_argument("-o", "--output", default="report.html", type=expand_path,
                     help="HTML file to write (default %(default)s)")


def report_command(args: argparse.Namespace, registry: Registry, console: Console) -> int:
    """Write the HTML report of a results folder."""
    # matplotlib loads here only: `--help` stays quick.
    from itra_bench.report import write_report

    problems: list[str] = []
    path = write_report(args.folder, args.output, problems, registry.suites,
                        registry.result_summaries)
    _warn_left_out(problems, console)
    console.print(f"wrote {escape(str(path))}")
    return 0


COMMANDS = [
    Command("results", "collate a results folder into a leaderboard", run=results_command,
            add_arguments=_results_arguments),
    Command("compare", "is model B better than model A? paired tests per task",
            run=compare_command, add_arguments=_compare_arguments,
            description="Compare two models' results task by task: both main scores, B - A "
                        "with its paired bootstrap interval, a paired p-value and a marker (*) "
                        "where the difference survives Holm's correction across the tasks; "
                        "per suite the mean difference with its interval."),
    Command("report", "write one self-contained HTML report of a results folder",
            run=report_command, add_arguments=_report_arguments,
            description="Write one HTML file (no network needed: charts are embedded) with the "
                        "leaderboard, per-suite bar charts with interval error bars, the "
                        "plugins' summaries (such as ELEVATER's), and for an itra-train run "
                        "folder each task's score over epochs."),
]
