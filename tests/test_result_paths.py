"""Names that become paths under --output (task names, variant names, model folders): a name
that could leave its folder, or share a folder with another name, is refused before anything
runs, so every result lands in its own model's folder and none is overwritten."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from test_cli_run import make_image_folder

from itra_bench.results import iter_records, model_dir_name

MODELS = ("--model", "pixel", "--model", "pixel:dim8")

#: A plugin of constant-score tasks: from task files (task type `constant`) and from its task
#: hook (NAMES_PLUGIN_TASKS: a JSON list of [name, [variant, ...]]).
PLUGIN = """
    import json
    import os

    from itra_bench import hookimpl
    from itra_bench.task import Task, TaskResult, Variant
    from itra_bench.yaml_tasks import check_fields

    class Constant(Task):
        protocol = "constant"
        main_score = "value"

        def __init__(self, name, variants=("constant",)):
            self.name, self._variants = name, variants

        def variants(self, options):
            return [Variant(v) for v in self._variants]

        def run(self, model, ctx):
            return TaskResult({"value": 0.5}, "value", 1)

    def from_file(doc, path):
        v = check_fields(doc, {"name": (str, True, None), "task_type": (str, True, None)},
                         path, "task type constant")
        return Constant(v["name"])

    @hookimpl
    def itra_bench_task_file_protocols():
        return {"constant": from_file}

    @hookimpl
    def itra_bench_metrics():
        from itra_bench import Metric

        return [Metric("value", "a constant")]

    @hookimpl
    def itra_bench_tasks():
        return [Constant(n, v) for n, v in json.loads(os.environ.get("NAMES_PLUGIN_TASKS", "[]"))]
