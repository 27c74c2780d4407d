"""Plugin discovery through the entry-point group, --plugin / env var loading, clashes."""

from __future__ import annotations

import textwrap
from importlib.metadata import entry_points

import pytest

from itra_bench.errors import PluginClashError, UserError
from itra_bench.registry import load_registry

BUILTINS = {"openclip", "hf", "sbert", "timm", "torchvision", "torchhub", "itra_train",
            "losses", "demo_tasks"}


def test_builtins_are_declared_in_the_entry_point_group():
    declared = {ep.name: ep for ep in entry_points(group="itra_bench")}
    assert BUILTINS <= set(declared)
    assert {declared[n].dist.name for n in BUILTINS} == {"itra-bench"}


def test_builtins_are_loaded_through_entry_points():
    reg = load_registry()
    assert BUILTINS <= set(reg.plugins)
    assert reg.plugins["openclip"].distribution == "itra-bench"
    assert {"openclip", "hf", "sbert", "timm", "torchvision", "torchhub", "demo"} <= set(
        reg.models)
    assert reg.models["demo"].plugin.name == "itra_train"
    assert reg.models["checkpoint"].plugin.name == "itra_train"
    assert {"train", "watch", "demo"} <= set(reg.commands)
    assert "infonce" in reg.losses
    assert reg.suites["demo"] == ["digits-zeroshot", "digits-linear-probe", "digits-knn",
                                  "digits-clustering", "digits-retrieval"]


def test_disabled_plugin_is_not_loaded():
    reg = load_registry(disabled=["demo_tasks"])
    assert "demo_tasks" not in reg.plugins and "digits-knn" not in reg.tasks


def test_plugin_flag_and_environment_variable(monkeypatch):
    reg = load_registry(["itra_test_plugin"])
    assert reg.models["pixel"].plugin.distribution == "(not installed: --plugin)"
    monkeypatch.setenv("ITRA_BENCH_PLUGINS", "itra_test_plugin")
    assert "pixel" in load_registry().models


def test_unimportable_plugin_module_is_a_user_error():
    with pytest.raises(UserError, match="cannot import it"):
        load_registry(["no_such_module_anywhere"])


def write_module(tmp_path, monkeypatch, name: str, body: str) -> str:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_task_name_clash_names_both_plugins(tmp_path, monkeypatch):
    mod = write_module(tmp_path, monkeypatch, "clashing_tasks", """
        from itra_bench import hookimpl
        from itra_bench.task import Task

        class Dup(Task):
            name = "digits-knn"

        @hookimpl
        def itra_bench_tasks():
            return [Dup()]
    """)
    with pytest.raises(PluginClashError) as err:
        load_registry([mod])
    assert "'digits-knn'" in str(err.value)
    assert "'demo_tasks'" in str(err.value) and "'clashing_tasks'" in str(err.value)


def test_model_scheme_clash_via_cli_exit_code_2(cli, tmp_path, monkeypatch):
    mod = write_module(tmp_path, monkeypatch, "clashing_models", """
        from itra_bench import hookimpl
        from itra_bench.model import ModelBuilder

        @hookimpl
        def itra_bench_model_builders():
            return [ModelBuilder("demo", lambda rest, options: None)]
    """)
    res = cli("list", "models", "--plugin", mod)
    assert res.code == 2
    assert "model scheme 'demo' is provided by two plugins" in res.err
    assert "'itra_train'" in res.err and "'clashing_models'" in res.err


def test_suite_hook_gathers_tasks_across_plugins(tmp_path, monkeypatch, cli):
    mod = write_module(tmp_path, monkeypatch, "suite_plugin", """
        from itra_bench import hookimpl

        @hookimpl
        def itra_bench_suites():
            return {"fast": ["digits-knn", "digits-clustering"]}
    """)
    reg = load_registry([mod])
    assert reg.suites["fast"] == ["digits-knn", "digits-clustering"]
    assert reg.suite_providers["fast"].name == "suite_plugin"


@pytest.mark.parametrize("kind", ["models", "losses", "tasks", "suites", "plugins"])
def test_list_prints_a_table_with_distributions(cli, kind):
    res = cli("list", kind)
    assert res.code == 0, res
    assert "itra-bench" in res.out
    expected = {"models": "openclip", "losses": "infonce", "tasks": "digits-retrieval",
                "suites": "demo", "plugins": "demo_tasks"}[kind]
    assert expected in res.out


