"""The public API is ``itra_bench.__all__``: every name resolves and is documented, importing
the package stays light, and the trainer and the examples use nothing else of the host."""

from __future__ import annotations

import ast
import inspect
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import itra_bench

ROOT = Path(__file__).resolve().parents[1]
#: The code that must use only the public API.
CLIENTS = (ROOT / "itra_train", ROOT / "examples")


def _is_host(module: str) -> bool:
    return module == "itra_bench" or module.startswith("itra_bench.")


def api_violations(source: str, public: set[str] | frozenset[str]) -> list[str]:
    """Every use of the host in ``source`` beyond ``public``: an import of a module inside
    ``itra_bench`` (internal modules and the built-in plugins alike), an import of a name the
    package does not export, and ``itra_bench.NAME`` for such a name."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names
                      if _is_host(a.name) and a.name != "itra_bench"]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module \
                and _is_host(node.module):
            if node.module != "itra_bench":
                found.append(f"line {node.lineno}: from {node.module} import ...")
            else:
                found += [f"line {node.lineno}: from itra_bench import {a.name}"
                          for a in node.names if a.name not in public]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id == "itra_bench" and node.attr not in public:
            found.append(f"line {node.lineno}: itra_bench.{node.attr}")
    return sorted(found, key=lambda line: int(line.split(":")[0].split()[1]))


def test_the_scanner_finds_each_kind_of_violation():
    # A check that cannot fail is no check.
    snippet = "\n".join([
        "import itra_bench",                                      # fine
        "import itra_bench as ib",                                # fine
        "from itra_bench import evaluate, UserError",             # fine
        "import itra_bench_example_plugin.tasks",                 # another package: fine
        "from itra_bench_example_plugin import plugin",           # fine
        "from . import checkpoint",                               # relative: fine
        "import itra_bench.runner",                               # 7
        "from itra_bench.runner import run",                      # 8
        "from itra_bench.plugins.openclip_models import X",       # 9
        "from itra_bench import select_tasks",                    # 10
        "itra_bench.runner.run(config)",                          # 11
        "itra_bench.evaluate('demo', 'demo')",                    # fine
        "def f():",
        "    from itra_bench.tasks import demo",                  # 14
        "if TYPE_CHECKING:",
        "    from itra_bench.model import EncoderModel",          # 16
    ])
    found = api_violations(snippet, frozenset({"evaluate", "UserError"}))
    assert [line.split(":")[0] for line in found] == [
        f"line {n}" for n in (7, 8, 9, 10, 11, 14, 16)], found


def test_the_trainer_and_the_examples_use_only_the_public_api():
    public = set(itra_bench.__all__)
    files = sorted(p for folder in CLIENTS for p in folder.rglob("*.py"))
    assert len(files) > 20  # the walk finds the code at all
    problems = [f"{path.relative_to(ROOT)} {problem}" for path in files
                for problem in api_violations(path.read_text(encoding="utf-8"), public)]
    assert problems == []


def test_every_public_name_resolves_and_is_documented():
    constants = []
    for name in itra_bench.__all__:
        value = getattr(itra_bench, name)
        if inspect.isclass(value) or inspect.isroutine(value):
            own = value.__dict__.get("__doc__") if inspect.isclass(value) else value.__doc__
            assert own and own.strip(), f"{name} has no docstring"
        else:
            constants.append(name)
            # A value (a constant, a numeric rule) is described in the package's docstring.
            assert f"``{name}``" in itra_bench.__doc__, f"{name} is not described"
    assert "IMAGE" in constants  # the branch for values is taken


def test_all_lists_every_export_and_no_export_can_be_shadowed_by_a_module():
    assert set(itra_bench.__all__) == {"hookimpl", *itra_bench._EXPORTS}
    assert len(itra_bench.__all__) == len(set(itra_bench.__all__))
    # Importing a submodule sets the package attribute of its name: an export named like a
    # module would turn into that module once anything imported it.
    modules = {m.name for m in pkgutil.iter_modules(itra_bench.__path__)}
    assert modules & set(itra_bench.__all__) == set()
    assert set(itra_bench.__all__) <= set(dir(itra_bench))


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'select_tasks'"):
        itra_bench.select_tasks  # noqa: B018


def test_importing_the_package_imports_neither_torch_nor_numpy():
    # Nor do the names a plugin module or a notebook imports first.
    code = ("import sys, itra_bench\n"
            "from itra_bench import Task, ModelBuilder, UserError, evaluate, Results\n"
            "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    assert out.strip() == "[]"


def test_run_settings_are_the_run_config_fields_and_the_task_options():
    import dataclasses

    from itra_bench.evaluation import _PROTOCOL
    from itra_bench.runner import RunConfig
    from itra_bench.vocabulary import RENAMED_CONFIG_KEYS

    # In the vocabulary's words (RunConfig's `pooler` is the setting `text_pooler`).
    fields = {RENAMED_CONFIG_KEYS.get(f.name, f.name)
              for f in dataclasses.fields(RunConfig)} - {"model", "tasks"}
    assert set(itra_bench.RunSettings.__annotations__) == fields | set(_PROTOCOL)
