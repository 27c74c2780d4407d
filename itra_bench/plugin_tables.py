"""The name -> item tables of what plugins provide: each hook implementation's return value
checked (a list of the right type, or a mapping), each item recorded with the plugin that
provides it (:class:`Provided`), and a name that two plugins provide refused as a clash."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from itra_bench.errors import PluginBugError, PluginClashError, UserError

if TYPE_CHECKING:
    from itra_bench.registry import PluginInfo

T = TypeVar("T")


@dataclass(frozen=True)
class Provided(Generic[T]):
    """One named item and the plugin that provides it."""

    name: str
    item: T
    plugin: PluginInfo


def _hook_bug(info: PluginInfo, hook: str, problem: str, wanted: str) -> PluginBugError:
    """The error for a ``hook`` implementation of ``info`` that returned the wrong thing."""
    return PluginBugError(f"plugin bug: {info.describe()}, module {info.module}: its hook "
                          f"{hook}() {problem}; it must return {wanted}. Report it to the "
                          "plugin's authors.")


def listed(impl: Callable[[], Any], info: PluginInfo, hook: str,
           item_type: type | tuple[type, ...]) -> list[Any]:
    """What the ``hook`` implementation ``impl`` of plugin ``info`` returns (None: nothing),
    refused as the plugin's bug unless it is a list (or other iterable) of ``item_type``."""
    types = item_type if isinstance(item_type, tuple) else (item_type,)
    wanted = "a list of " + " or ".join(t.__name__ for t in types)
    returned = impl()
    if returned is None:
        return []
    # One item in place of a list (the commonest slip) is not iterable, or iterates over
    # something else (a str over its characters, a dict over its keys).
    if isinstance(returned, (str, bytes, Mapping, *types)) or \
            not isinstance(returned, Iterable):
        raise _hook_bug(info, hook, f"returned a {type(returned).__name__}", wanted)
    items = list(returned)
    for item in items:
        if not isinstance(item, types):
            raise _hook_bug(info, hook, f"returned a list holding a {type(item).__name__} "
                                        f"({item!r:.80})", wanted)
    return items


def mapped(impl: Callable[[], Any], info: PluginInfo, hook: str, what: str
           ) -> Mapping[Any, Any]:
    """What the ``hook`` implementation ``impl`` of plugin ``info`` returns (None: nothing),
    refused as the plugin's bug unless it is a mapping (``what`` says of what)."""
    returned = impl()
    if returned is None:
        return {}
    if not isinstance(returned, Mapping):
        raise _hook_bug(info, hook, f"returned a {type(returned).__name__}",
                        f"a dict {{{what}}}")
    return returned


def put(table: dict[str, Provided[Any]], kind: str, name: str, item: Any,
        plugin: PluginInfo) -> None:
    """Record ``item`` as ``name`` in ``table``, refusing an empty name and a name that
    another plugin already provides (``kind`` names what the table holds)."""
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
