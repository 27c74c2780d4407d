"""The plugin host: loads plugins from the ``itra_bench`` entry-point group (built-ins
included), from ``--plugin MODULE`` and from ``ITRA_BENCH_PLUGINS``, and collects what they
provide into name -> item tables, refusing clashes."""

from __future__ import annotations

import difflib
import importlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any, Generic, TypeVar

import pluggy

from itra_bench import hookspecs
from itra_bench.errors import PluginClashError, UnknownNameError, UserError

GROUP = "itra_bench"
ENV_VAR = "ITRA_BENCH_PLUGINS"
T = TypeVar("T")


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


@dataclass(frozen=True)
class Provided(Generic[T]):
    """One named item and the plugin that provides it."""

    name: str
    item: T
    plugin: PluginInfo


@dataclass
class Registry:
    """Everything the loaded plugins provide, by kind and name."""

    pm: pluggy.PluginManager
    plugins: dict[str, PluginInfo]
    models: dict[str, Provided[Any]] = field(default_factory=dict)
    losses: dict[str, Provided[Any]] = field(default_factory=dict)
    tasks: dict[str, Provided[Any]] = field(default_factory=dict)
    suites: dict[str, list[str]] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    task_file_protocols: dict[str, Provided[Any]] = field(default_factory=dict)
    commands: dict[str, Provided[Any]] = field(default_factory=dict)
    suite_providers: dict[str, PluginInfo] = field(default_factory=dict)

    def model_builder(self, scheme: str) -> Any:
        """The builder owning ``scheme``; unknown schemes suggest close matches."""
        if scheme not in self.models:
            raise UnknownNameError("model", scheme, self.models)
        return self.models[scheme].item

    def loss(self, name: str) -> Any:
        """The loss spec called ``name``."""
        if name not in self.losses:
            raise UnknownNameError("loss", name, self.losses)
        return self.losses[name].item

    def add_task(self, task: Any, plugin: PluginInfo) -> None:
        """Register one task (and its suites), refusing a name another plugin already uses."""
        if task.name in self.aliases:
            raise PluginClashError(f"task name {task.name!r} (plugin {plugin.name!r}) is "
                                   f"already an alias of task {self.aliases[task.name]!r}")
        _put(self.tasks, "task", task.name, task, plugin)
        for alias in task.aliases:
            if alias == task.name:
                continue
            if alias in self.tasks or alias in self.aliases:
                other = self.aliases.get(alias, alias)
                raise PluginClashError(f"alias {alias!r} of task {task.name!r} (plugin "
                                       f"{plugin.name!r}) is already taken by task {other!r}")
            self.aliases[alias] = task.name
        for suite in task.suites:
            if suite in self.tasks:
                raise PluginClashError(
                    f"suite name {suite!r} (plugin {plugin.name!r}) is also a task name "
                    f"(plugin {self.tasks[suite].plugin.name!r}); rename one of them"
                )
            self.suites.setdefault(suite, [])
            self.suite_providers.setdefault(suite, plugin)
            if task.name not in self.suites[suite]:
                self.suites[suite].append(task.name)


def _put(table: dict[str, Provided[Any]], kind: str, name: str, item: Any,
         plugin: PluginInfo) -> None:
    if not name:
        raise UserError(f"plugin {plugin.name!r} ({plugin.distribution}) provides a {kind} "
                        "with an empty name")
    if name in table:
        other = table[name].plugin
        raise PluginClashError(
            f"{kind} {name!r} is provided by two plugins: {other.name!r} "
            f"(distribution {other.distribution}, module {other.module}) and {plugin.name!r} "
            f"(distribution {plugin.distribution}, module {plugin.module}). Uninstall one, or "
            f"block one with `--disable-plugin NAME`."
        )
    table[name] = Provided(name, item, plugin)


def _module_name(obj: object) -> str:
    return obj.__name__ if isinstance(obj, ModuleType) else type(obj).__module__


