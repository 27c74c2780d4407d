"""``itra-bench run``: evaluate models on tasks, one process or a distributed job."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape

from itra_bench.cli.deprecated_flags import add_deprecated_alias
from itra_bench.cli_types import non_negative_int, positive_int
from itra_bench.commands import Command
from itra_bench.errors import UserError
from itra_bench.model_api import TEXT_POOLERS
from itra_bench.paths import DEFAULT_CACHE_DIR, expand_path
from itra_bench.registry import Registry
from itra_bench.run_flags import add_run_flag, task_options

# torch, and the modules that import it, load only when the command runs: `--help` stays
# quick.
if TYPE_CHECKING:
    from itra_bench.distributed import World
    from itra_bench.runner import RunConfig


def add_arguments(run: argparse.ArgumentParser) -> None:
    """The flags of ``itra-bench run`` (besides the plugin and protocol groups)."""
    run.add_argument("--model", action="append", default=[], metavar="SPEC",
                     help="demo | openclip:ARCH[@WEIGHTS] | hf:PATH | sbert:PATH | "
                          "timm:NAME[@WEIGHTS] | torchvision:NAME[@WEIGHTS] | "
                          "torchhub:REPO:NAME; repeat it to evaluate several models")
    run.add_argument("--models-file", metavar="FILE", type=expand_path,
                     help="more model specs, one a line (blank lines and # comments ignored)")
    run.add_argument("--tasks", required=True, nargs="+", metavar="TASK",
                     help="task names, suite names or task .yaml files (space or comma "
                          "separated)")
    run.add_argument("--pretrained", metavar="PATH", type=expand_path,
                     help="local weights file for the model")
    run.add_argument("--random-init", action="store_true",
                     help="evaluate a model with random weights on purpose")
    run.add_argument("--weights-cache", metavar="DIR", type=expand_path,
                     help="where pretrained tags are looked up (default: the libraries' own "
                          "caches, e.g. ~/.cache/huggingface and torch.hub.get_dir())")
    run.add_argument("--text-pooler", dest="text_pooler", choices=TEXT_POOLERS,
                     help="token pooling of transformer text encoders")
    add_deprecated_alias(run, "--pooler", "--text-pooler", choices=("cls", "mean"))
    for name in ("device", "precision", "batch_size", "workers", "seed"):
        add_run_flag(run, name)
    run.add_argument("--resamples", type=non_negative_int, default=1000, metavar="N",
                     help="bootstrap resamples of each main score's 95%% interval (default "
                          "%(default)s; 0: no intervals)")
    add_run_flag(run, "data_root")
    run.add_argument("--output", default="itra-results", type=expand_path, help="results folder")
    run.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR, type=expand_path,
                     help="feature cache folder")
    run.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    run.add_argument("--cache-chunk-rows", type=positive_int, metavar="N",
                     help="images per resumable chunk of the feature cache (default 8192)")
    add_run_flag(run, "dist_timeout")
    run.add_argument("--distribute", choices=("shards", "jobs"), default="shards",
                     help="under torchrun or srun: shards = every rank encodes a part of each "
                          "task's data (default); jobs = each rank runs whole (model, task) "
                          "jobs on its own, better for many small tasks (needs --output and "
                          "--cache-dir on a file system every rank sees)")
    run.add_argument("--overwrite", action="store_true",
                     help="recompute results that already exist")
    run.add_argument("--skip-corrupt", action="store_true",
                     help="skip and count undecodable images instead of stopping")
    add_run_flag(run, "skip_missing")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")


def model_specs(args: argparse.Namespace) -> list[str]:
    """The models of a ``run`` command line: every ``--model`` and the lines of
    ``--models-file``, in order, each once."""
    specs = list(args.model)
    if args.models_file:
        path = Path(args.models_file)
        try:
            text = path.read_text(encoding="utf-8-sig")
        except OSError as exc:
            raise UserError(f"--models-file {path}: cannot read it ({exc.strerror})") from exc
        except UnicodeDecodeError as exc:
            raise UserError(f"--models-file {path}: not UTF-8 text ({exc.reason} at byte "
                            f"{exc.start})") from exc
        lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
        from_file = [line for line in lines if line]
        if not from_file:
            raise UserError(f"--models-file {path}: no model spec in it (one a line)")
        specs += from_file
    specs = list(dict.fromkeys(specs))
    if not specs:
        raise UserError("give a model to evaluate: --model SPEC (repeatable) or --models-file")
    if len(specs) > 1 and args.pretrained:
        raise UserError("--pretrained names the weights of one model; with several models put "
                        "each one's weights in its spec (e.g. openclip:ARCH@/path/weights.pt)")
    return specs


def run_command(args: argparse.Namespace, registry: Registry, console: Console) -> int:
    """Evaluate every model of the command line on its tasks; print and store the scores."""
    from itra_bench.distributed import init_distributed
    from itra_bench.leaderboard import write_leaderboard
    from itra_bench.run_outcomes import print_outcomes
    from itra_bench.runner import RunConfig, run

    # Numeric flags were checked by their argparse types (itra_bench.run_flags).
    specs = model_specs(args)
    world = init_distributed(args.device, timeout=args.dist_timeout)
    out = Console(quiet=not world.is_main)

    def config(spec: str, tasks: list[str], device: str) -> RunConfig:
        return RunConfig(
            model=spec, tasks=tasks, device=device, precision=args.precision,
            batch_size=args.batch_size, workers=args.workers, seed=args.seed,
            data_root=args.data_root, output=args.output,
            cache_dir=None if args.no_cache else args.cache_dir, overwrite=args.overwrite,
            skip_corrupt=args.skip_corrupt, pretrained=args.pretrained,
            random_init=args.random_init, text_pooler=args.text_pooler,
            weights_cache=args.weights_cache, skip_missing=args.skip_missing,
            task_options=task_options(args), cache_chunk_rows=args.cache_chunk_rows,
            resamples=args.resamples)

    if args.distribute == "jobs" and world.size > 1:
        _run_jobs(specs, args, registry, console, world, config)
    else:
        for spec in specs:
            if len(specs) > 1 and world.is_main:
                console.print(f"[bold]model {escape(spec)}[/]")
            outcomes = run(config(spec, args.tasks, args.device), registry, console,
                           show_progress=not args.no_progress, world=world)
            print_outcomes(outcomes, spec, out)
    if len(specs) > 1 and world.is_main:
        board = write_leaderboard(args.output, suite_members=registry.suites)
        board.print(out)
    if world.is_main:
        console.print(f"results in {escape(args.output)}; collate with "
                      f"`itra-bench results {escape(args.output)}`")
    return 0


def job_tasks(names: list[str], registry: Registry) -> list[str]:
    """``--tasks`` as single jobs: suites expanded into their members, each name once."""
    out: list[str] = []
    for raw in names:
        for name in (n.strip() for n in raw.split(",")):
            if name in registry.suites:
                out += registry.suites[name]
            elif name:
                out.append(name)
    return list(dict.fromkeys(out))


def _run_jobs(specs: list[str], args: argparse.Namespace, registry: Registry,
              console: Console, world: World, config: Callable[..., RunConfig]) -> None:
    """``--distribute jobs``: the (model, task) grid dealt round-robin over the ranks, each
    job run whole by one rank as a one-process run (same numbers), the outcomes gathered
    for rank 0's summary."""
    from itra_bench.distributed import World, gather_objects, require_same
    from itra_bench.run_outcomes import print_outcomes
    from itra_bench.runner import run
    from itra_bench.task_selection import select_tasks

    # The whole list is checked as a one-process run checks it (names that clash, suites),
    # before it is cut into jobs of one task each.
    select_tasks(args.tasks, registry)
    tasks = job_tasks(args.tasks, registry)
    require_same({"models": specs, "tasks": tasks, "data_root": args.data_root,
                  "output": args.output, "cache_dir": args.cache_dir}, world)
    jobs = [(spec, task) for spec in specs for task in tasks]
    alone = World(device=world.device)
    quiet = Console(stderr=True, quiet=True)
    mine = []
    for spec, task in jobs[world.rank::world.size]:
        if world.is_main:
            console.print(f"[bold]{escape(spec)}[/] on {escape(task)} (rank 0 of "
                          f"{world.size}; {len(jobs)} jobs in all)")
        outcomes = run(config(spec, [task], str(world.device)), registry,
                       console if world.is_main else quiet,
                       show_progress=world.is_main and not args.no_progress, world=alone)
        mine.append((spec, outcomes))
    every = gather_objects(mine, world, "collect the jobs' outcomes")
    if world.is_main:
        by_model: dict[str, list] = {spec: [] for spec in specs}
        for part in every:
            for spec, outcomes in part:
                by_model[spec] += outcomes
        for spec, outcomes in by_model.items():
            print_outcomes(outcomes, spec, Console())


COMMAND = Command("run", "evaluate a model on tasks", run=run_command,
                  add_arguments=add_arguments, flags=("plugin", "protocol"),
                  description="Evaluate one model on tasks and suites; results go to --output, "
                              "one JSON per (model, task, variant).")
