"""What the plugin host learns about each plugin as it loads it: the distribution and version
it comes from (or, for a ``--plugin`` module, a digest of its source), its module, and whether
its hook implementations are named like hooks and decorated."""

from __future__ import annotations

import contextlib
import difflib
import hashlib
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pluggy

from itra_bench import hookspecs
from itra_bench.errors import UserError

if TYPE_CHECKING:
    from itra_bench.registry import PluginInfo


def source_version(module: ModuleType) -> str:
    """A version for a module that no distribution versions (``--plugin``): a digest of its
    source (every ``.py`` file of a package), so that editing it changes the fingerprints
    of the models it builds."""
    folder = getattr(module, "__path__", None)
    files = sorted(Path(folder[0]).rglob("*.py")) if folder else \
        [Path(module.__file__)] if getattr(module, "__file__", None) else []
    digest = hashlib.sha256()
    for path in files:
        with contextlib.suppress(OSError):
            digest.update(f"{path.name}\0".encode() + path.read_bytes())
    return f"source-{digest.hexdigest()[:12]}" if files else ""


def module_name(obj: object) -> str:
    """The name of the module a plugin object is (or of the module its class comes from)."""
    return obj.__name__ if isinstance(obj, ModuleType) else type(obj).__module__


def distribution(ep: Any, seen: dict[int, tuple[str, str]]) -> tuple[str, str]:
    """Name and version of the distribution declaring ``ep`` (``("?", "")`` if unknown)."""
    if ep.dist is None:
        return "?", ""
    # Each `.name` or `.version` parses the distribution's METADATA file again (0.16 s for
    # the built-ins' 19 entry points); entry points of one distribution share its object.
    key = id(ep.dist)
    if key not in seen:
        meta = ep.dist.metadata
        seen[key] = (meta["Name"], meta["Version"])
    return seen[key]


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
