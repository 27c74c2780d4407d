"""The contract of the subcommands of the ``itra-bench`` command line: the built-in ones
(``itra_bench.cli``) and those plugins add through the ``itra_bench_commands`` hook."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

    from itra_bench.registry import Registry

#: Shared flag groups a command can include by name (see :class:`Command`).
FLAG_GROUPS = ("plugin", "protocol")


@dataclass(frozen=True)
class Command:
    """A subcommand ``itra-bench NAME``: a built-in one, or one contributed by a plugin (the
    trainer adds ``train``, ``watch`` and ``demo`` this way).

    Give either

    - ``run(args, registry, console) -> exit code``: itra-bench parses the command line;
      ``add_arguments(parser)`` declares the command's own flags and ``flags`` names shared
      groups to include: ``plugin`` (``--plugin``, ``--disable-plugin``, ``--debug``) and
      ``protocol`` (the task options of ``itra-bench run``: ``--mode``, ``--shots``, ...;
      turn them into ``ctx.options`` with ``itra_bench.protocol_flag_options(args)``); the
      flags of a run's settings (``--device``, ``--precision``, ...) are added one by one
      with ``itra_bench.add_run_flag(parser, name)``; or
    - ``main(argv) -> exit code``: the command owns its command line, and receives every
      argument after its name (``itra-bench train ...`` is ``itra-train ...``).

    A :class:`itra_bench.errors.UserError` raised by ``run`` is printed as one message with
    exit code 2, as for the built-in commands.
    """

    name: str
    help: str
    run: Callable[[argparse.Namespace, Registry, Console], int] | None = None
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    flags: tuple[str, ...] = ("plugin",)
    main: Callable[[list[str]], int] | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if (self.run is None) == (self.main is None):
            raise ValueError(f"command {self.name!r}: give exactly one of run= and main=")
        unknown = set(self.flags) - set(FLAG_GROUPS)
        if unknown:
            raise ValueError(f"command {self.name!r}: unknown flag groups {sorted(unknown)}; "
                             f"choose from {FLAG_GROUPS}")