def test_list_shows_square_brackets_in_descriptions_as_written(cli, tmp_path, monkeypatch):
    # Rich reads "[...]" as markup: unescaped, the bracketed words would vanish.
    mod = write_module(tmp_path, monkeypatch, "bracket_plugin", """
        from itra_bench import hookimpl
        from itra_bench.losses import LazyFactory, LossSpec

        @hookimpl
        def itra_bench_losses():
            return [LossSpec("bracketed", LazyFactory("nowhere", "Nothing"),
                             description="over [own feature, queue] of [bold]x")]
    """)
    res = cli("list", "losses", "--plugin", mod)
    assert res.code == 0, res
    assert "over [own feature, queue] of [bold]x" in res.out
    assert "seed" in res.out and "[own teacher feature, queue of 65536" in res.out


def test_result_observer_hook_sees_each_written_result(cli, tmp_path, monkeypatch):
    mod = write_module(tmp_path, monkeypatch, "observer_plugin", """
        from itra_bench import hookimpl

        SEEN = []

        @hookimpl
        def itra_bench_result_written(task, model_name, result, path, record):
            SEEN.append((task.name, model_name, result.main_score, path,
                         record["main_score_value"]))
    """)
    res = cli("run", "--model", "pixel", "--plugin", "itra_test_plugin", "--plugin", mod,
              "--tasks", "digits-knn", "--output", tmp_path / "out", "--no-cache",
              "--workers", "0", "--no-progress")
    assert res.code == 0, res
    import observer_plugin

    [(task, model, main, path, value)] = observer_plugin.SEEN
    assert (task, model, main) == ("digits-knn", "pixel", "acc1")
    assert path.endswith("knn.json") and value > 0.9


def test_plugin_task_file_protocol(cli, tmp_path, monkeypatch):
    mod = write_module(tmp_path, monkeypatch, "file_protocol_plugin", """
        from itra_bench import hookimpl
        from itra_bench.task import Task, TaskResult
        from itra_bench.yaml_tasks import check_fields

        class Constant(Task):
            protocol = "constant"
            main_score = "value"

            def __init__(self, name, value):
                self.name, self.value = name, value

            def run(self, model, ctx):
                return TaskResult({"value": self.value}, "value", 1)

        def from_file(doc, path):
            v = check_fields(doc, {"name": (str, True, None), "task_type": (str, True, None),
                                   "value": (float, True, None)}, path, "task type constant")
            return Constant(v["name"], v["value"])

        @hookimpl
        def itra_bench_task_file_protocols():
            return {"constant": from_file}

        @hookimpl
        def itra_bench_metrics():
            from itra_bench import Metric

            return [Metric("value", "the value the task file gives")]
    """)
    good = tmp_path / "c.yaml"
    good.write_text("name: const\ntask_type: constant\nvalue: 0.25\n")
    res = cli("run", "--model", "pixel", "--plugin", "itra_test_plugin", "--plugin", mod,
              "--tasks", good, "--output", tmp_path / "out", "--no-cache", "--no-progress")
    assert res.code == 0, res
    assert "25.00" in res.out
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: const\ntask_type: constant\nvalu: 1.0\n")
    res = cli("run", "--model", "pixel", "--plugin", "itra_test_plugin", "--plugin", mod,
              "--tasks", bad, "--output", tmp_path / "out", "--no-cache", "--no-progress")
    assert res.code == 2 and "unknown key 'valu' (did you mean 'value'?)" in res.err
    res = cli("run", "--model", "pixel", "--plugin", "itra_test_plugin", "--tasks", good,
              "--output", tmp_path / "out", "--no-cache", "--no-progress")
    assert res.code == 2 and "task type 'constant'" in res.err


def test_core_never_imports_the_trainer():
    """itra_bench (core, plugins, tasks, ELEVATER) builds on nothing of itra_train: the trainer
    contributes its commands and model schemes through the plugin host."""
    import ast
    from pathlib import Path

    import itra_bench
    import itra_bench.plugins
    import itra_bench.tasks
    import itra_bench.vision_benchmark

    roots = {Path(m.__file__).parent for m in (itra_bench, itra_bench.plugins, itra_bench.tasks,
                                                itra_bench.vision_benchmark)}
    offenders = []
    for root in roots:
        for path in root.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                offenders += [f"{path}: {n}" for n in names if n.split(".")[0] == "itra_train"]
    assert offenders == []


def test_plugin_command_runs_and_clash_with_builtin_is_refused(cli, tmp_path, monkeypatch):
    mod = write_module(tmp_path, monkeypatch, "command_plugin", """
        from itra_bench import hookimpl
        from itra_bench.commands import Command

        def _args(parser):
            parser.add_argument("--times", type=int, default=1)

        def _hello(args, registry, console):
            print("hello " * args.times + str(len(registry.tasks)))
            return 0

        @hookimpl
        def itra_bench_commands():
            return [Command("hello", "say hello", run=_hello, add_arguments=_args)]
    """)
    res = cli("hello", "--times", "2", "--plugin", mod)
    assert res.code == 0, res
    assert res.out.startswith("hello hello ")
    clash = write_module(tmp_path, monkeypatch, "clash_command", """
        from itra_bench import hookimpl
        from itra_bench.commands import Command

        @hookimpl
        def itra_bench_commands():
            return [Command("run", "shadow run", main=lambda argv: 0)]
    """)
    res = cli("list", "plugins", "--plugin", clash)
    assert res.code == 2 and "'run'" in res.err and "clash_command" in res.err


