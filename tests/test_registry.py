"""Plugin discovery through the entry-point group, --plugin / env var loading, clashes."""

from __future__ import annotations

import textwrap
from importlib.metadata import entry_points

import pytest

from itra_bench.errors import PluginClashError, UserError
from itra_bench.registry import load_registry

BUILTINS = {"openclip", "hf", "sbert", "timm", "torchvision", "torchhub", "demo_model",
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
    assert reg.models["demo"].plugin.name == "demo_model"
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
    assert "model 'demo' is provided by two plugins" in res.err
    assert "'demo_model'" in res.err and "'clashing_models'" in res.err


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
            v = check_fields(doc, {"name": (str, True, None), "protocol": (str, True, None),
                                   "value": (float, True, None)}, path, "protocol constant")
            return Constant(v["name"], v["value"])

        @hookimpl
        def itra_bench_task_file_protocols():
            return {"constant": from_file}
    """)
    good = tmp_path / "c.yaml"
    good.write_text("name: const\nprotocol: constant\nvalue: 0.25\n")
    res = cli("run", "--model", "pixel", "--plugin", "itra_test_plugin", "--plugin", mod,
              "--tasks", good, "--output", tmp_path / "out", "--no-cache", "--no-progress")
    assert res.code == 0, res
    assert "25.00" in res.out
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: const\nprotocol: constant\nvalu: 1.0\n")
    res = cli("run", "--model", "pixel", "--plugin", "itra_test_plugin", "--plugin", mod,
              "--tasks", bad, "--output", tmp_path / "out", "--no-cache", "--no-progress")
    assert res.code == 2 and "unknown key 'valu' (did you mean 'value'?)" in res.err
    res = cli("run", "--model", "pixel", "--plugin", "itra_test_plugin", "--tasks", good,
              "--output", tmp_path / "out", "--no-cache", "--no-progress")
    assert res.code == 2 and "protocol 'constant'" in res.err
