"""The trainer's contributions to itra-bench, through the plugin host like any plugin's:
the ``checkpoint`` and ``demo`` model schemes and the ``train``, ``watch`` and ``demo``
subcommands of ``itra-bench``. (itra-bench itself never imports the trainer.)"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape

from itra_bench import hookimpl
from itra_bench.cli import precision_arg
from itra_bench.cli_types import non_negative_int, positive_float, positive_int, seed_int
from itra_bench.commands import Command
from itra_bench.context import DEFAULT_TIMEOUT, PRECISIONS, default_workers
from itra_bench.errors import UserError
from itra_bench.model_api import ModelBuilder, ModelOptions
from itra_bench.paths import expand_path
from itra_bench.registry import Registry

if TYPE_CHECKING:
    from itra_bench.model import EncoderModel


def _build_checkpoint(rest: str, options: ModelOptions) -> EncoderModel:
    from .checkpoint_model import build_checkpoint

    return build_checkpoint(rest, options)


def _build_demo(rest: str, options: ModelOptions) -> EncoderModel:
    """``demo`` (trained on digits at first use, cached) or ``demo:random`` (untrained)."""
    if rest == "random":
        from itra_bench.demo_model import build_random_demo

        return build_random_demo()
    if rest:
        raise UserError(f"unknown demo variant 'demo:{rest}'; use demo (trained on digits) or "
                        "demo:random (untrained)")
    from .checkpoint_model import load_checkpoint_model
    from .demo import train_demo

    return load_checkpoint_model(Path(train_demo()))


@hookimpl
def itra_bench_model_builders() -> list[ModelBuilder]:
    return [
        ModelBuilder("checkpoint", _build_checkpoint, example="logs/run/checkpoints/epoch_2.pt",
                     description="an itra-train checkpoint (its settings rebuild the model)",
                     lazy=True),
        ModelBuilder("demo", _build_demo, example="demo | demo:random",
                     description="tiny CLIP trained on digits at first use (demo:random: "
                                 "untrained)", lazy=True),
    ]


def _train_main(argv: list[str]) -> int:
    from .cli import main

    return main(argv, prog="itra-bench train")


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", default="itra-demo-results", help="results folder")
    parser.add_argument("--retrain", action="store_true",
                        help="train again even if the cached demo checkpoint exists")
    parser.add_argument("--workers", type=non_negative_int, default=default_workers())
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _demo(args: argparse.Namespace, registry: Registry, console: Console) -> int:
    from itra_bench.leaderboard import write_leaderboard
    from itra_bench.runner import RunConfig, print_outcomes, run

    from .checkpoint_model import load_checkpoint_model
    from .demo import train_demo

    checkpoint = train_demo(workers=args.workers, retrain=args.retrain, console=console)
    console.print(f"demo checkpoint: {escape(str(checkpoint))}")
    model = load_checkpoint_model(checkpoint, registry)
    model.name = "demo"
    model.provider = registry.plugins.get("itra_train")
    config = RunConfig(model="demo", tasks=["demo"], output=args.output,
                       workers=args.workers, cache_dir=None, overwrite=True)
    outcomes = run(config, registry, console, show_progress=not args.no_progress, model=model)
    print_outcomes(outcomes, "demo", Console())
    board = write_leaderboard(args.output, suite_members=registry.suites)
    board.print(Console())
    console.print(f"results in {escape(args.output)}; the same weights are `--model demo`")
    return 0


def _watch_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_folder", metavar="LOGDIR", type=expand_path,
                        help="an itra-train run folder (<logs>/<name>)")
    parser.add_argument("--tasks", required=True, nargs="+", metavar="TASK")
    parser.add_argument("--once", action="store_true",
                        help="evaluate the checkpoints present now, then stop")
    parser.add_argument("--interval", type=positive_float, default=60.0,
                        help="seconds between looks for new checkpoints (default 60)")
    parser.add_argument("--idle", type=positive_float, metavar="SECONDS",
                        help="stop after this many seconds without a new checkpoint (default: "
                             "wait until the run is finished, i.e. it wrote finished.json)")
    parser.add_argument("--data-root", default=".", type=expand_path,
                        help="folder that dataset paths are under")
    parser.add_argument("--output", type=expand_path,
                        help="results folder (default: LOGDIR/watch-results)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32", type=precision_arg,
                        metavar="{" + ",".join(PRECISIONS) + "}")
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--workers", type=non_negative_int, default=default_workers())
    parser.add_argument("--seed", type=seed_int, default=0)
    parser.add_argument("--skip-missing", action="store_true")
    parser.add_argument("--dist-timeout", type=positive_float, default=DEFAULT_TIMEOUT,
                        metavar="SECONDS", help="under torchrun or srun: how long a rank waits "
                                                "for the others (default %(default)s)")


def _watch(args: argparse.Namespace, registry: Registry, console: Console) -> int:
    from itra_bench.cli import task_options
    from itra_bench.runner import RunConfig

    from .watch import CSV_NAME, PLOT_NAME, watch

    folder = Path(args.run_folder)
    base = RunConfig(model="", tasks=args.tasks, device=args.device, precision=args.precision,
                     batch_size=args.batch_size, workers=args.workers, seed=args.seed,
                     data_root=args.data_root,
                     output=args.output or str(folder / "watch-results"), cache_dir=None,
                     skip_missing=args.skip_missing, task_options=task_options(args))
    from itra_bench.distributed import init_distributed

    world = init_distributed(args.device, timeout=args.dist_timeout)
    rows = watch(folder, base, registry, console, once=args.once, interval=args.interval,
                 idle=args.idle, world=world)
    if not world.is_main:
        return 0
    console.print(f"{len(rows)} checkpoint(s) evaluated: {escape(str(folder / CSV_NAME))}, "
                  f"{escape(str(folder / PLOT_NAME))}")
    return 0


@hookimpl
def itra_bench_commands() -> list[Command]:
    return [
        Command("train", "train a model (itra-train; `itra-bench train --help` lists its flags)",
                main=_train_main),
        Command("demo", "train the tiny demo CLIP on digits, evaluate it, show the leaderboard",
                run=_demo, add_arguments=_demo_arguments),
        Command("watch", "evaluate each checkpoint of a training run as it appears",
                run=_watch, add_arguments=_watch_arguments, flags=("plugin", "protocol")),
    ]