def test_trainer_uses_plugins_only_through_the_registry():
    """itra_train builds on the core's contracts, never on a plugin's internals (losses and
    towers come from the registry, as a third-party plugin's would)."""
    import ast
    from pathlib import Path

    import itra_train

    offenders = []
    for path in Path(itra_train.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.name}: {n}" for n in names
                          if n.startswith(("itra_bench.plugins", "itra_bench.tasks"))]
    assert offenders == []


# -- what `--help` loads ---------------------------------------------------------------------

COUNTING_PLUGIN = """
    from itra_bench import hookimpl
    from itra_bench.commands import Command
    from itra_bench.task import Task

    CALLS = []

    class Dup(Task):
        name = "digits-knn"

    @hookimpl
    def itra_bench_tasks():
        CALLS.append("tasks")
        return [Dup()] if CLASH else []

    @hookimpl
    def itra_bench_task_files():
        CALLS.append("task_files")
        return []

    @hookimpl
    def itra_bench_commands():
        CALLS.append("commands")
        return [Command("hello", "say hello", run=lambda args, registry, console: 0)]
"""


def counting_plugin(tmp_path, monkeypatch, name: str, clash: bool):
    import importlib

    write_module(tmp_path, monkeypatch, name, f"CLASH = {clash}\n" + textwrap.dedent(
        COUNTING_PLUGIN))
    return importlib.import_module(name)


def test_help_reads_only_the_commands_hook(cli, tmp_path, monkeypatch):
    plugin = counting_plugin(tmp_path, monkeypatch, "counting_plugin", clash=False)
    res = cli("--help", "--plugin", "counting_plugin")
    assert res.code == 0, res
    assert "hello" in res.out and "say hello" in res.out
    assert "tasks" not in plugin.CALLS and "task_files" not in plugin.CALLS
    assert "commands" in plugin.CALLS
    plugin.CALLS.clear()
    assert cli("list", "plugins", "--plugin", "counting_plugin").code == 0
    # Every other command loads every kind, as before: clashes surface at start-up.
    assert {"tasks", "task_files", "commands"} <= set(plugin.CALLS)


def test_task_clash_is_reported_by_list_and_run_though_help_skips_tasks(cli, tmp_path,
                                                                       monkeypatch):
    counting_plugin(tmp_path, monkeypatch, "clashing_counter", clash=True)
    assert cli("--help", "--plugin", "clashing_counter").code == 0
    for args in (("list", "tasks"), ("list", "models"),
                 ("run", "--model", "pixel", "--plugin", "itra_test_plugin", "--tasks",
                  "digits-knn", "--output", tmp_path / "out", "--no-cache", "--no-progress")):
        res = cli(*args, "--plugin", "clashing_counter")
        assert res.code == 2, (args, res)
        assert "task 'digits-knn' is provided by two plugins" in res.err
        assert "'demo_tasks'" in res.err and "'clashing_counter'" in res.err


def test_misnamed_hook_stops_help_too(cli, tmp_path, monkeypatch):
    mod = write_module(tmp_path, monkeypatch, "misnamed_hook", """
        from itra_bench import hookimpl

        @hookimpl
        def itra_bench_task():
            return []
    """)
    for args in (("--help",), ("list", "tasks")):
        res = cli(*args, "--plugin", mod)
        assert res.code == 2, (args, res)
        assert "'itra_bench_task', which is not an itra-bench hook" in res.err
        assert "Did you mean 'itra_bench_tasks'?" in res.err


def test_lazy_registry_loads_each_kind_on_first_use(tmp_path, monkeypatch):
    plugin = counting_plugin(tmp_path, monkeypatch, "lazy_counter", clash=True)
    reg = load_registry(["lazy_counter"], lazy=True)
    assert plugin.CALLS == []
    assert reg.commands["hello"].plugin.name == "lazy_counter"
    assert plugin.CALLS == ["commands"]
    assert "demo" in reg.models and "tasks" not in plugin.CALLS
    with pytest.raises(PluginClashError, match="task 'digits-knn' is provided by two"):
        reg.tasks  # noqa: B018 (the property loads the tasks)
    # A failed kind is not half-filled: asking again raises again.
    with pytest.raises(PluginClashError):
        reg.suites  # noqa: B018
    with pytest.raises(PluginClashError):
        load_registry(["lazy_counter"])  # eager (the default): every kind at once
