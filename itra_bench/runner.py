"""``itra-bench run``: build the model, resolve tasks, run each, store the results."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import re
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.markup import escape

from itra_bench.atomic_io import writing_into
from itra_bench.bootstrap import RESAMPLES, Interval
from itra_bench.context import RunContext, check_precision, default_workers, resolve_device
from itra_bench.distributed import (
    RankFailedError,
    World,
    broadcast_from_main,
    require_same,
)
from itra_bench.errors import MissingDataError, PluginBugError, UnknownNameError, UserError
from itra_bench.feature_cache import FeatureCache, FeatureMemory
from itra_bench.fingerprint import recording_digests
from itra_bench.lazy_model import LazyModel
from itra_bench.model import EncoderModel, ModelOptions
from itra_bench.model_memo import ModelMemo, memo_key, watched_paths
from itra_bench.paths import expand_path
from itra_bench.progress import ProgressReporter
from itra_bench.registry import PluginInfo, Registry
from itra_bench.results import (
    NAME_RULE,
    InvalidResultError,
    ResultStore,
    is_safe_name,
    result_folder,
)
from itra_bench.sample_outcomes import check_outcomes, interval, samples_path, write_outcomes
from itra_bench.tables import Column, render
from itra_bench.task import Task, TaskResult, variant_family


@dataclass
class RunConfig:
    """The settings of one ``itra-bench run`` (recorded in every result file)."""

    model: str
    tasks: list[str]
    device: str = "auto"
    precision: str = "fp32"
    batch_size: int = 64
    workers: int = field(default_factory=default_workers)
    seed: int = 0
    data_root: str = "."
    output: str = "itra-results"
    cache_dir: str | None = "~/.cache/itra_bench/features"
    overwrite: bool = False
    skip_corrupt: bool = False
    pretrained: str | None = None
    random_init: bool = False
    pooler: str | None = None
    weights_cache: str | None = None
    skip_missing: bool = False
    task_options: dict[str, Any] = field(default_factory=dict)
    cache_chunk_rows: int | None = None
    #: Bootstrap resamples of each main score's 95 % interval.
    resamples: int = RESAMPLES


@dataclass
class Outcome:
    """What happened to one task in a run."""

    task: str
    variant: str
    status: str  # "done", "skipped (exists)", "skipped (<reason>)"
    main_score: str = ""
    value: float | None = None
    seconds: float = 0.0
    path: str = ""
    #: The main score's 95 % bootstrap interval, when the task records per-sample outcomes.
    low: float | None = None
    high: float | None = None


def parse_model_spec(spec: str, registry: Registry) -> tuple[str, str]:
    """Split a model spec into (scheme, rest): ``scheme:rest``, a bare ``scheme``, or a
    checkpoint file handled by the ``checkpoint`` scheme when a plugin provides it."""
    scheme, sep, rest = spec.partition(":")
    if sep and scheme in registry.models:
        return scheme, rest
    if not sep and spec in registry.models:
        return spec, ""
    if Path(expand_path(spec)).is_file() and "checkpoint" in registry.models:
        return "checkpoint", spec
    raise UnknownNameError(
        "model", scheme if sep else spec, registry.models,
        hint="A model spec is SCHEME:NAME (e.g. openclip:ViT-B-32@/path/weights.pt) or a "
             "bare scheme such as `demo`.")


def check_pretrained(config: RunConfig, registry: Registry) -> None:
    """Refuse ``--pretrained`` naming no file, or given for a model whose builder does not
    load it (its weights would be ignored without a word)."""
    if not config.pretrained:
        return
    path = Path(expand_path(config.pretrained))
    if not path.is_file():
        raise UserError(f"--pretrained {path}: no such file; give the path of a local weights "
                        "file")
    scheme, _ = parse_model_spec(config.model, registry)
    provided = registry.models[scheme]
    if not getattr(provided.item, "takes_pretrained", False):
        takers = sorted(name for name, p in registry.models.items()
                        if getattr(p.item, "takes_pretrained", False))
        raise UserError(f"--pretrained {path}: model scheme {scheme!r} "
                        f"({provided.plugin.describe()}) does not load a weights file, so it "
                        "would be ignored. Drop --pretrained, or use a scheme that loads one: "
                        f"{', '.join(takers) or 'none is installed'}.")


def effective_fingerprint(model: EncoderModel, provider: PluginInfo | None,
                          pooler: str | None) -> str:
    """The id that keys a model's cached features and result folder: the builder's own
    fingerprint (weights and config) plus what else changes the features: the providing
    plugin, its distribution and version, and the pooler option. (The image transform and
    the precision key each cache entry separately.)"""
    parts = {"model": model.fingerprint, "pooler": pooler,
             "provider": provider.as_record() if provider else None}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def require_fingerprint(model: EncoderModel, spec: str, provider: PluginInfo | None) -> None:
    """Refuse a model whose builder left ``fingerprint`` empty (it would share cached
    features with any other such model)."""
    if not isinstance(model, EncoderModel):
        who = provider.describe() if provider else "the caller"
        raise PluginBugError(f"{who} built {spec!r} as a {type(model).__name__}, not an "
                             "itra_bench.model.EncoderModel")
    if not model.fingerprint:
        who = provider.describe() if provider else "the caller"
        raise UserError(
            f"model {spec!r} has no fingerprint: {who} must set `fingerprint` on the model it "
            "builds to a stable id of everything that changes its features (weights, config, "
            "version), e.g. itra_bench.fingerprint.fingerprint(config, [weights_file]). "
            "Without it two different models would share cached features.")


def build_model(config: RunConfig, registry: Registry, memo: ModelMemo | None = None,
                console: Console | None = None) -> EncoderModel:
    """Build the model named by ``config.model`` on the CPU, with its effective fingerprint
    and its provider (``model.provider``).

    With a ``memo``, a builder that declares itself ``lazy`` is remembered: when the files
    that decided an earlier build are unchanged, a :class:`LazyModel` stands in for the model
    and the build happens only if a feature is missing from the cache."""
    scheme, rest = parse_model_spec(config.model, registry)
    options = ModelOptions(pretrained=config.pretrained, random_init=config.random_init,
                           pooler=config.pooler, cache_dir=config.weights_cache,
                           seed=config.seed)
    provided = registry.models[scheme]

    def build() -> tuple[EncoderModel, set[str]]:
        with recording_digests() as digested:
            model = registry.build_model(scheme, rest, options)
        require_fingerprint(model, config.model, provided.plugin)
        model.name = config.model
        model.fingerprint = effective_fingerprint(model, provided.plugin, config.pooler)
        model.provider = provided.plugin
        return model, digested

    watched = None
    if memo is not None and getattr(provided.item, "lazy", False):
        key = memo_key(config.model, options, provided.plugin.as_record(), provided.item.build)
        watched = watched_paths(config.model, options, provided.item.build)
    if watched is None:
        return build()[0]

    def build_and_remember() -> EncoderModel:
        model, digested = build()
        memo.remember(key, model, watched, digested)
        return model

    known = memo.recall(key, watched, {name: info.as_record()
                                       for name, info in registry.plugins.items()})
    if known is None:
        return build_and_remember()

    def announce() -> None:
        if console is not None:
            console.print(f"building {escape(config.model)} (a feature is not in the cache)")

    model = LazyModel(known, build_and_remember, on_build=announce)
    model.provider = provided.plugin
    return model


@dataclass
class TaskSelection:
    """The tasks a ``--tasks`` list names, and the members of each suite they belong to as
    its declaration fixes them (an installed plugin's, or a suite file's in the list)."""

    tasks: list[Task]
    #: Suite -> its member task names, for every declared suite of a selected task.
    suites: dict[str, list[str]]
    #: Suites that selected task files name but nothing declares (no average is taken).
    undeclared: dict[str, list[str]] = field(default_factory=dict)

    def suites_of(self, task: Task) -> list[str]:
        """The suites ``task`` belongs to: those it names, and declared ones listing it."""
        return [*task.suites, *(s for s, members in self.suites.items()
                                if task.name in members and s not in task.suites)]


def resolve_tasks(names: list[str], registry: Registry) -> list[Task]:
    """Expand task names, suite names and YAML task files into tasks (first mention wins)."""
    return select_tasks(names, registry).tasks


def select_tasks(names: list[str], registry: Registry) -> TaskSelection:
    """Expand task names, suite names, task files and suite files into tasks (first mention
    wins), with the declared members of their suites. A task may not name a suite that is
    declared elsewhere without it: its average would then depend on what was run."""
    from itra_bench.yaml_tasks import SuiteFile, load_task_file, load_task_or_suite

    out: dict[str, Task] = {}
    #: task name -> the file that declared it (for messages)
    files: dict[str, str] = {}
    declared = {s: list(members) for s, members in registry.suites.items()}
    declared_by = {s: f"plugin {info.name!r}" for s, info in registry.suite_providers.items()}

    def add(task: Task, source: str | None = None) -> Task:
        if source is not None:
            files.setdefault(task.name, source)
        return out.setdefault(task.name, task)

    protocols = {p: f.item for p, f in registry.task_file_protocols.items()}

    def task_file(path: str | Path, task: Task | None = None) -> Task:
        """Add the task of the task file ``path`` (``task``, when it is read already)."""
        task = task or load_task_file(path, protocols)
        if task.name in registry.tasks:
            raise UserError(f"{path}: task name {task.name!r} is already provided by "
                            f"plugin {registry.tasks[task.name].plugin.name!r}; "
                            "choose another `name`.")
        return add(task, str(path))

    def suite_file(path: str, suite: SuiteFile) -> None:
        """Declare the suite of the suite file ``path`` and add its members."""
        if suite.name in declared or suite.name in registry.tasks:
            raise UserError(f"{path}: suite {suite.name!r} is already declared by "
                            f"{declared_by.get(suite.name, 'another suite file')}"
                            "; choose another `suite` name.")
        declared[suite.name] = [
            (task_file(m) if isinstance(m, Path) else
             installed(m, f"listed in the suite file {path}")).name
            for m in suite.members]
        declared_by[suite.name] = f"the suite file {path}"

    def installed(name: str, where: str) -> Task:
        if name not in registry.tasks and name not in registry.aliases:
            raise UnknownNameError("task", name, registry.tasks, hint=f"({where})",
                                   also={"alias": registry.aliases})
        return add(registry.tasks[registry.aliases.get(name, name)].item)

    for raw in names:
        for name in (n.strip() for n in raw.split(",")):
            if not name:
                continue
            prefix, colon, rest = name.partition(":")
            if colon and prefix in registry.task_prefixes:
                # A task named directly by a plugin's prefix (`wds:PATH`, a clip-benchmark
                # webdataset folder), with no task file.
                task = registry.task_prefixes[prefix].item(rest)
                task.task_file_protocol = prefix
                add(task)
            elif name.endswith((".yaml", ".yml")):
                entry = load_task_or_suite(name, protocols)
                if isinstance(entry, SuiteFile):
                    suite_file(name, entry)
                else:
                    task_file(name, entry)
            elif name in registry.tasks or name in registry.aliases:
                installed(name, "--tasks")
            elif name in registry.suites:
                for member in registry.suites[name]:
                    if member not in registry.tasks:
                        raise UserError(f"suite {name!r} names task {member!r}, which no "
                                        "installed plugin provides")
                    add(registry.tasks[member].item)
            else:
                raise UnknownNameError("task", name, registry.tasks,
                                       also={"suite": registry.suites,
                                             "alias": registry.aliases},
                                       hint="Suites are accepted too (`itra-bench list "
                                            "suites`), and so are a path to a task .yaml file "
                                            + "".join(f" and {p}:..." for p in
                                                      sorted(registry.task_prefixes))
                                            + ".")
    if not out:
        raise UserError("--tasks is empty: name at least one task, suite or task .yaml file")
    tasks = list(out.values())
    _refuse_shared_folders(tasks)
    undeclared: dict[str, list[str]] = {}
    for task in tasks:
        for suite in task.suites:
            if suite not in declared:
                undeclared.setdefault(suite, []).append(task.name)
            elif task.name not in declared[suite]:
                raise UserError(
                    f"{files.get(task.name, f'task {task.name!r}')}: the task names suite "
                    f"{suite!r}, which {declared_by[suite]} declares without it; a suite's "
                    "members are fixed where it is declared. Remove it from `suites`, or "
                    "list your tasks in a suite file of your own (`suite: NAME`, `tasks: "
                    "[...]`) and pass that.")
    suites = {s: declared[s] for task in tasks for s in declared
              if task.name in declared[s] or s in task.suites}
    return TaskSelection(tasks, suites, undeclared)


def _refuse_shared_folders(tasks: list[Task]) -> None:
    """Refuse two tasks whose results would share a folder, where one would overwrite the
    other: names that differ only in case do on file systems that ignore case (macOS,
    Windows), and so do a ``wds:`` folder's task and a task named alike."""
    seen: dict[str, str] = {}
    for task in tasks:
        other = seen.setdefault(result_folder(task.name).lower(), task.name)
        if other != task.name:
            a, b = result_folder(other), result_folder(task.name)
            why = (f"both are stored in the folder {a!r}" if a == b else
                   "names that differ only in case are one folder on file systems that "
                   "ignore case, as on macOS and Windows")
            raise UserError(f"tasks {other!r} and {task.name!r} would overwrite each other's "
                            f"results ({why}): rename one of them")


