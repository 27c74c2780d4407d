"""The plugin host: loads plugins from the ``itra_bench`` entry-point group (built-ins
included), from ``--plugin MODULE`` and from ``ITRA_BENCH_PLUGINS``, collects what they
provide into name -> item tables, refusing clashes (:mod:`itra_bench.plugin_tables`), and
says which registry is active. What it learns about each plugin as it loads it is
:mod:`itra_bench.plugin_inspection`."""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import pluggy

from itra_bench import hookspecs
from itra_bench.errors import PluginBugError, PluginClashError, UnknownNameError, UserError
from itra_bench.plugin_inspection import (
    check_hook_names,
    distribution,
    module_name,
    source_version,
)
from itra_bench.plugin_tables import Provided, listed, mapped, put
from itra_bench.results import NAME_RULE, is_safe_name

GROUP = "itra_bench"
ENV_VAR = "ITRA_BENCH_PLUGINS"


@dataclass(frozen=True)
class PluginInfo:
    """A loaded plugin: its registered name, the distribution that ships it (and its
    version), its module."""

    name: str
    distribution: str
    module: str
    version: str = ""

    def describe(self) -> str:
        """``plugin 'name' (distribution version)``, for messages."""
        dist = f"{self.distribution} {self.version}".strip()
        return f"plugin {self.name!r} ({dist})"

    def as_record(self) -> dict[str, str]:
        """What a result records about the plugin that provided its model, task or loss."""
        return {"plugin": self.name, "distribution": self.distribution,
                "version": self.version, "module": self.module}


