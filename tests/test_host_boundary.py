"""The host (the ``itra_bench/`` folder) imports no plugin package and not the trainer: what a
plugin adds comes through hooks, so `--disable-plugin` removes all of it."""

from __future__ import annotations

import ast
from pathlib import Path

HOST = Path(__file__).resolve().parents[1] / "itra_bench"
#: Packages that plugins are (mounted under ``itra_bench.`` by pyproject) and the trainer.
PLUGIN_PACKAGES = ("itra_bench.plugins", "itra_bench.tasks", "itra_bench.vision_benchmark",
                   "itra_train")
#: Calls that import a module named by a string.
_IMPORT_CALLS = {"import_module", "__import__"}


def _imported_names(tree: ast.AST) -> list[str]:
    """Every absolute module name ``tree`` imports: import statements (and the modules of
    ``from X import Y``, plus ``X.Y`` in case Y is a submodule) and string arguments of
    ``importlib.import_module`` / ``__import__``."""
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names += [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Call) and node.args and \
                isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else \
                func.id if isinstance(func, ast.Name) else ""
            if called in _IMPORT_CALLS:
                names.append(node.args[0].value)
    return names


def plugin_imports(root: Path) -> set[tuple[str, str]]:
    """(file under ``root``, plugin or trainer module) for each such import in ``root``."""
    found = set()
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found.update((str(path.relative_to(root)), name) for name in _imported_names(tree)
                     if any(name == p or name.startswith(p + ".") for p in PLUGIN_PACKAGES))
    return found


def test_the_host_imports_no_plugin_and_not_the_trainer():
    assert plugin_imports(HOST) == set()


def test_the_check_sees_every_form_of_import(tmp_path):
    # A check that cannot fail is no check: each form below must be found.
    (tmp_path / "a.py").write_text(
        "import itra_train\n"
        "from itra_bench.vision_benchmark.summary import describe\n"
        "from itra_bench import tasks\n"
        "def f():\n"
        "    import importlib\n"
        "    importlib.import_module('itra_bench.plugins.openclip_models')\n"
        "    __import__('itra_train.cli')\n"
        "from . import runner\n"            # relative: the host's own modules
        "from itra_bench import results\n")
    assert {name for _, name in plugin_imports(tmp_path)} == {
        "itra_train", "itra_bench.vision_benchmark.summary",
        "itra_bench.vision_benchmark.summary.describe", "itra_bench.tasks",
        "itra_bench.plugins.openclip_models", "itra_train.cli"}
