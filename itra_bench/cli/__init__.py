"""The ``itra-bench`` command line: one parser built from every command, the built-in ones
(:data:`BUILTIN_COMMANDS`, one module each) and those plugins add through the
``itra_bench_commands`` hook, all through the :class:`itra_bench.commands.Command` contract.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence

from rich.console import Console
from rich.markup import escape

from itra_bench import __version__
from itra_bench.cli import check_data, listing, results, run
from itra_bench.cli.deprecated_flags import deprecation_notes
from itra_bench.commands import Command
from itra_bench.errors import PluginClashError, UserError
from itra_bench.registry import ENV_VAR, Registry, activated, load_registry

# Names the command line has always offered here; they live with the flags they read.
from itra_bench.run_flags import precision_arg as precision_arg
from itra_bench.run_flags import task_options as task_options
from itra_bench.vocabulary import noted_renames

#: The built-in subcommands, in the order ``--help`` lists them (plugins' follow).
BUILTIN_COMMANDS: dict[str, Command] = {
    c.name: c for c in (run.COMMAND, check_data.COMMAND, listing.COMMAND, *results.COMMANDS)}


def _plugin_flags() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help=f"import MODULE as a plugin although it is not installed "
                        f"(repeatable; also ${ENV_VAR}, comma-separated)")
    p.add_argument("--disable-plugin", action="append", default=[], metavar="NAME",
                   help="do not load the installed plugin NAME (entry-point name)")
    p.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    return p


#: The options of :func:`_plugin_flags` that take a value.
_PLUGIN_VALUE_FLAGS = ("--plugin", "--disable-plugin")


def _leading_plugin_flags(argv: Sequence[str]) -> int:
    """How many of the first arguments of ``argv`` are plugin flags (given before the
    subcommand)."""
    i = 0
    while i < len(argv):
        if argv[i] == "--debug" or argv[i].startswith(tuple(f + "=" for f in
                                                             _PLUGIN_VALUE_FLAGS)):
            i += 1
        elif argv[i] in _PLUGIN_VALUE_FLAGS:
            i += 2
        else:
            break
    return min(i, len(argv))


def build_parser(commands: Mapping[str, Command] | None = None) -> argparse.ArgumentParser:
    """The argument parser of ``commands`` (default: the built-in ones), each subcommand
    with the shared flag groups it names."""
    from itra_bench.run_flags import protocol_flags

    commands = BUILTIN_COMMANDS if commands is None else commands
    groups = {"plugin": _plugin_flags(), "protocol": protocol_flags()}
    parser = argparse.ArgumentParser(
        prog="itra-bench", description="Evaluate image-text representation models.")
    parser.add_argument("--version", action="version", version=f"itra-bench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in commands.values():
        if command.main is not None:
            sub.add_parser(command.name, add_help=False, help=command.help)
            continue
        cmd = sub.add_parser(command.name, parents=[groups[g] for g in command.flags],
                             help=command.help, description=command.description or None)
        if command.add_arguments is not None:
            command.add_arguments(cmd)
    return parser


def plugin_commands(registry: Registry) -> dict[str, Command]:
    """The subcommands plugins add; one that reuses a built-in name is refused."""
    out = {}
    for name, provided in registry.commands.items():
        if name in BUILTIN_COMMANDS:
            raise PluginClashError(f"{provided.plugin.describe()} adds the command {name!r}, "
                                   "which is a built-in itra-bench command; rename it")
        out[name] = provided.item
    return out


def _rank_prefix() -> str:
    """``rank N: `` inside a multi-process job (every rank prints its own errors)."""
    from itra_bench.distributed import job_environment

    try:
        job = job_environment()
    except UserError:
        return ""
    return f"rank {job[0]}: " if job else ""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``itra-bench`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    early, _ = _plugin_flags().parse_known_args(argv)
    console = Console(stderr=True)
    debug = early.debug
    try:
        # The parser needs only the plugins' subcommands: `--help` reads no task file. Every
        # command that runs collects all the rest first, so a clash still stops it at once.
        registry = load_registry(early.plugin, early.disable_plugin, lazy=True)
        commands = {**BUILTIN_COMMANDS, **plugin_commands(registry)}
        # Plugin flags may come before the subcommand too (`itra-bench --plugin M run`):
        # `early` has read them already.
        lead = _leading_plugin_flags(argv)
        name = argv[lead] if lead < len(argv) else ""
        if name in commands and commands[name].main is not None:
            registry.load_all()
            # A command owning its command line loads its plugins itself: pass them on.
            return commands[name].main(argv[:lead] + argv[lead + 1:])
        try:
            args = build_parser(commands).parse_args(argv[lead:])
        except SystemExit as exc:  # --help, --version, or a usage error already printed
            return exc.code if isinstance(exc.code, int) else 2
        for note in deprecation_notes(args):
            console.print(f"[yellow]note[/]: {escape(note)}", highlight=False)
        registry.load_all()
        # What the command computes takes plugins' contributions (outcome statistics,
        # models built inside others) from this command's plugins.
        # Old words read from files (a task file's `protocol:` key, ...) are noted like old
        # flags, once each, instead of as Python warnings.
        with activated(registry), noted_renames(
                lambda text: console.print(f"[yellow]note[/]: {escape(text)}", highlight=False)):
            return commands[args.command].run(args, registry, console)
    except UserError as exc:
        if debug:
            console.print_exception()
        text = str(exc) if str(exc).startswith("rank ") else _rank_prefix() + str(exc)
        console.print(f"[bold red]error:[/] {escape(text)}", highlight=False)
        return exc.exit_code
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; results written so far are kept[/]")
        return 130
    finally:
        # Only a command that imported torch can have started a process group.
        dist = sys.modules.get("torch.distributed")
        if dist is not None and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
