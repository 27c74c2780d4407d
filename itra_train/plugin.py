"""The trainer's contributions to itra-bench, through the plugin host like any plugin's:
the ``checkpoint`` and ``demo`` model schemes and the ``train``, ``watch`` and ``demo``
subcommands of ``itra-bench``. (itra-bench itself never imports the trainer.)"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape

from itra_bench import (
    Command,
    ModelBuilder,
    ModelOptions,
    Registry,
    UserError,
    add_run_flag,
    default_workers,
    expand_path,
    hookimpl,
    non_negative_int,
    positive_float,
)

if TYPE_CHECKING:  # torch loads only when a model is built
    from itra_bench import EncoderModel


def _build_checkpoint(rest: str, options: ModelOptions) -> EncoderModel:
    from .checkpoint_model import build_checkpoint

    return build_checkpoint(rest, options)


def _build_demo(rest: str, options: ModelOptions) -> EncoderModel:
    """``demo`` (trained on digits at first use, cached) or ``demo:random`` (untrained)."""
    if rest == "random":
        from .demo_model import build_random_demo

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
    from itra_bench import evaluate, write_leaderboard

    from .checkpoint_model import load_checkpoint_model
    from .demo import train_demo

    checkpoint = train_demo(workers=args.workers, retrain=args.retrain, console=console)
    console.print(f"demo checkpoint: {escape(str(checkpoint))}")
    model = load_checkpoint_model(checkpoint, registry)
    model.provider = registry.plugins.get("itra_train")
    results = evaluate(model, ["demo"], name="demo", registry=registry, console=console,
                       show_progress=not args.no_progress, output=args.output,
                       workers=args.workers, cache_dir=None, overwrite=True)
    results.print(Console())
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
    add_run_flag(parser, "data_root")
    parser.add_argument("--output", type=expand_path,
                        help="results folder (default: LOGDIR/watch-results)")
    # The flags of `itra-bench run` that say how each checkpoint is evaluated, declared
    # (and checked) where `run` declares them.
    for name in ("device", "precision", "batch_size", "workers", "seed", "skip_missing",
                 "dist_timeout"):
        add_run_flag(parser, name)


def _watch(args: argparse.Namespace, registry: Registry, console: Console) -> int:
    from itra_bench import RunSettings, init_distributed, protocol_flag_options

    from .watch import CSV_NAME, PLOT_NAME, watch

    folder = Path(args.run_folder)
    settings = RunSettings(device=args.device, precision=args.precision,
                           batch_size=args.batch_size, workers=args.workers, seed=args.seed,
                           data_root=args.data_root,
                           output=args.output or str(folder / "watch-results"), cache_dir=None,
                           skip_missing=args.skip_missing,
                           task_options=protocol_flag_options(args))
    world = init_distributed(args.device, timeout=args.dist_timeout)
    rows = watch(folder, args.tasks, settings, registry, console, once=args.once,
                 interval=args.interval, idle=args.idle, world=world)
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