"""


@pytest.fixture
def plugin(tmp_path, monkeypatch) -> tuple[str, ...]:
    """``--plugin`` arguments of the test model and of the constant-task plugin."""
    folder = tmp_path / "plugin"
    folder.mkdir()
    (folder / "names_plugin.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(folder))
    return ("--plugin", "itra_test_plugin", "--plugin", "names_plugin")


def _run(cli, tmp_path: Path, plugin: tuple[str, ...], *tasks: str | Path,
         models: tuple[str, ...] = MODELS):
    return cli("run", *models, *plugin, "--tasks", *tasks, "--output", tmp_path / "out",
               "--data-root", tmp_path / "data", "--no-cache", "--workers", "0",
               "--no-progress")


def _task_file(folder: Path, file: str, name: str, protocol: str) -> Path:
    path = folder / file
    # A JSON string is a YAML string: the name arrives exactly as written.
    path.write_text(f"name: {json.dumps(name)}\ntask_type: {protocol}\nroot: pets\n"
                    if protocol == "clustering" else
                    f"name: {json.dumps(name)}\ntask_type: {protocol}\n")
    return path


def _written(out: Path) -> list[Path]:
    return sorted(out.rglob("*.json")) if out.exists() else []


UNSAFE = ["..", ".", "a/b", "../x", "/tmp/x", "", ".hidden", "-x", "_x", "a b", "x.", "x" * 121]


@pytest.mark.parametrize("protocol", ["clustering", "constant"])
@pytest.mark.parametrize("name", UNSAFE)
def test_task_files_with_unsafe_names_are_refused_before_anything_runs(cli, tmp_path, plugin,
                                                                       name, protocol):
    make_image_folder(tmp_path / "data" / "pets", splits=("test",))
    task = _task_file(tmp_path, "t.yaml", name, protocol)
    res = _run(cli, tmp_path, plugin, task)
    assert res.code == 2, res
    assert str(task) in res.err and "key 'name'" in res.err and "letters, digits" in res.err
    assert "Traceback" not in res.err
    assert _written(tmp_path / "out") == []


def test_task_names_differing_only_in_case_are_refused_naming_both(cli, tmp_path, plugin):
    upper = _task_file(tmp_path, "upper.yaml", "Foo", "constant")
    lower = _task_file(tmp_path, "lower.yaml", "foo", "constant")
    res = _run(cli, tmp_path, plugin, upper, lower)
    assert res.code == 2, res
    assert "'Foo'" in res.err and "'foo'" in res.err and "case" in res.err
    assert _written(tmp_path / "out") == []


def test_two_models_keep_every_result_in_their_own_folder(cli, tmp_path, plugin):
    tasks = [_task_file(tmp_path, f"{n}.yaml", n, "constant") for n in ("Foo", "bar.v2", "x_1")]
    models = ("--model", "pixel:../../x.pt", "--model", "pixel:..", "--model", "pixel:dim8")
    res = _run(cli, tmp_path, plugin, *tasks, models=models)
    assert res.code == 0, res
    out = tmp_path / "out"
    found = list(iter_records(out))
    assert len(found) == 9
    folders = {}
    for path, record in found:
        assert path.relative_to(out).parts[1:] == (record["task"], "constant.json")
        folders.setdefault(record["model"]["name"], set()).add(path.parent.parent)
    assert all(len(f) == 1 for f in folders.values()) and len(set.union(*folders.values())) == 3


@pytest.mark.parametrize("name", ["x", "../../x.pt", "..", ".", "/", "", "a/.."])
@pytest.mark.parametrize("fingerprint", ["0123456789abcdef", "../../..", "/etc/x", ".."])
def test_a_model_folder_is_one_folder_inside_the_output(name, fingerprint):
    folder = model_dir_name(name, fingerprint)
    assert folder not in ("", ".", "..") and "/" not in folder and "\\" not in folder
    assert (Path("/out") / folder).parent == Path("/out")


@pytest.mark.parametrize("name", ["..", "a/b", "", "Bad Name"])
def test_a_plugin_task_with_an_unsafe_name_is_a_plugin_bug(cli, plugin, monkeypatch, name):
    monkeypatch.setenv("NAMES_PLUGIN_TASKS", json.dumps([[name, ["constant"]]]))
    res = cli("list", "tasks", *plugin)
    assert res.code == 3, res
    assert "'names_plugin'" in res.err and repr(name) in res.err and "letters, digits" in res.err
    assert "Traceback" not in res.err


@pytest.mark.parametrize("variants", [["../x"], ["..", "ok"], ["a/b"], ["seed", "seed"],
                                      ["Seed", "seed"]])
def test_plugin_variants_that_are_unsafe_or_repeated_are_a_plugin_bug(cli, tmp_path, plugin,
                                                                      monkeypatch, variants):
    monkeypatch.setenv("NAMES_PLUGIN_TASKS", json.dumps([["const-task", variants]]))
    res = _run(cli, tmp_path, plugin, "const-task")
    assert res.code == 3, res
    assert "'names_plugin'" in res.err and "const-task" in res.err and "variant" in res.err
    assert "Traceback" not in res.err
    assert _written(tmp_path / "out") == []


def test_a_result_folder_holding_another_tasks_result_is_never_overwritten(cli, tmp_path,
                                                                            plugin):
    """On a case-insensitive file system `Foo` and `foo` are one folder: a later run of `foo`
    (simulated here by renaming the folder) must not replace the stored `Foo`."""
    upper = _task_file(tmp_path, "upper.yaml", "Foo", "constant")
    models = ("--model", "pixel")
    assert _run(cli, tmp_path, plugin, upper, models=models).code == 0
    (stored, record), = iter_records(tmp_path / "out")
    stored.parent.rename(stored.parent.with_name("foo"))
    kept = stored.parent.with_name("foo") / stored.name
    before = kept.read_bytes()
    lower = _task_file(tmp_path, "lower.yaml", "foo", "constant")
    res = _run(cli, tmp_path, plugin, lower, models=models)
    assert res.code == 2, res
    assert "'Foo'" in res.err and "'foo'" in res.err and str(kept) in res.err
    assert kept.read_bytes() == before