def check_variants(tasks: list[Task], options: Mapping[str, Any], registry: Registry) -> None:
    """Refuse, as the bug of the task's plugin, a variant name that cannot name a result file
    and two variants of one task that would share one (names equal up to case)."""
    for task in tasks:
        seen: dict[str, str] = {}
        for variant in task.variants(options):
            name = variant.name
            if not is_safe_name(name):
                problem = (f"a variant named {name!r}, which cannot name a result file: "
                           f"variant names use {NAME_RULE}")
            elif name.lower() in seen:
                other = seen[name.lower()]
                problem = (f"the variant {name!r} twice" if other == name else
                           f"variants {other!r} and {name!r}, one result file where case is "
                           "ignored (macOS, Windows)")
            else:
                seen[name.lower()] = name
                continue
            raise PluginBugError(f"plugin bug: task {task.name!r} of "
                                 f"{task_provider(task, registry).describe()} lists {problem}. "
                                 "Report it to the plugin's authors.")


def missing_data(tasks: list[Task], data_root: Path, options: Mapping[str, Any]
                 ) -> dict[str, list[Path]]:
    """For each task whose files are not all there, the paths that are missing."""
    out = {}
    for task in tasks:
        missing = [p for p in task.required_paths(data_root, options) if not p.exists()]
        if missing:
            out[task.name] = missing
    return out