class Registry:
    """Everything the loaded plugins provide, by kind and name.

    Each kind is collected from its hooks on first use (``registry.tasks`` calls the task
    hooks and reads the task files), so a command that needs only some kinds, such as
    ``itra-bench --help`` needing the plugins' subcommands, reads no task file.
    :meth:`load_all` collects every kind now, raising the first clash.
    """

    def __init__(self, pm: pluggy.PluginManager, plugins: dict[str, PluginInfo]) -> None:
        self.pm = pm
        self.plugins = plugins
        self._tables: dict[str, Any] = {}

    def _table(self, kind: str) -> Any:
        # A kind whose hooks raised is left unloaded, so asking again raises again rather
        # than returning a half-filled table.
        if kind not in self._tables:
            loader = getattr(self, f"_load_{kind}")
            try:
                loader()
            except BaseException:
                self._tables.pop(kind, None)
                raise
        return self._tables[kind]

    def load_all(self) -> None:
        """Collect every kind from the plugins now (what every command but ``--help`` does
        first, so a clash anywhere stops it at start-up)."""
        for kind in ("models", "losses", "tasks", "task_file_protocols", "task_prefixes",
                     "commands", "result_summaries", "outcome_statistics", "metrics"):
            self._table(kind)

    @property
    def models(self) -> dict[str, Provided[Any]]:
        """Model builders by scheme."""
        return self._table("models")

    @property
    def losses(self) -> dict[str, Provided[Any]]:
        """Loss specs by name."""
        return self._table("losses")

    @property
    def commands(self) -> dict[str, Provided[Any]]:
        """Plugin subcommands by name."""
        return self._table("commands")

    @property
    def result_summaries(self) -> dict[str, Provided[Any]]:
        """Views of a results folder (``itra-bench results`` and ``report``) by name."""
        return self._table("result_summaries")

    @property
    def outcome_statistics(self) -> dict[str, Provided[Any]]:
        """Metrics that plugins recompute from per-sample outcomes, by ``kind:metric``
        (:func:`itra_bench.outcome_statistics.statistic_key`)."""
        return self._table("outcome_statistics")

    @property
    def metrics(self) -> dict[str, Provided[Any]]:
        """The metrics plugins declare (:class:`itra_bench.metric_names.Metric`), by name or
        pattern; the host's own are :data:`itra_bench.metric_names.HOST_METRICS`."""
        return self._table("metrics")

    @property
    def task_file_protocols(self) -> dict[str, Provided[Any]]:
        """The task types (or factories) of task files, by the ``task_type`` that names them."""
        return self._table("task_file_protocols")

    @property
    def task_prefixes(self) -> dict[str, Provided[Any]]:
        """Factories of tasks named ``PREFIX:REST`` in ``--tasks``, by prefix."""
        return self._table("task_prefixes")

    @property
    def tasks(self) -> dict[str, Provided[Any]]:
        """Tasks by name (the task hooks and the plugins' task files)."""
        return self._table("tasks")["tasks"]

    @property
    def aliases(self) -> dict[str, str]:
        """Task alias -> task name."""
        return self._table("tasks")["aliases"]

    @property
    def suites(self) -> dict[str, list[str]]:
        """Suite name -> member task names, in order."""
        return self._table("tasks")["suites"]

    @property
    def suite_providers(self) -> dict[str, PluginInfo]:
        """Suite name -> the plugin that first named it."""
        return self._table("tasks")["suite_providers"]

    def _impls(self, hook: str) -> list[tuple[Any, PluginInfo]]:
        caller = getattr(self.pm.hook, hook)
        return [(impl.function, self.plugins[impl.plugin_name])
                for impl in caller.get_hookimpls()]

    def _load_named(self, kind: str, hook: str, label: str, name: Callable[[Any], str],
                    item_type: type) -> None:
        """Fill the table ``kind`` with the ``item_type`` objects the ``hook``
        implementations return, keyed by ``name(item)``; a name two plugins provide is a
        clash (``label`` names the kind)."""
        table = self._tables[kind] = {}
        for impl, info in self._impls(hook):
            for item in listed(impl, info, hook, item_type):
                put(table, label, name(item), item, info)

    def _load_models(self) -> None:
        from itra_bench.model_api import ModelBuilder

        self._load_named("models", "itra_bench_model_builders", "model scheme",
                         lambda b: b.scheme, ModelBuilder)

    def _load_losses(self) -> None:
        from itra_bench.losses import LossSpec

        self._load_named("losses", "itra_bench_losses", "loss", lambda spec: spec.name,
                         LossSpec)

    def _load_commands(self) -> None:
        from itra_bench.commands import Command

        self._load_named("commands", "itra_bench_commands", "command", lambda c: c.name,
                         Command)

    def _load_result_summaries(self) -> None:
        from itra_bench.summaries import ResultSummary

        self._load_named("result_summaries", "itra_bench_result_summaries", "result summary",
                         lambda s: s.name, ResultSummary)

    def _load_outcome_statistics(self) -> None:
        from itra_bench.outcome_statistics import OutcomeStatistic

        self._load_named("outcome_statistics", "itra_bench_outcome_statistics",
                         "outcome statistic", lambda s: s.key, OutcomeStatistic)

    def _load_metrics(self) -> None:
        from itra_bench.metric_names import Metric, refuse_host_names

        self._load_named("metrics", "itra_bench_metrics", "metric", lambda m: m.name, Metric)
        refuse_host_names(self._tables["metrics"])

    def _load_keyed(self, kind: str, hook: str, label: str, key: str) -> None:
        """Fill the table ``kind`` with the ``{key: factory}`` mappings the ``hook``
        implementations return; a key two plugins provide is a clash (``label`` names it)."""
        table = self._tables[kind] = {}
        for impl, info in self._impls(hook):
            for name, factory in mapped(impl, info, hook, f"{key} -> factory").items():
                put(table, label, name, factory, info)

    def _load_task_file_protocols(self) -> None:
        self._load_keyed("task_file_protocols", "itra_bench_task_file_protocols",
                         "task type", "task type")

    def _load_task_prefixes(self) -> None:
        self._load_keyed("task_prefixes", "itra_bench_task_prefixes", "task prefix", "prefix")

    def _load_tasks(self) -> None:
        # The tables are in place before the hooks run: add_task fills them.
        self._tables["tasks"] = {"tasks": {}, "aliases": {}, "suites": {},
                                 "suite_providers": {}}
        from itra_bench.task import Task

        for hook, info in self._impls("itra_bench_tasks"):
            for task in listed(hook, info, "itra_bench_tasks", Task):
                self.add_task(task, info)
        protocols = {name: p.item for name, p in self.task_file_protocols.items()}
        for hook, info in self._impls("itra_bench_task_files"):
            from itra_bench.yaml_tasks import load_task_file

            for path in listed(hook, info, "itra_bench_task_files", (str, os.PathLike)):
                self.add_task(load_task_file(path, protocols), info)
        suites, providers = self.suites, self.suite_providers
        for hook, info in self._impls("itra_bench_suites"):
            for suite, names in mapped(hook, info, "itra_bench_suites",
                                        "suite -> task names").items():
                suites.setdefault(suite, [])
                providers.setdefault(suite, info)
                for name in names:
                    if name not in suites[suite]:
                        suites[suite].append(name)

    def model_builder(self, scheme: str) -> Any:
        """The builder owning ``scheme``; unknown schemes suggest close matches."""
        if scheme not in self.models:
            raise UnknownNameError("model scheme", scheme, self.models)
        return self.models[scheme].item

    def build_model(self, scheme: str, rest: str, options: Any) -> Any:
        """Build ``scheme:rest`` with its plugin's builder, this registry being the
        :func:`active_registry` meanwhile. A builder's UserError (a deliberate refusal)
        passes; any other exception is its plugin's bug."""
        builder = self.model_builder(scheme)
        with activated(self):
            try:
                return builder.build(rest, options)
            except (UserError, MemoryError):
                raise
            except Exception as exc:
                # Out of (GPU) memory is the machine's limit, not the plugin's bug.
                if type(exc).__name__ == "OutOfMemoryError":
                    raise
                plugin = self.models[scheme].plugin
                raise PluginBugError(
                    f"plugin bug: the builder of the model scheme {scheme!r} of "
                    f"{plugin.describe()}, module "
                    f"{plugin.module}, raised {type(exc).__name__}: {exc} (building "
                    f"{scheme}:{rest}). A builder must return an EncoderModel, or raise "
                    "itra_bench.errors.UserError saying what the user must change; report it "
                    "to the plugin's authors (rerun with --debug for the traceback).") from exc

    def loss(self, name: str) -> Any:
        """The loss spec called ``name``."""
        if name not in self.losses:
            raise UnknownNameError("loss", name, self.losses)
        return self.losses[name].item

    def add_task(self, task: Any, plugin: PluginInfo) -> None:
        """Register one task (and its suites), refusing a name another plugin already uses
        or one that cannot name the folder of the task's results."""
        tasks, aliases, suites = self.tasks, self.aliases, self.suites
        if not is_safe_name(task.name):
            raise PluginBugError(f"plugin bug: {plugin.describe()} provides a task named "
                                 f"{task.name!r}, which cannot name the folder of its "
                                 f"results: task names use {NAME_RULE}. Report it to the "
                                 "plugin's authors.")
        if task.name in aliases:
            raise PluginClashError(f"task name {task.name!r} (plugin {plugin.name!r}) is "
                                   f"already an alias of task {aliases[task.name]!r}")
        put(tasks, "task", task.name, task, plugin)
        for alias in task.aliases:
            if alias == task.name:
                continue
            if alias in tasks or alias in aliases:
                other = aliases.get(alias, alias)
                raise PluginClashError(f"alias {alias!r} of task {task.name!r} (plugin "
                                       f"{plugin.name!r}) is already taken by task {other!r}")
            aliases[alias] = task.name
        for suite in task.suites:
            if suite in tasks:
                raise PluginClashError(
                    f"suite name {suite!r} (plugin {plugin.name!r}) is also a task name "
                    f"(plugin {tasks[suite].plugin.name!r}); rename one of them"
                )
            suites.setdefault(suite, [])
            self.suite_providers.setdefault(suite, plugin)
            if task.name not in suites[suite]:
                suites[suite].append(task.name)


