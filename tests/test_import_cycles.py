"""No import cycles among the modules of the host (``itra_bench/``) and the trainer
(``itra_train/``): a module never needs one that needs it back while it is being imported.

Imports under ``if TYPE_CHECKING:`` never run and do not count. ``from itra_bench import
NAME`` of a public name counts as an import of the module that defines it (the package loads
it on first access). The trainer has no cycle through its deferred (function-level) imports
either; the host keeps some deferred ones on purpose (tasks loaded from the registry, which
their protocols' outcome statistics look up again), so only its imports at module level are
held to that."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import itra_bench

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"itra_bench": ROOT / "itra_bench", "itra_train": ROOT / "itra_train"}


def _modules(packages: dict[str, Path]) -> dict[str, Path]:
    """Dotted module name -> file, for every module of ``packages``."""
    out = {}
    for package, folder in packages.items():
        for path in folder.rglob("*.py"):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(body: list[ast.stmt], deferred: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements that run when a module is imported (in any block, and in class
    bodies, which run then too), and with ``deferred`` those inside functions as well."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _imports(node.orelse, deferred)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            if deferred:
                yield from _imports(node.body, deferred)
        elif isinstance(node, ast.Try):
            for block in (node.body, *(h.body for h in node.handlers), node.orelse,
                          node.finalbody):
                yield from _imports(block, deferred)
        else:  # if, for, while, with, class: their blocks run as the module is imported
            for block in ("body", "orelse"):
                yield from _imports(getattr(node, block, None) or [], deferred)


def import_graph(modules: dict[str, Path], exports: dict[str, tuple[str, str]],
                 deferred: bool = False) -> dict[str, set[str]]:
    """Each module -> the modules of ``modules`` it imports."""
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in _imports(ast.parse(path.read_text(encoding="utf-8")).body, deferred):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join([*parent, *([node.module] if node.module else [])])
                targets = [base, *(f"{base}.{a.name}" for a in node.names)]
                if base == "itra_bench":
                    targets += [exports[a.name][0] for a in node.names if a.name in exports]
            edges |= {t for t in targets if t in modules and t != name}
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected parts of ``graph`` with more than one module (Tarjan's)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            part = []
            while True:
                member = stack.pop()
                part.append(member)
                if member == node:
                    break
            if len(part) > 1:
                found.append(sorted(part))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_check_finds_a_cycle(tmp_path):
    # A check that cannot fail is no check: a module-level cycle, one through a deferred
    # import, a TYPE_CHECKING import (not a cycle) and a public name of itra_bench.
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.b import x\n")
    (pkg / "b.py").write_text("from . import a\nx = 1\n")
    (pkg / "c.py").write_text("def f():\n    from .d import y\n")
    (pkg / "d.py").write_text("from typing import TYPE_CHECKING\nfrom .c import f\n"
                              "if TYPE_CHECKING:\n    from .e import z\ny = 2\n")
    (pkg / "e.py").write_text("from itra_bench import thing\n")
    (pkg / "f.py").write_text("from pkg import e\n")
    modules = _modules({"pkg": pkg})
    exports = {"thing": ("pkg.f", "thing")}
    assert cycles(import_graph(modules, exports)) == [["pkg.a", "pkg.b"], ["pkg.e", "pkg.f"]]
    assert cycles(import_graph(modules, exports, deferred=True)) == [
        ["pkg.a", "pkg.b"], ["pkg.c", "pkg.d"], ["pkg.e", "pkg.f"]]


def test_no_module_level_import_cycle_in_the_host_or_the_trainer():
    graph = import_graph(_modules(PACKAGES), itra_bench._EXPORTS)
    assert len(graph) > 80  # the walk finds the code at all
    assert cycles(graph) == []


def test_no_import_cycle_in_the_trainer_even_through_deferred_imports():
    graph = import_graph(_modules({"itra_train": PACKAGES["itra_train"]}), itra_bench._EXPORTS,
                         deferred=True)
    assert cycles(graph) == []