def check_data(tasks: list[Task], data_root: Path, options: Mapping[str, Any]) -> None:
    """Fail before any encoding when a task's files are missing, listing all of them."""
    missing = missing_data(tasks, data_root, options)
    if missing:
        by_name = {t.name: t for t in tasks}
        problems = [f"task {name!r}: missing " + ", ".join(map(str, paths))
                    + f"\n    expected layout: {by_name[name].layout}"
                    for name, paths in missing.items()]
        raise MissingDataError(
            f"data not found under --data-root {data_root}:\n  " + "\n  ".join(problems)
            + "\n  (--skip-missing runs the tasks whose data is present)")


def check_files(tasks: list[Task], data_root: Path, options: Mapping[str, Any]) -> None:
    """Fail before any encoding when files disagree with what their task knows."""
    problems = [f"task {t.name!r}: {line}" for t in tasks
                for line in t.check_files(data_root, options)]
    if problems:
        raise UserError("data does not match its description:\n  " + "\n  ".join(problems))


def probe_writable(folder: Path, flag: str) -> None:
    """Fail before any compute when ``folder`` cannot be created or written to."""
    with writing_into(folder, flag):
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".itra-probe-"):
            pass


def task_provider(task: Task, registry: Registry) -> PluginInfo:
    """The plugin that provided ``task``: its registering plugin, or for a task file the
    plugin of its protocol (itra-bench itself for the built-in protocols)."""
    provided = registry.tasks.get(task.name)
    if provided is not None and provided.item is task:
        return provided.plugin
    protocol = registry.task_file_protocols.get(task.task_file_protocol)
    if protocol is not None:
        return protocol.plugin
    from itra_bench import __version__

    return PluginInfo("task file", "itra-bench", "itra_bench.yaml_tasks", __version__)


