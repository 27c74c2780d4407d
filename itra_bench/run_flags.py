"""The command-line flags of a run's settings, declared once for every command that takes
them: the run flags (``--device``, ``--precision``, ``--batch-size``, ...: ``itra-bench run``,
``watch``, ``compare`` and ``itra-train`` add them by name with :func:`add_run_flag`) and the
protocol flags (``--mode``, ``--shots``, ...: the task options, a flag group of
:class:`itra_bench.commands.Command`). Each flag's type is the rule that checks its value, so
every command refuses a bad value alike (exit 2, the flag and the rule named).

Torch-free: ``--help`` imports it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from itra_bench.cli_types import (
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    seed_int,
)
from itra_bench.context import DEFAULT_TIMEOUT, default_workers
from itra_bench.paths import expand_path
from itra_bench.precision import PRECISIONS, precision_name
from itra_bench.run_settings import FLAGS, KNOWLEDGE, MODES, protocol_options


def precision_arg(text: str) -> str:
    """``--precision`` as argparse reads it: today's name, old spellings accepted."""
    try:
        return precision_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


@dataclass(frozen=True)
class RunFlag:
    """One shared flag: its option string and what argparse is told of it. A callable
    ``default`` is called when the flag is added (a default that depends on the machine)."""

    option: str
    help: str | None = None
    type: Callable[[str], Any] | None = None
    default: Any = None
    metavar: str | None = None
    action: str | None = None

    def add_to(self, parser: argparse.ArgumentParser | argparse._ArgumentGroup,
               **changes: Any) -> argparse.Action:
        """Add the flag to ``parser``; ``changes`` replace argparse settings."""
        default = self.default() if callable(self.default) else self.default
        settings = {"help": self.help, "type": self.type, "default": default,
                    "metavar": self.metavar, "action": self.action}
        settings = {k: v for k, v in settings.items() if v is not None}
        settings.update(changes)
        return parser.add_argument(self.option, **settings)


#: The shared run flags, by the name of the setting each sets.
RUN_FLAGS: dict[str, RunFlag] = {
    "device": RunFlag("--device", "auto | cpu | cuda[:N] (default auto)", default="auto"),
    "precision": RunFlag("--precision", "autocast of the forward passes (amp: old name of "
                                        "amp_fp16)",
                         type=precision_arg, default="fp32",
                         metavar="{" + ",".join(PRECISIONS) + "}"),
    "batch_size": RunFlag("--batch-size", type=positive_int, default=64),
    "workers": RunFlag("--workers", "DataLoader worker processes (default: CPU cores - 1, at "
                                    "most 8; here %(default)s)",
                       type=non_negative_int, default=default_workers),
    "seed": RunFlag("--seed", "seeds the run and the bootstrap resampling (default 0)",
                    type=seed_int, default=0),
    "data_root": RunFlag("--data-root", "folder that dataset paths are under",
                         type=expand_path, default="."),
    "skip_missing": RunFlag("--skip-missing", "run the tasks whose data is present, "
                                              "skipping the others", action="store_true"),
    "dist_timeout": RunFlag("--dist-timeout", "under torchrun or srun: how long a rank waits "
                                              "for the others before the job ends (default "
                                              "%(default)s)",
                            type=positive_float, default=DEFAULT_TIMEOUT, metavar="SECONDS"),
}


def add_run_flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup, name: str,
                 **changes: Any) -> argparse.Action:
    """Add the shared run flag ``name`` (``device``, ``precision``, ``batch_size``,
    ``workers``, ``seed``, ``data_root``, ``skip_missing`` or ``dist_timeout``) to
    ``parser``, with its type, default and help; ``changes`` replace argparse settings where
    a command means more by it (its own help, or ``default=argparse.SUPPRESS``)."""
    try:
        flag = RUN_FLAGS[name]
    except KeyError:
        raise ValueError(f"no shared run flag {name!r}; choose from "
                         f"{', '.join(RUN_FLAGS)}") from None
    return flag.add_to(parser, **changes)


def _task_option(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") \
            from exc
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def protocol_flags() -> argparse.ArgumentParser:
    """The protocol flags (the task options of ``itra-bench run``), as a parent parser."""
    p = argparse.ArgumentParser(add_help=False)
    elevater = p.add_argument_group("image classification protocols (ELEVATER tasks)")
    elevater.add_argument("--mode", choices=MODES, default="zeroshot",
                          help="zeroshot | linear_probe | finetune (full-model fine-tuning "
                               "with a linear head; GPU in practice) (default zeroshot)")
    elevater.add_argument("--shots", type=_int_list, default=[-1], metavar="N[,N...]",
                          help="training images per class for linear_probe/finetune; "
                               "-1 = the full training set (default -1)")
    elevater.add_argument("--seeds", type=_int_list, default=[0], metavar="S[,S...]",
                          help="few-shot sampling seeds (default 0)")
    elevater.add_argument("--no-tuning", action="store_true",
                          help="skip the hyper-parameter search; needs --lr and --l2")
    elevater.add_argument("--lr", type=positive_float, help="learning rate when --no-tuning")
    elevater.add_argument("--l2", type=non_negative_float, help="L2 strength when --no-tuning")
    elevater.add_argument("--knowledge", choices=KNOWLEDGE, default="none",
                          help="zeroshot: append each class's WordNet definition to its "
                               "prompts, as ELEVATER's K-LITE does (needs nltk and its "
                               "wordnet corpus installed locally)")
    text = p.add_argument_group("text tasks")
    text.add_argument("--max-passages", type=positive_int, metavar="N",
                      help="MS MARCO: evaluate on N passages that always include every "
                           "judged one (quick runs)")
    elevater.add_argument("--task-option", type=_task_option, action="append", default=[],
                          metavar="KEY=VALUE", help="option passed to tasks that take one")
    return p


def task_options(args: argparse.Namespace) -> dict[str, object]:
    """The task options of a command line with the protocol flags (``run``, ``check-data``
    and plugin commands taking them): what ``ctx.options`` holds."""
    # --lr and --l2 count only with --no-tuning (their help says so).
    return protocol_options(mode=args.mode, shots=args.shots, seeds=args.seeds,
                            tuning=not args.no_tuning,
                            lr=args.lr if args.no_tuning else None,
                            l2=args.l2 if args.no_tuning else None,
                            knowledge=args.knowledge, max_passages=args.max_passages,
                            extra=dict(args.task_option), spelling=FLAGS)