#: The registry whose builder is building a model now (see :meth:`Registry.build_model`).
_ACTIVE: ContextVar[Registry | None] = ContextVar("itra_bench_active_registry", default=None)


def active_registry() -> Registry | None:
    """The registry of the command running now (None outside a command, a run or a model
    build).

    A builder that builds parts of its model with other plugins' builders (an itra-train
    checkpoint rebuilding its towers) takes them from here: the plugins of the command,
    installed entry points and ``--plugin`` modules alike, and no others.
    """
    return _ACTIVE.get()


@functools.cache
def _installed_registry() -> Registry:
    return load_registry(lazy=True)


def current_registry() -> Registry:
    """The :func:`active_registry`, else the registry of every installed plugin (loaded
    once per process): what code running outside a command (a script calling the library)
    takes plugins' contributions from."""
    return active_registry() or _installed_registry()


@contextlib.contextmanager
def activated(registry: Registry) -> Iterator[Registry]:
    """Make ``registry`` the :func:`active_registry` inside the block."""
    token = _ACTIVE.set(registry)
    try:
        yield registry
    finally:
        _ACTIVE.reset(token)


def load_registry(extra_modules: Iterable[str] = (), disabled: Iterable[str] = (), *,
                  lazy: bool = False) -> Registry:
    """Load every plugin and build the registry.

    ``extra_modules`` are imported and registered as plugins although no distribution
    declares them (``--plugin``); modules named in ``ITRA_BENCH_PLUGINS`` (comma-separated)
    are added too. ``disabled`` names plugins (entry-point names) not to load. Hook names
    are checked at once; with ``lazy`` each kind (models, tasks, ...) is collected from its
    hooks on first use, otherwise all are collected now, raising the first clash.
    """
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    disabled = set(disabled)
    infos: dict[str, PluginInfo] = {}
    dists: dict[int, tuple[str, str]] = {}
    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        if ep.name in disabled or pm.has_plugin(ep.name):
            continue
        dist, version = distribution(ep, dists)
        try:
            plugin = ep.load()
        except Exception as exc:
            raise UserError(
                f"plugin {ep.name!r} (entry point {ep.value!r} of distribution {dist}) failed "
                f"to import: {type(exc).__name__}: {exc}. Fix or uninstall it, or skip it with "
                f"`--disable-plugin {ep.name}`."
            ) from exc
        pm.register(plugin, name=ep.name)
        infos[ep.name] = PluginInfo(ep.name, dist, module_name(plugin), version)

    env_modules = [m.strip() for m in os.environ.get(ENV_VAR, "").split(",") if m.strip()]
    for mod_name in [*extra_modules, *env_modules]:
        try:
            module = importlib.import_module(mod_name)
        except ImportError as exc:
            raise UserError(
                f"--plugin {mod_name!r}: cannot import it ({exc}). Give an importable module "
                "name (on PYTHONPATH), not a file path."
            ) from exc
        if pm.is_registered(module):
            continue
        pm.register(module, name=mod_name)
        infos[mod_name] = PluginInfo(mod_name, "(not installed: --plugin)", mod_name,
                                     source_version(module))

    check_hook_names(pm, infos)
    registry = Registry(pm=pm, plugins=infos)
    if not lazy:
        registry.load_all()
    return registry