def check_hook_names(pm: pluggy.PluginManager, infos: dict[str, PluginInfo]) -> None:
    """Refuse a hook implementation that matches no hook (a misspelled name would otherwise
    be ignored silently), and a function named like a hook that lacks ``@hookimpl``."""
    known = [name for name in dir(hookspecs) if name.startswith("itra_bench_")]
    for name, caller in vars(pm.hook).items():
        if not isinstance(caller, pluggy.HookCaller) or caller.has_spec():
            continue
        for impl in caller.get_hookimpls():
            if impl.optionalhook:
                continue
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UserError(
                f"{infos[impl.plugin_name].describe()} implements {name!r}, which is not an "
                f"itra-bench hook.{hint} The hooks are: {', '.join(known)} (see "
                "itra_bench.hookspecs).")
    for plugin_name, plugin in pm.list_name_plugin():
        impls = {impl.function for caller in pm.get_hookcallers(plugin) or ()
                 for impl in caller.get_hookimpls() if impl.plugin_name == plugin_name}
        for name in known:
            func = getattr(plugin, name, None)
            if callable(func) and func not in impls:
                raise UserError(
                    f"{infos[plugin_name].describe()} defines {name}() without the "
                    "@itra_bench.hookimpl decorator, so itra-bench would never call it; "
                    "decorate it.")


def load_registry(extra_modules: Iterable[str] = (), disabled: Iterable[str] = ()) -> Registry:
    """Load every plugin and build the registry.

    ``extra_modules`` are imported and registered as plugins although no distribution
    declares them (``--plugin``); modules named in ``ITRA_BENCH_PLUGINS`` (comma-separated)
    are added too. ``disabled`` names plugins (entry-point names) not to load.
    """
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    disabled = set(disabled)
    infos: dict[str, PluginInfo] = {}
    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        if ep.name in disabled or pm.has_plugin(ep.name):
            continue
        dist = ep.dist.name if ep.dist is not None else "?"
        try:
            plugin = ep.load()
        except Exception as exc:
            raise UserError(
                f"plugin {ep.name!r} (entry point {ep.value!r} of distribution {dist}) failed "
                f"to import: {type(exc).__name__}: {exc}. Fix or uninstall it, or skip it with "
                f"`--disable-plugin {ep.name}`."
            ) from exc
        pm.register(plugin, name=ep.name)
        version = ep.dist.version if ep.dist is not None else ""
        infos[ep.name] = PluginInfo(ep.name, dist, _module_name(plugin), version)

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
        infos[mod_name] = PluginInfo(mod_name, "(not installed: --plugin)", mod_name)

    check_hook_names(pm, infos)
    registry = Registry(pm=pm, plugins=infos)
    for impl in pm.hook.itra_bench_model_builders.get_hookimpls():
        for builder in impl.function() or ():
            _put(registry.models, "model", builder.scheme, builder, infos[impl.plugin_name])
    for impl in pm.hook.itra_bench_losses.get_hookimpls():
        for spec in impl.function() or ():
            _put(registry.losses, "loss", spec.name, spec, infos[impl.plugin_name])
    for impl in pm.hook.itra_bench_tasks.get_hookimpls():
        for task in impl.function() or ():
            registry.add_task(task, infos[impl.plugin_name])
    for impl in pm.hook.itra_bench_task_file_protocols.get_hookimpls():
        for protocol, factory in (impl.function() or {}).items():
            _put(registry.task_file_protocols, "task file protocol", protocol, factory,
                 infos[impl.plugin_name])
    for impl in pm.hook.itra_bench_commands.get_hookimpls():
        for command in impl.function() or ():
            _put(registry.commands, "command", command.name, command, infos[impl.plugin_name])
    protocols = {name: p.item for name, p in registry.task_file_protocols.items()}
    for impl in pm.hook.itra_bench_task_files.get_hookimpls():
        from itra_bench.yaml_tasks import load_task_file

        for path in impl.function() or ():
            registry.add_task(load_task_file(path, protocols), infos[impl.plugin_name])
    for impl in pm.hook.itra_bench_suites.get_hookimpls():
        for suite, names in (impl.function() or {}).items():
            registry.suites.setdefault(suite, [])
            registry.suite_providers.setdefault(suite, infos[impl.plugin_name])
            for name in names:
                if name not in registry.suites[suite]:
                    registry.suites[suite].append(name)
    return registry
