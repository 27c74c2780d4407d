"""A callable named by module and attribute, imported on first use: what plugins hand to the
host (model builders, loss factories), so that loading a plugin imports nothing heavy."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from collections.abc import Callable
from typing import Any


class LazyFactory:
    """A class or function named by ``module`` and ``attr``, imported when first used.

    Calling it, or asking for its signature, imports ``module`` and calls (or inspects)
    ``module.attr``; until then nothing is imported, so a plugin that returns
    ``LossSpec("name", LazyFactory("my_package.losses", "MyLoss"))`` or
    ``ModelBuilder("scheme", LazyFactory("my_package.models", "build"))`` costs nothing to
    load. ``__module__`` is ``module``, as it would be for the class itself.
    """

    def __init__(self, module: str, attr: str) -> None:
        self.module = module
        self.attr = attr
        # An instance attribute shadows the class's own __module__, so code grouping
        # factories by module (tests, tools) sees where the target lives, not this file.
        self.__module__ = module
        self.__name__ = self.__qualname__ = attr
        self._target: Callable[..., Any] | None = None

    def resolve(self) -> Callable[..., Any]:
        """The class or function itself (importing its module on first use)."""
        if self._target is None:
            target = getattr(importlib.import_module(self.module), self.attr, None)
            if not callable(target):
                raise ImportError(f"LazyFactory({self.module!r}, {self.attr!r}): "
                                  f"{self.module} has no callable {self.attr!r}")
            self._target = target
        return self._target

    @property
    def source_file(self) -> str | None:
        """The file ``module`` would be imported from, found without importing it."""
        try:
            spec = importlib.util.find_spec(self.module)
        except (ImportError, ValueError):
            return None
        return spec.origin if spec is not None else None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*args, **kwargs)

    @property
    def __signature__(self) -> inspect.Signature:  # read by inspect.signature
        return inspect.signature(self.resolve())

    def __repr__(self) -> str:
        return f"LazyFactory({self.module!r}, {self.attr!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LazyFactory):
            return NotImplemented
        return (self.module, self.attr) == (other.module, other.attr)

    def __hash__(self) -> int:
        return hash((self.module, self.attr))
