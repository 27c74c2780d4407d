"""The loop of ``itra-bench run``: :func:`run` takes its settings (:class:`RunConfig`),
builds the model, selects and checks the tasks, runs each task variant not stored already,
stores its result, and returns what happened to each (:class:`~itra_bench.run_outcomes.Outcome`).

Its parts live in their own modules: :mod:`itra_bench.model_building`,
:mod:`itra_bench.task_selection`, :mod:`itra_bench.task_checks`,
:mod:`itra_bench.task_identity` and :mod:`itra_bench.run_outcomes`.
"""

from __future__ import annotations

import random
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
from itra_bench.context import RunContext, default_workers, resolve_device
from itra_bench.distributed import (
    RankFailedError,
    World,
    broadcast_from_main,
    require_same,
)
from itra_bench.errors import MissingDataError, PluginBugError, UserError
from itra_bench.feature_cache import FeatureCache, FeatureMemory
from itra_bench.model import EncoderModel
from itra_bench.model_building import build_model, check_pretrained, require_fingerprint
from itra_bench.model_memo import ModelMemo
from itra_bench.paths import DEFAULT_CACHE_DIR, expand_path
from itra_bench.precision import check_precision
from itra_bench.progress import ProgressReporter
from itra_bench.registry import PluginInfo, Registry, activated
from itra_bench.results import InvalidResultError, ResultStore
from itra_bench.run_outcomes import Outcome
from itra_bench.sample_outcomes import check_outcomes, interval, samples_path, write_outcomes
from itra_bench.task import Task, TaskResult, variant_family
from itra_bench.task_checks import check_data, check_files, check_variants, missing_data
from itra_bench.task_identity import task_definition, task_provider
from itra_bench.task_selection import TaskSelection, select_tasks


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
    cache_dir: str | None = DEFAULT_CACHE_DIR
    overwrite: bool = False
    skip_corrupt: bool = False
    pretrained: str | None = None
    random_init: bool = False
    text_pooler: str | None = None
    weights_cache: str | None = None
    skip_missing: bool = False
    task_options: dict[str, Any] = field(default_factory=dict)
    cache_chunk_rows: int | None = None
    #: Bootstrap resamples of each main score's 95 % interval.
    resamples: int = RESAMPLES


def probe_writable(folder: Path, flag: str) -> None:
    """Fail before any compute when ``folder`` cannot be created or written to."""
    with writing_into(folder, flag):
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".itra-probe-"):
            pass


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
        # The main scores' intervals take plugins' outcome statistics from this registry
        # (a caller's, such as the trainer's, as well as a command's).
        with activated(registry):
            return _run_tasks(config, registry, console, show_progress, model, world,
                              selection, data_root, device, output, cache, scratch)
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
        ctx = RunContext.from_settings(
            config, device=device, data_root=data_root,
            output_dir=path.parent if scratch is None else scratch, cache=cache, memory=memory,
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
                                   record["main_score_value"], 0.0, str(path), low, high,
                                   dict(record.get("metrics") or {}))
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
                                *((ci.low, ci.high) if ci is not None else (None, None)),
                                dict(result.metrics)))
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