def task_definition(task: Task) -> str:
    """An id of what a task computes beyond its data (its fields: templates, class names, k,
    splits, card, ...), so that a rerun after editing a task file recomputes."""
    if not dataclasses.is_dataclass(task):
        return ""  # a plain class's settings live in its code
    text = json.dumps(_canonical(task), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _canonical(value: Any) -> Any:
    """``value`` as JSON that is the same in every process (sets sorted, no addresses)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"class": type(value).__qualname__,
                **{f.name: _canonical(getattr(value, f.name)) for f in dataclasses.fields(value)}}
    if isinstance(value, set | frozenset):
        return sorted((_canonical(v) for v in value), key=repr)
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))


def _read_existing(store: ResultStore, path: Path, console: Console) -> dict[str, Any] | None:
    """The stored result at ``path``; an unreadable one is renamed to ``*.corrupt`` (kept for
    inspection) and None returned, so it is recomputed."""
    try:
        return store.read(path)
    except InvalidResultError as exc:
        kept = path.with_name(path.name + ".corrupt")
        path.replace(kept)
        console.print(f"[yellow]{escape(str(exc))}; kept as {escape(kept.name)}, recomputing[/]")
        return None


def _call_task(task: Task, model: EncoderModel, ctx: RunContext,
               provider: PluginInfo) -> TaskResult:
    """``task.run``; exceptions other than UserError are the data's fault when a shared
    itra-bench check raised ValueError on its inputs, and a plugin bug otherwise."""
    try:
        result = task.run(model, ctx)
    except UserError as exc:
        if task.name in str(exc) or isinstance(exc, RankFailedError):
            raise
        named = UserError(f"task {task.name!r}: {exc}")
        named.exit_code = exc.exit_code
        raise named from exc
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:
        if isinstance(exc, ValueError) and _raised_in_itra_bench(exc):
            # Shared protocols reject unusable inputs (k larger than the training set, an
            # image with no caption, ...) with ValueError: that is the data's fault.
            raise UserError(f"task {task.name!r}: {exc}") from exc
        raise PluginBugError(
            f"plugin bug: task {task.name!r} of {provider.describe()} raised "
            f"{type(exc).__name__}: {exc}. Report it to the plugin's authors (rerun with "
            "--debug for the traceback).") from exc
    if not isinstance(result, TaskResult):
        raise PluginBugError(
            f"plugin bug: task {task.name!r} of {provider.describe()} returned a "
            f"{type(result).__name__}, not an itra_bench.task.TaskResult. Report it to the "
            "plugin's authors.")
    return result


def _raised_in_itra_bench(exc: BaseException) -> bool:
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_globals.get("__name__", "").startswith("itra_bench.")


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (every device's) random generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run(config: RunConfig, registry: Registry, console: Console | None = None,
        show_progress: bool = True, model: EncoderModel | None = None,
        world: World | None = None) -> list[Outcome]:
    """Evaluate one model on the configured tasks; returns what happened to each.

    ``model`` evaluates an already built model (the trainer's current weights) instead of
    building ``config.model``; its ``name`` and ``fingerprint`` must then be set.

    Under a distributed job (``world``), every rank runs every task and encodes its share of
    each image split; rank 0 alone reads and writes the feature cache, results and the
    tasks' files, and decides what exists already. Every rank returns the same outcomes.
    """
    world = world or World()
    console = console or Console(stderr=True)
    if not world.is_main:
        console = Console(stderr=True, quiet=True)
        show_progress = False
    require_same({k: v for k, v in asdict(config).items() if k != "device"}, world)
    selection = select_tasks(config.tasks, registry)
    tasks = selection.tasks
    check_variants(tasks, config.task_options, registry)
    if model is None:
        check_pretrained(config, registry)
    for suite, members in selection.undeclared.items():
        console.print(f"[yellow]note[/]: no installed plugin and no suite file in --tasks "
                      f"declares the suite {escape(suite)!r} that {escape(', '.join(members))} "
                      "name(s), so it gets no average; list its tasks in a suite file "
                      "(`suite: NAME`, `tasks: [...]`) and pass that to average them")
    data_root = Path(expand_path(config.data_root))
    device = world.device if world.size > 1 else resolve_device(config.device)
    check_precision(config.precision, device)
    output = Path(expand_path(config.output))
    cache = None
    if world.is_main:
        probe_writable(output, "--output")
        # What a killed run's writes left half-way; another live run's are kept.
        ResultStore(output).remove_stale_temp_files()
        if config.cache_dir:
            cache = FeatureCache(config.cache_dir, chunk_rows=config.cache_chunk_rows)
            probe_writable(cache.root, "--cache-dir")
            cache.remove_stale_temp_files()
    # Other ranks' tasks write their files (prediction files, run files) where nobody reads.
    scratch = None if world.is_main else Path(tempfile.mkdtemp(prefix="itra-rank-"))
    try:
        return _run_tasks(config, registry, console, show_progress, model, world, selection,
                          data_root, device, output, cache, scratch)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _run_tasks(config: RunConfig, registry: Registry, console: Console, show_progress: bool,
               model: EncoderModel | None, world: World, selection: TaskSelection,
               data_root: Path, device: torch.device, output: Path,
               cache: FeatureCache | None, scratch: Path | None) -> list[Outcome]:
    """The body of :func:`run`, once its folders and the job are settled."""
    seed_everything(config.seed)
    tasks = selection.tasks
    if model is None:
        # Other ranks have no cache, and so no memo: they build (only a one-process run, or
        # rank 0, may find all its features cached).
        memo = ModelMemo(cache.root / "models") if cache is not None and world.size == 1 \
            else None
        model = build_model(config, registry, memo, console)
    else:
        require_fingerprint(model, model.name, getattr(model, "provider", None))
    runnable, outcomes = [], []
    for task in tasks:
        lacking = sorted(task.required_modalities(config.task_options) - model.modalities)
        if lacking:
            outcomes.append(Outcome(task.name, "", f"skipped: {config.model} has no "
                                    f"{' or '.join(lacking)} encoder"))
            console.print(f"[yellow]skip[/] {task.name}: model has no {'/'.join(lacking)} "
                          "encoder")
        else:
            runnable.append(task)
    if not runnable:
        raise UserError(f"none of the requested tasks can run on {config.model} (modalities "
                        f"{sorted(model.modalities)}): every one needs a missing encoder")
    if config.skip_missing:
        missing = missing_data(runnable, data_root, config.task_options)
        for name in missing:
            console.print(f"[yellow]skip[/] {name}: data missing ({missing[name][0]} ...)")
            outcomes.append(Outcome(name, "", "skipped: data missing"))
        runnable = [t for t in runnable if t.name not in missing]
        if not runnable:
            raise MissingDataError(f"no requested task has its data under {data_root}; "
                                   "`itra-bench check-data` lists what is looked for")
    else:
        check_data(runnable, data_root, config.task_options)
    check_files(runnable, data_root, config.task_options)

    model = model.to(device).eval()
    store = ResultStore(output)
    progress = ProgressReporter(console, enabled=show_progress)
    # The run's tasks share features in memory, with or without the disk cache; they go
    # with this call.
    memory = FeatureMemory()
    model_provider = getattr(model, "provider", None)
    jobs = [(task, v) for task in runnable for v in task.variants(config.task_options)]
    for task, v in jobs:
        variant = v.name
        path = store.path(model.name, model.fingerprint, task.name, variant)
        options = {**config.task_options, **v.options}
        ctx = RunContext(device=device, precision=config.precision,
                         batch_size=config.batch_size, workers=config.workers,
                         seed=config.seed, data_root=data_root,
                         output_dir=path.parent if scratch is None else scratch,
                         cache=cache, memory=memory, skip_corrupt=config.skip_corrupt,
                         options=options, progress=progress, console=console, world=world)
        data_identity = task.data_identity(data_root, options)
        definition = task_definition(task)
        existing = None
        if world.is_main and path.exists() and not config.overwrite:
            record = _read_existing(store, path, console)
            stored = record.get("data", {}) if record is not None else {}
            if record is None:
                pass
            elif (record["task"], record["variant"]) != (task.name, variant):
                raise UserError(
                    f"{path} holds the result of task {record['task']!r} ({record['variant']}), "
                    f"not of {task.name!r} ({variant}): their names lead to one file (names "
                    "that differ only in case do where the file system ignores case). Rename "
                    "one of the tasks, or write to another --output.")
            elif stored.get("identity") != data_identity:
                console.print(f"[yellow]{task.name} ({variant}): the data changed since "
                              f"{escape(str(path))} was computed; recomputing[/]")
            elif stored.get("task_definition", "") != definition:
                console.print(f"[yellow]{task.name} ({variant}): the task's definition "
                              f"changed since {escape(str(path))} was computed; recomputing[/]")
            else:
                low, high = _interval_of(record)
                existing = Outcome(task.name, variant, "exists", record["main_score"],
                                   record["main_score_value"], 0.0, str(path), low, high)
        existing = broadcast_from_main(existing, world,
                                       f"check for a stored {task.name} ({variant}) result")
        if existing is not None:
            outcomes.append(existing)
            continue
        seed_everything(config.seed)
        console.print(f"[bold cyan]{task.name}[/] ({variant})")
        started = datetime.now(timezone.utc)
        t0 = time.perf_counter()
        provider = task_provider(task, registry)
        result = _call_task(task, model, ctx, provider)
        seconds = time.perf_counter() - t0
        skipped = result.details.get("skipped_corrupt") or []
        ci = _main_score_interval(task, result, provider, config)
        record = {
            "model": {"name": model.name, "fingerprint": model.fingerprint,
                      "modalities": sorted(model.modalities)},
            "task": task.name, "variant": variant, "variant_options": v.options,
            "variant_family": variant_family(variant, task.protocol, v.family),
            "protocol": task.protocol,
            "suites": selection.suites_of(task),
            # Every member of each suite as declared, so that an average is never taken over
            # a part (a suite nothing declares has none: it gets no average).
            "suite_members": {s: sorted(selection.suites[s])
                              for s in selection.suites_of(task) if s in selection.suites},
            "main_score": result.main_score,
            "main_score_value": result.metrics[result.main_score],
            "main_score_interval": None if ci is None else {**ci.as_record(),
                                                            "seed": config.seed},
            "metrics": result.metrics, "num_samples": result.num_samples,
            "data": {"identity": data_identity, "task_definition": definition,
                     "complete": not skipped, "skipped": len(skipped)},
            "details": result.details,
            "providers": {"model": model_provider.as_record() if model_provider else None,
                          "task": provider.as_record(),
                          **({"towers": dict(model.tower_providers)}
                             if model.tower_providers else {}),
                          **getattr(model, "provenance", {})},
            "config": {**asdict(config), "device": str(device)},
            # how many processes computed it (a sharded run's numbers equal one process's)
            "processes": world.size,
            "started_at": started.isoformat(), "seconds": round(seconds, 3),
        }
        if world.is_main:
            try:
                # The outcomes first: a result JSON never names a samples file not yet there.
                record["samples"] = None if result.samples is None else \
                    write_outcomes(samples_path(path), result.samples)
                store.write(path, record)
            except OSError as exc:
                raise UserError(f"cannot write the result {path} ({exc.strerror or exc}); "
                                "results written before it are kept. Free space or choose "
                                "another --output.") from exc
            registry.pm.hook.itra_bench_result_written(task=task, model_name=model.name,
                                                       result=result, path=str(path),
                                                       record=record)
        if skipped:
            console.print(f"[yellow]{task.name}: skipped {len(skipped)} corrupt image(s), "
                          f"listed in {path}; the result is marked incomplete[/]")
        outcomes.append(Outcome(task.name, variant, "done", result.main_score,
                                result.metrics[result.main_score], seconds, str(path),
                                *((ci.low, ci.high) if ci is not None else (None, None))))
    return outcomes


def _main_score_interval(task: Task, result: TaskResult, provider: PluginInfo,
                         config: RunConfig) -> Interval | None:
    """The main score's bootstrap interval from the task's per-sample outcomes (None without
    them); outcomes that do not recompute the reported main score are a plugin bug."""
    if result.samples is None:
        return None
    from itra_bench.sample_outcomes import SampleOutcomes

    if not isinstance(result.samples, SampleOutcomes):
        raise PluginBugError(f"plugin bug: task {task.name!r} of {provider.describe()} gave "
                             f"`samples` as a {type(result.samples).__name__}, not an "
                             "itra_bench.sample_outcomes.SampleOutcomes")
    try:
        check_outcomes(result.samples, result.metrics, result.main_score)
    except ValueError as exc:
        raise PluginBugError(f"plugin bug: task {task.name!r} of {provider.describe()}: {exc}. "
                             "Report it to the plugin's authors.") from exc
    if config.resamples < 1:
        return None  # --resamples 0: outcomes kept (checked), no interval
    return interval(result.samples, result.main_score, resamples=config.resamples,
                    seed=config.seed)


def _interval_of(record: Mapping[str, Any]) -> tuple[float | None, float | None]:
    ci = record.get("main_score_interval")
    return (ci["low"], ci["high"]) if isinstance(ci, Mapping) else (None, None)


def print_outcomes(outcomes: list[Outcome], model: str, console: Console,
                   fmt: str = "table") -> None:
    """The summary of a run: each task's main score x 100 with its 95 % interval."""
    render(outcome_rows(outcomes), outcome_columns(), fmt, console,
           title=f"itra-bench run: {model}")


def outcome_columns() -> list[Column]:
    """Columns of :func:`outcome_rows` for :func:`itra_bench.tables.render`."""
    return [Column("task", whole=True), Column("variant", whole=True),
            Column("main score", whole=True), Column("value", align="right", whole=True),
            Column("95% CI", align="right", whole=True),
            Column("seconds", align="right", whole=True), Column("status")]


def outcome_rows(outcomes: list[Outcome]) -> list[dict[str, Any]]:
    """One row per task of a run: main score x 100, its interval, time and status."""
    return [{"task": o.task, "variant": o.variant, "main score": o.main_score,
             "value": None if o.value is None else f"{100 * o.value:.2f}",
             "95% CI": "" if o.low is None else f"[{100 * o.low:.2f}, {100 * o.high:.2f}]",
             "seconds": f"{o.seconds:.1f}" if o.status == "done" else "",
             "status": o.status} for o in outcomes]
