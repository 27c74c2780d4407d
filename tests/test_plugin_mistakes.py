"""Plugin authors' mistakes: each is reported as the plugin's bug (exit 3, one message naming
the plugin and what it must do instead), never as a traceback; and the plugin features
whose absence pushed authors into them (global ``--plugin``, data shipped beside a task
file, ``--eval-tasks`` checked up front)."""

from __future__ import annotations

import shutil
import sys
import textwrap
from pathlib import Path

import pytest
from train_data import digits_csv, train_run

TASK = ["--tasks", "digits-zeroshot", "--workers", "0", "--no-progress"]
ONE_EPOCH = ["--epochs", "1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """64 rows: two steps of 32."""
    return digits_csv(tmp_path_factory.mktemp("digits"), 64)


def write_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, body: str
                 ) -> list[str]:
    """Write the plugin module ``name`` into ``tmp_path``, importable; returns its
    ``--plugin`` flags."""
    folder = tmp_path / "plugins"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.py").write_text(textwrap.dedent(body))
    monkeypatch.syspath_prepend(str(folder))
    # Another test's module of the same name must not be the one imported.
    monkeypatch.delitem(sys.modules, name, raising=False)
    return ["--plugin", name]


def assert_plugin_bug(res, plugin: str, *phrases: str) -> None:
    """Exit 3, one ``plugin bug`` message naming ``plugin`` and the ``phrases``, no
    traceback."""
    err = " ".join(res.err.split())
    assert res.code == 3, res
    assert "plugin bug:" in err and repr(plugin) in err, res
    for phrase in phrases:
        assert phrase in err, res
    assert "Traceback" not in res.err, res


# -- 1. a model builder that raises ------------------------------------------------------------

BUILDERS = """
    import itra_bench
    from itra_bench.errors import UserError
    from itra_bench.model import ModelBuilder

    def _raise(rest, options):
        raise KeyError(rest)

    def _refuse(rest, options):
        raise UserError(f"refused {rest!r} on purpose")

    @itra_bench.hookimpl
    def itra_bench_model_builders():
        return [ModelBuilder("myscheme", _raise), ModelBuilder("refusing", _refuse)]
"""


def test_a_builder_that_raises_is_its_plugins_bug_in_itra_bench(cli, tmp_path, monkeypatch):
    plugin = write_plugin(tmp_path, monkeypatch, "raising_builder", BUILDERS)
    res = cli("run", "--model", "myscheme:x", *plugin, *TASK, "--output", tmp_path / "out")
    assert_plugin_bug(res, "raising_builder", "model scheme 'myscheme'", "raised KeyError")


def test_a_builder_that_raises_is_its_plugins_bug_in_itra_train(train, data, tmp_path,
                                                               monkeypatch):
    plugin = write_plugin(tmp_path, monkeypatch, "raising_builder", BUILDERS)
    res = train_run(train, data, tmp_path, *plugin, *ONE_EPOCH,
                    "--image-tower", "myscheme:x")
    assert_plugin_bug(res, "raising_builder", "model scheme 'myscheme'", "raised KeyError")


def test_a_builders_user_error_stays_the_users(cli, tmp_path, monkeypatch):
    plugin = write_plugin(tmp_path, monkeypatch, "raising_builder", BUILDERS)
    res = cli("run", "--model", "refusing:y", *plugin, *TASK, "--output", tmp_path / "out")
    assert res.code == 2 and "refused 'y' on purpose" in res.err, res
    assert "plugin bug" not in res.err, res


# -- 2. a hook that returns the wrong type -----------------------------------------------------

@pytest.mark.parametrize("returned, got", [
    ("ModelBuilder('single', _build)", "ModelBuilder"),
    ("['demo2']", "str"),
])
def test_a_hook_returning_the_wrong_type_is_its_plugins_bug(cli, tmp_path, monkeypatch,
                                                           returned, got):
    plugin = write_plugin(tmp_path, monkeypatch, "wrong_return", f"""
        import itra_bench
        from itra_bench.model import ModelBuilder

        def _build(rest, options):
            raise AssertionError

        @itra_bench.hookimpl
        def itra_bench_model_builders():
            return {returned}
    """)
    res = cli("list", "models", *plugin)
    assert_plugin_bug(res, "wrong_return", "itra_bench_model_builders",
                      "must return a list of ModelBuilder", got)


# -- 3. a loss that breaks its contract --------------------------------------------------------

LOSSES = """
    import itra_bench
    import torch
    from torch import nn
    from itra_bench.losses import LossSpec

    class Raising(nn.Module):
        def __init__(self, **kwargs):
            super().__init__()

        def forward(self, student, teacher, logit_scale):
            raise IndexError("no such row")

    class Vector(nn.Module):
        def __init__(self, **kwargs):
            super().__init__()
            self.w = nn.Parameter(torch.ones(()))

        def forward(self, student, teacher, logit_scale):
            return (student * teacher).sum(dim=1) * self.w

    class NoKwargs(nn.Module):
        def __init__(self):
            super().__init__()

        def forward(self, student, teacher, logit_scale):
            return (student * teacher).sum()

    @itra_bench.hookimpl
    def itra_bench_losses():
        return [LossSpec("raising", Raising), LossSpec("vector", Vector),
                LossSpec("nokwargs", NoKwargs)]
"""


@pytest.mark.parametrize("loss, phrases", [
    ("raising", ("loss 'raising'", "raised IndexError: no such row")),
    ("vector", ("loss 'vector'", "must return a scalar tensor or a dict of scalar tensors")),
    ("nokwargs", ("loss 'nokwargs'", "student_dim", "**kwargs")),
])
def test_a_loss_breaking_its_contract_is_its_plugins_bug(train, data, tmp_path, monkeypatch,
                                                         loss, phrases):
    plugin = write_plugin(tmp_path, monkeypatch, "bad_losses", LOSSES)
    res = train_run(train, data, tmp_path, *plugin, *ONE_EPOCH, "--loss", loss)
    assert_plugin_bug(res, "bad_losses", *phrases)


# -- 4. --plugin before the subcommand ---------------------------------------------------------

COMMANDS = """
    import itra_bench
    from itra_bench.commands import Command

    def _hello(args, registry, console):
        print("hello from the plugin")
        return 0

    def _own(argv):
        print(f"own argv {argv}")
        return 0

    @itra_bench.hookimpl
    def itra_bench_commands():
        return [Command("hello", "says hello", run=_hello),
                Command("own", "owns its command line", main=_own)]
"""


@pytest.mark.parametrize("argv, expected", [
    (["hello"], "hello from the plugin"),
    (["own", "x"], "own argv"),
    (["list", "plugins"], "global_flags"),
])
def test_plugin_flags_work_before_the_subcommand(cli, tmp_path, monkeypatch, argv, expected):
    plugin = write_plugin(tmp_path, monkeypatch, "global_flags", COMMANDS)
    res = cli(*plugin, *argv)
    assert res.code == 0 and expected in res.out, res


# -- 5. data shipped beside a plugin's task file -----------------------------------------------

def test_a_task_file_can_name_data_beside_itself(cli, tmp_path, monkeypatch):
    # The task file and its data move together (a plugin's package), wherever --data-root is.
    shipped = tmp_path / "shipped"
    (shipped / "tiny" / "test" / "cat").mkdir(parents=True)
    (shipped / "tiny" / "test" / "dog").mkdir(parents=True)
    from PIL import Image

    for i, cls in enumerate(("cat", "dog")):
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(shipped / "tiny" / "test" / cls / "a.png")
    task = shipped / "tiny.yaml"
    task.write_text("name: tiny-beside\nprotocol: zeroshot\nroot: tiny\n"
                    "paths_relative_to: task-file\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    res = cli("check-data", "--tasks", task, "--data-root", elsewhere)
    assert res.code == 0 and "ready" in res.out, res
    moved = tmp_path / "moved"
    shutil.copytree(shipped, moved)
    res = cli("check-data", "--tasks", moved / "tiny.yaml", "--data-root", elsewhere)
    assert res.code == 0 and str(moved / "tiny" / "test") in res.out.replace("\n", ""), res


def test_paths_relative_to_takes_two_values(cli, tmp_path):
    task = tmp_path / "t.yaml"
    task.write_text("name: t\nprotocol: zeroshot\nroot: x\npaths_relative_to: here\n")
    res = cli("check-data", "--tasks", task)
    assert res.code == 2 and "paths_relative_to" in res.err and "task-file" in res.err, res


# -- 6. --eval-tasks checked before training ---------------------------------------------------

def test_unknown_eval_task_is_refused_before_training(train, data, tmp_path):
    res = train_run(train, data, tmp_path, *ONE_EPOCH, "--eval-tasks", "nosuch")
    assert res.code == 2 and "unknown task 'nosuch'" in res.err, res
    assert not (tmp_path / "run" / "checkpoints").exists(), res


def test_eval_task_without_data_is_refused_before_training(train, data, tmp_path):
    task = tmp_path / "t.yaml"
    task.write_text("name: absent\nprotocol: zeroshot\nroot: absent\n")
    res = train_run(train, data, tmp_path, *ONE_EPOCH, "--eval-tasks", task)
    assert res.code == 2 and "data not found" in res.err, res
    assert not (tmp_path / "run" / "checkpoints").exists(), res
