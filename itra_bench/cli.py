"""The ``itra-bench`` command line."""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape

from itra_bench import __version__
from itra_bench.atomic_io import writing_into
from itra_bench.cli_types import (
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    seed_int,
)
from itra_bench.commands import Command
from itra_bench.context import DEFAULT_TIMEOUT, PRECISIONS, default_workers, precision_name
from itra_bench.errors import LIST_KINDS, PluginClashError, UserError
from itra_bench.paths import expand_path
from itra_bench.registry import ENV_VAR, Registry, load_registry
from itra_bench.tables import Column, Value, add_format_argument, render

# torch, and the modules that import it, load only in the commands that compute: `--help`,
# `list` and `results` stay quick.
if TYPE_CHECKING:
    from itra_bench.distributed import World
    from itra_bench.runner import RunConfig


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


def _task_option(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


MODES = ("zeroshot", "linear_probe", "finetune")


def precision_arg(text: str) -> str:
    """``--precision`` as argparse reads it: today's name, old spellings accepted."""
    try:
        return precision_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _list_kind(text: str) -> str:
    if text in LIST_KINDS:
        return text
    close = difflib.get_close_matches(text, LIST_KINDS, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise argparse.ArgumentTypeError(f"unknown kind {text!r}.{hint} Choose one of "
                                     f"{', '.join(LIST_KINDS)}.")


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") \
            from exc
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def task_options(args: argparse.Namespace) -> dict[str, object]:
    """The task options of a ``run`` command line (what ``ctx.options`` holds)."""
    if args.no_tuning and (args.lr is None or args.l2 is None):
        raise UserError("--no-tuning needs both --lr and --l2")
    if any(s == 0 or s < -1 for s in args.shots):
        raise UserError(f"--shots takes positive counts or -1 (full set), got {args.shots}")
    for seed in args.seeds:
        if (problem := seed_int.problem(seed)) is not None:
            raise UserError(f"--seeds: each seed {problem}")
    options: dict[str, object] = {"mode": args.mode, "shots": args.shots, "seeds": args.seeds,
                                  "tuning": not args.no_tuning, "knowledge": args.knowledge}
    if args.no_tuning:
        options.update(lr=args.lr, l2=args.l2)
    if args.max_passages is not None:
        options["max_passages"] = args.max_passages
    options.update(dict(args.task_option))
    return options


def _protocol_flags() -> argparse.ArgumentParser:
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
    elevater.add_argument("--knowledge", choices=("none", "wordnet"), default="none",
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


def build_parser(commands: Mapping[str, Command] | None = None) -> argparse.ArgumentParser:
    """The argument parser of the built-in subcommands and those plugins add."""
    commands = commands or {}
    common = _plugin_flags()
    protocol = _protocol_flags()
    parser = argparse.ArgumentParser(
        prog="itra-bench", description="Evaluate image-text representation models.")
    parser.add_argument("--version", action="version", version=f"itra-bench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", parents=[common, protocol], help="evaluate a model on tasks",
                         description="Evaluate one model on tasks and suites; results go to "
                                     "--output, one JSON per (model, task, variant).")
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
    run.add_argument("--text-pooler", "--pooler", dest="pooler", choices=("cls", "mean"),
                     help="token pooling of transformer text encoders (--pooler: old "
                          "spelling, accepted)")
    run.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default auto)")
    run.add_argument("--precision", default="fp32", type=precision_arg,
                     metavar="{" + ",".join(PRECISIONS) + "}",
                     help="autocast of the forward passes (amp: old name of amp_fp16)")
    run.add_argument("--batch-size", type=positive_int, default=64)
    run.add_argument("--workers", type=non_negative_int, default=default_workers(),
                     help="DataLoader worker processes (default: CPU cores - 1, at most 8; "
                          "here %(default)s)")
    run.add_argument("--seed", type=seed_int, default=0,
                     help="seeds the run and the bootstrap resampling (default 0)")
    run.add_argument("--resamples", type=non_negative_int, default=1000, metavar="N",
                     help="bootstrap resamples of each main score's 95%% interval (default "
                          "%(default)s; 0: no intervals)")
    run.add_argument("--data-root", default=".", type=expand_path,
                     help="folder that dataset paths are under")
    run.add_argument("--output", default="itra-results", type=expand_path, help="results folder")
    run.add_argument("--cache-dir", default="~/.cache/itra_bench/features", type=expand_path,
                     help="feature cache folder")
    run.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    run.add_argument("--cache-chunk-rows", type=positive_int, metavar="N",
                     help="images per resumable chunk of the feature cache (default 8192)")
    run.add_argument("--dist-timeout", type=positive_float, default=DEFAULT_TIMEOUT,
                     metavar="SECONDS",
                     help="under torchrun or srun: how long a rank waits for the others before "
                          "the job ends (default %(default)s)")
    run.add_argument("--distribute", choices=("shards", "jobs"), default="shards",
                     help="under torchrun or srun: shards = every rank encodes a part of each "
                          "task's data (default); jobs = each rank runs whole (model, task) "
                          "jobs on its own, better for many small tasks (needs --output and "
                          "--cache-dir on a file system every rank sees)")
    run.add_argument("--overwrite", action="store_true",
                     help="recompute results that already exist")
    run.add_argument("--skip-corrupt", action="store_true",
                     help="skip and count undecodable images instead of stopping")
    run.add_argument("--skip-missing", action="store_true",
                     help="run the tasks whose data is present, skipping the others")

    run.add_argument("--no-progress", action="store_true", help="hide progress bars")

    check = sub.add_parser("check-data", parents=[common, protocol],
                           help="show which tasks have their data, and the files looked for")
    check.add_argument("--tasks", required=True, nargs="+", metavar="TASK")
    check.add_argument("--data-root", default=".", type=expand_path,
                       help="folder that dataset paths are under")
    add_format_argument(check)

    lst = sub.add_parser("list", parents=[common], help="show installed models, tasks, ...")
    lst.add_argument("kind", type=_list_kind, metavar="{" + ",".join(LIST_KINDS) + "}")
    add_format_argument(lst)

    res = sub.add_parser("results", parents=[common],
                         help="collate a results folder into a leaderboard")
    res.add_argument("folder", type=expand_path, help="results folder written by `itra-bench run`")
    res.add_argument("--out", type=expand_path,
                     help="where to write leaderboard.csv/.md (default: FOLDER)")
    add_format_argument(res)

    cmp = sub.add_parser("compare", parents=[common],
                         help="is model B better than model A? paired tests per task",
                         description="Compare two models' results task by task: both main "
                                     "scores, B - A with its paired bootstrap interval, a "
                                     "paired p-value and a marker (*) where the "
                                     "difference survives Holm's correction across the tasks; "
                                     "per suite the mean difference with its interval.")
    cmp.add_argument("folder", type=expand_path, help="results folder written by `itra-bench run`")
    cmp.add_argument("--models", nargs=2, required=True, metavar=("A", "B"),
                     help="the two models, as `itra-bench results` names them (a unique file "
                          "name such as epoch_2.pt or a fingerprint prefix also works)")
    cmp.add_argument("--resamples", type=positive_int, default=1000, metavar="N",
                     help="bootstrap and permutation resamples (default %(default)s)")
    cmp.add_argument("--seed", type=seed_int, default=0, help="seed of the resampling (default 0)")
    add_format_argument(cmp)

    sub_p = sub.add_parser("submit", parents=[common],
                           help="combine ELEVATER prediction files into an EvalAI zip")
    sub_p.add_argument("folder", type=expand_path,
                       help="one model's results folder (or any folder of "
                            "*.predictions.json files)")
    sub_p.add_argument("-o", "--output", default="submission.zip", type=expand_path,
                       help="zip to write")
    sub_p.add_argument("--variant", metavar="PREFIX",
                       help="only prediction files whose variant starts with PREFIX, e.g. "
                            "zeroshot or linear_probe-5shot")

    rep = sub.add_parser("report", parents=[common],
                         help="write one self-contained HTML report of a results folder",
                         description="Write one HTML file (no network needed: charts are "
                                     "embedded) with the leaderboard, per-suite bar charts "
                                     "with interval error bars, the ELEVATER summary, and for "
                                     "an itra-train run folder each task's score over epochs.")
    rep.add_argument("folder", type=expand_path,
                     help="results folder written by `itra-bench run`, or an itra-train run "
                          "folder <logs>/<name> evaluated by `itra-bench watch`")
    rep.add_argument("-o", "--output", default="report.html", type=expand_path,
                     help="HTML file to write (default %(default)s)")
    for command in commands.values():
        groups = {"plugin": common, "protocol": protocol}
        if command.main is not None:
            sub.add_parser(command.name, add_help=False, help=command.help)
            continue
        cmd = sub.add_parser(command.name, parents=[groups[g] for g in command.flags],
                             help=command.help, description=command.description or None)
        if command.add_arguments is not None:
            command.add_arguments(cmd)
    return parser


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


def _cmd_run(args: argparse.Namespace, registry: Registry, console: Console) -> int:
    from itra_bench.distributed import init_distributed
    from itra_bench.leaderboard import write_leaderboard
    from itra_bench.runner import RunConfig, print_outcomes, run

    # Numeric flags were checked by their argparse types (itra_bench.cli_types).
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
            random_init=args.random_init, pooler=args.pooler,
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
    from itra_bench.runner import print_outcomes, run, select_tasks

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


def _list_rows(kind: str, registry: Registry) -> tuple[list[Column], list[dict[str, Value]]]:
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
    return ([Column("plugin", whole=True), Column("module", whole=True),
             Column("distribution", whole=True)],
            [{"plugin": name, "module": info.module, "distribution": info.distribution}
             for name, info in sorted(registry.plugins.items())])


def _cmd_list(args: argparse.Namespace, registry: Registry, console: Console) -> int:
    columns, rows = _list_rows(args.kind, registry)
    render(rows, columns, args.format, Console(), title=f"itra-bench {args.kind}")
    return 0


def _cmd_results(args: argparse.Namespace, registry: Registry, console: Console) -> int:

    from itra_bench.leaderboard import write_leaderboard

    folder = Path(args.folder)
    if not folder.is_dir():
        raise UserError(f"results folder not found: {folder}")
    problems: list[str] = []
    out = Path(args.out or folder)
    # Written into --out, or into the results folder itself.
    flag, how = ("--out", None) if args.out else ("results folder", "Write elsewhere with --out")
    with writing_into(out, flag, how):
        board = write_leaderboard(folder, args.out, problems, registry.suites)
    _warn_left_out(problems, console)
    if not board.models:
        raise UserError(f"no itra-bench result files under {folder}")
    board.print(Console(), args.format)
    console.print(f"wrote {out / 'leaderboard.csv'} and {out / 'leaderboard.md'}")
    from itra_bench.vision_benchmark.summary import describe, write_summary

    with writing_into(out, flag, how):
        blocks = write_summary(folder, args.out)
    # Only the table format adds the ELEVATER summary: scripts read one document.
    if blocks and args.format == "table":
        for table in describe(blocks):
            Console().print(table)
        console.print(f"wrote {out / 'elevater_summary.md'} and {out / 'elevater_summary.csv'}")
    return 0


def _warn_left_out(problems: list[str], console: Console) -> None:
    """Warn of each result file a command left out (unreadable, or not a valid result)."""
    for problem in problems:
        console.print(f"[yellow]warning: unreadable result left out: {escape(problem)}[/]")


def _cmd_compare(args: argparse.Namespace, registry: Registry, console: Console) -> int:
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


def _cmd_submit(args: argparse.Namespace, registry: Registry, console: Console) -> int:

    from itra_bench.vision_benchmark.submission import find_prediction_files, write_submission

    folder = Path(args.folder)
    if not folder.is_dir():
        raise UserError(f"folder not found: {folder}")
    files = find_prediction_files(folder)
    if args.variant:
        files = [f for f in files if f.name.startswith(args.variant)]
    from itra_bench.vision_benchmark.cards import DatasetCard

    # Every ELEVATER-format dataset the plugins know (the built-in 20 and plugin cards), so
    # each prediction file is checked against its own card's counts.
    cards = [card for p in registry.tasks.values()
             if isinstance(card := getattr(p.item, "card", None), DatasetCard)]
    path, entries = write_submission(folder, args.output, files, cards=cards)
    columns = [Column("dataset", whole=True), Column("model", whole=True),
               Column("n_shot", whole=True, align="right"), Column("seeds"),
               Column("predictions", whole=True)]
    rows: list[dict[str, Value]] = [
        {"dataset": e["dataset_name"], "model": e["model_name"], "n_shot": e["n_shot"],
         "seeds": ",".join(map(str, e["rnd_seeds"])),
         "predictions": f"{len(e['predictions'])} x {len(e['predictions'][0])} x "
                        f"{len(e['predictions'][0][0])}"} for e in entries]
    render(rows, columns, "table", Console(), title=f"EvalAI submission {path}")
    console.print(f"wrote {path} ({len(entries)} datasets)")
    return 0


def _cmd_check_data(args: argparse.Namespace, registry: Registry, console: Console) -> int:

    from itra_bench.runner import resolve_tasks

    data_root = Path(args.data_root)
    options = task_options(args)
    tasks = resolve_tasks(args.tasks, registry)
    # One row per file: names and paths are never cut, the layout and problems wrap.
    columns = [Column("task", whole=True), Column("status", whole=True),
               Column("found", whole=True), Column("file", whole=True), Column("notes")]
    rows: list[dict[str, Value]] = []
    bad_tasks = 0
    for task in tasks:
        paths = task.required_paths(data_root, options)
        missing = [p for p in paths if not p.exists()]
        problems = [] if missing else task.check_files(data_root, options)
        bad_tasks += bool(missing or problems)
        status = "missing" if missing else "mismatch" if problems else "ready"
        files = [{"found": "no" if p in missing else "yes", "file": str(p)} for p in paths] \
            or [{"file": "(embedded data)"}]
        notes = [f"layout: {task.layout}", *(f"! {line}" for line in problems)]
        for n in range(max(len(files), len(notes))):
            row: dict[str, Value] = {"task": task.name, "status": status}
            row.update(files[n] if n < len(files) else {})
            row["notes"] = notes[n] if n < len(notes) else None
            rows.append(row)
    render(rows, columns, args.format, Console(),
           title=f"data under {data_root} (--mode {args.mode})")
    if bad_tasks:
        console.print(f"{bad_tasks} task(s) are not ready: files found `no` are missing, "
                      "notes marked ! disagree with what the task expects")
        return 1
    return 0


def _cmd_report(args: argparse.Namespace, registry: Registry, console: Console) -> int:
    # matplotlib loads here only: `--help` stays quick.
    from itra_bench.report import write_report

    problems: list[str] = []
    path = write_report(args.folder, args.output, problems, registry.suites)
    _warn_left_out(problems, console)
    console.print(f"wrote {escape(str(path))}")
    return 0


COMMANDS = {"run": _cmd_run, "check-data": _cmd_check_data, "list": _cmd_list,
            "results": _cmd_results, "compare": _cmd_compare, "submit": _cmd_submit,
            "report": _cmd_report}


def plugin_commands(registry: Registry) -> dict[str, Command]:
    """The subcommands plugins add; one that reuses a built-in name is refused."""
    out = {}
    for name, provided in registry.commands.items():
        if name in COMMANDS:
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
        commands = plugin_commands(registry)
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
        registry.load_all()
        handler = COMMANDS.get(args.command) or commands[args.command].run
        return handler(args, registry, console)
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


if __name__ == "__main__":
    sys.exit(main())
