"""A task type is a dataclass: its fields are the keys of its task files (types, defaults,
help), read by one function with the messages the hand-written schemas gave; built-in cards
are found by looking in their folder."""

from __future__ import annotations

import json
import shutil
import textwrap
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from itra_bench.errors import UserError
from itra_bench.registry import load_registry
from itra_bench.task import Task, TaskResult
from itra_bench.task_fields import KeyRow, file_key, from_file, key_rows, not_from_file, read_keys
from itra_bench.task_identity import task_definition
from itra_bench.yaml_tasks import TASK_FILE_KEYS, check_fields, load_task_file


@dataclass(kw_only=True)
class Echo(Task):
    """A task type of a plugin: its score is a number its task file gives."""

    main_score: str = "value"
    value: float = file_key(help="the score this task reports")  # the new field: one line

    def run(self, model, ctx):
        return TaskResult({"value": self.value}, "value", 1)


def test_a_new_field_of_a_task_type_is_a_key_of_its_files_with_no_other_code(tmp_path):
    path = tmp_path / "echo.yaml"
    path.write_text("name: echo\ntask_type: echo\nvalue: 1\nsuites: [mine]\n")
    task = load_task_file(path, {"echo": Echo})
    assert isinstance(task, Echo) and task.name == "echo"
    assert task.value == 1.0 and isinstance(task.value, float)  # an integer, as a float
    assert task.suites == ("mine",)  # a YAML list, stored as the field's tuple
    assert task.task_type == "echo" and task.description == ""
    path.write_text("name: echo\ntask_type: echo\n")
    with pytest.raises(UserError, match=r"echo.yaml: missing required key 'value' for "
                                        "task type echo"):
        load_task_file(path, {"echo": Echo})


def test_a_plugin_declares_a_task_type_as_its_protocol(cli, tmp_path, monkeypatch):
    (tmp_path / "echo_plugin.py").write_text(textwrap.dedent("""
        from dataclasses import dataclass

        from itra_bench import hookimpl
        from itra_bench.task import Task, TaskResult
        from itra_bench.task_fields import file_key

        @dataclass(kw_only=True)
        class Echo(Task):
            main_score: str = "value"
            value: float = file_key(help="the score")

            def run(self, model, ctx):
                return TaskResult({"value": self.value}, "value", 1)

        @hookimpl
        def itra_bench_task_file_protocols():
            return {"echo": Echo}

        @hookimpl
        def itra_bench_metrics():
            from itra_bench import Metric

            return [Metric("value", "the score the task file gives")]
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    task = tmp_path / "e.yaml"
    task.write_text("name: echo\ntask_type: echo\nvalue: 0.25\n")
    res = cli("run", "--model", "pixel", "--plugin", "itra_test_plugin", "--plugin",
              "echo_plugin", "--tasks", task, "--output", tmp_path / "out", "--no-cache",
              "--no-progress")
    assert res.code == 0, res
    assert "25.00" in res.out
    task.write_text("name: echo\ntask_type: echo\nvalu: 1\n")
    res = cli("run", "--model", "pixel", "--plugin", "itra_test_plugin", "--plugin",
              "echo_plugin", "--tasks", task, "--output", tmp_path / "out", "--no-cache",
              "--no-progress")
    assert res.code == 2 and "unknown key 'valu' (did you mean 'value'?)" in res.err


@dataclass(kw_only=True)
class Kinds(Task):
    """One field of each type a task file can give."""

    text: str = file_key(help="a string")
    count: int = file_key(3, help="an integer")
    ratio: float = file_key(0.5, help="a number")
    flag: bool = file_key(False, help="a boolean")
    words: list[str] = file_key(default_factory=list, help="strings, kept as a list")
    labels: tuple[str, ...] = file_key((), help="strings, kept as a tuple")
    either: int | str = file_key(2, help="an index or a name")
    maybe: str | None = file_key(None, help="a string, or nothing")
    derived: str = not_from_file("")


#: The same keys as a hand-written schema, as check_fields took them.
KINDS_SCHEMA = {"name": (str, True, None), "task_type": (str, True, None),
                "description": (str, False, ""), "suites": (list, False, []),
                "text": (str, True, None), "count": (int, False, 3),
                "ratio": ((int, float), False, 0.5), "flag": (bool, False, False),
                "words": (list, False, []), "labels": (list, False, []),
                "either": ((int, str), False, 2), "maybe": (str, False, None)}
GOOD = {"name": "k", "task_type": "kinds", "text": "t"}


@pytest.mark.parametrize("change", [
    {"txt": "t"}, {"extra": 1}, {"text": None}, {"name": None}, {"task_type": None},
    {"count": "3"}, {"count": 2.5}, {"count": True}, {"ratio": "x"}, {"ratio": False},
    {"flag": 1}, {"words": "a"}, {"words": [1]}, {"labels": ["a", 2]}, {"either": 1.5},
    {"either": [1]}, {"maybe": 3}, {"text": ["t"]}, {"suites": "s"},
])
def test_a_task_type_refuses_a_file_with_the_messages_of_check_fields(tmp_path, change):
    doc = {**GOOD, **change}
    path = tmp_path / "k.yaml"
    with pytest.raises(UserError) as want:
        check_fields(doc, KINDS_SCHEMA, path, "task type kinds")
    with pytest.raises(UserError) as got:
        read_keys(Kinds, doc, path, "task type kinds")
    assert str(got.value) == str(want.value)


def test_a_task_type_fills_defaults_and_converts_values(tmp_path):
    task = from_file(Kinds, {**GOOD, "ratio": 2, "labels": ["a"], "words": ["b"],
                             "either": "col", "maybe": None, "count": None},
                     tmp_path / "k.yaml", "task type kinds")
    assert (task.ratio, task.labels, task.words, task.either) == (2.0, ("a",), ["b"], "col")
    assert (task.count, task.flag, task.maybe, task.derived) == (3, False, None, "")
    assert check_fields(GOOD, KINDS_SCHEMA, Path("k"), "x").keys() == {
        row.key for row in key_rows(Kinds)}


def test_key_rows_document_the_keys_of_a_task_type():
    rows = key_rows(Kinds)
    assert [r.key for r in rows] == list(KINDS_SCHEMA)
    by_key = {r.key: r for r in rows}
    assert by_key["name"] == KeyRow("name", "str", None, True, by_key["name"].help)
    assert by_key["name"].help and by_key["task_type"].help
    assert by_key["count"] == KeyRow("count", "int", 3, False, "an integer")
    assert by_key["ratio"] == KeyRow("ratio", "float", 0.5, False, "a number")
    assert by_key["words"] == KeyRow("words", "list[str]", [], False,
                                     "strings, kept as a list")
    assert by_key["either"].type == "int | str" and by_key["maybe"].type == "str"
    assert "derived" not in by_key and "main_score" not in by_key and "aliases" not in by_key


def test_the_keys_of_the_built_in_protocols_are_their_fields():
    from itra_bench.tasks.sts import plugin as sts
    from itra_bench.tasks.wordsim import plugin as wordsim

    assert [r.key for r in key_rows(sts.STSTask)] == [
        "name", "task_type", "description", "suites", "format", "root", "files", "encoding",
        "definition", "semeval_set"]
    assert [r.key for r in key_rows(wordsim.WordSimTask)] == [
        "name", "task_type", "description", "suites", "file", "separator", "score_column",
        "template", "encoding"]
    assert [r.key for r in key_rows(TASK_FILE_KEYS["knn"])] == [
        "name", "task_type", "description", "suites", "paths_relative_to", "root", "split",
        "train_split", "val_split", "classnames", "templates", "k", "weighting", "temperature"]
    assert [r.key for r in key_rows(TASK_FILE_KEYS["retrieval"])] == [
        "name", "task_type", "description", "suites", "paths_relative_to", "file", "separator",
        "img_key", "caption_key"]
    assert all(r.help for r in key_rows(sts.STSTask))


def test_a_redeclared_field_keeps_what_its_base_says_of_files():
    @dataclass(kw_only=True)
    class Sub(Kinds):
        main_score: str = "other"  # Task's: no key
        count: int = 7  # a key still, with its help

    rows = {r.key: r for r in key_rows(Sub)}
    assert "main_score" not in rows and rows["count"] == KeyRow("count", "int", 7, False,
                                                                "an integer")


def test_a_field_no_file_can_give_must_be_marked():
    @dataclass(kw_only=True)
    class Bad(Task):
        weights: list[float] = field(default_factory=list)

    with pytest.raises(TypeError, match=r"Bad\.weights: a task file cannot give"):
        key_rows(Bad)


def test_a_mapping_key_is_taken_as_it_is(tmp_path):
    # The code that reads the file checks what a mapping holds (ELEVATER's card splits).
    @dataclass(frozen=True)
    class Layout:
        splits: dict[str, Any] = file_key(help="split -> files")
        extra: dict[str, Any] = file_key(default_factory=dict)

    path = tmp_path / "t.yaml"
    values = read_keys(Layout, {"splits": {"test": {"index": "t.txt"}}}, path, "a layout")
    assert values == {"splits": {"test": {"index": "t.txt"}}, "extra": {}}
    assert [(r.key, r.type, r.required) for r in key_rows(Layout)] == [
        ("splits", "dict", True), ("extra", "dict", False)]
    with pytest.raises(UserError) as err:
        read_keys(Layout, {"splits": ["test"]}, path, "a layout")
    assert str(err.value) == f"{path}: key 'splits' must be a dict, got list (['test'])"


def test_a_plain_class_still_subclasses_task():
    class Plain(Task):
        name = "plain"
        protocol = "p"
        main_score = "m"

    task = Plain()
    assert (task.name, task.protocol, task.main_score, task.suites) == ("plain", "p", "m", ())
    assert task_definition(task) == ""  # its settings live in its code


#: The built-in tasks of the benchmarks' cards (tasks/<benchmark>/cards/), as `itra-bench list
#: tasks` listed them before the cards were found by looking in the folder.
CARD_TASKS = {
    "coco-karpathy-5k", "coco2017-retrieval", "msmarco-passage-dev", "rg65", "sickr",
    "sickr-mteb", "simlex999", "snli-ve-transfer", "snli-ve-zeroshot", "sts12", "sts13",
    "sts14", "sts15", "sts16", "stsb", "tapc-vqav2-val", "wikisections-test", "wordsim353"}
CARD_PLUGINS = ("coco", "msmarco", "snli_ve", "sts", "tapc", "wikisections", "wordsim")


def _plugin(benchmark: str) -> types.ModuleType:
    import importlib

    return importlib.import_module(f"itra_bench.tasks.{benchmark}.plugin")


def _card_tasks() -> dict[str, list[str]]:
    return {m: [t.name for t in _plugin(m).itra_bench_tasks()] for m in CARD_PLUGINS}


def test_every_card_in_its_folder_is_a_built_in_task_of_its_plugin():
    found = _card_tasks()
    names = [n for tasks in found.values() for n in tasks]
    assert sorted(names) == sorted(CARD_TASKS)
    for benchmark, tasks in found.items():
        cards = sorted(_plugin(benchmark).CARDS_DIR.glob("*.yaml"))
        assert len(tasks) == len(cards) > 0, benchmark
    assert CARD_TASKS <= set(load_registry().tasks)


def test_a_card_dropped_in_the_folder_is_a_built_in_task(tmp_path, monkeypatch):
    sts = _plugin("sts")
    folder = Path(shutil.copytree(sts.CARDS_DIR, tmp_path / "cards"))
    card = (folder / "sts13.yaml").read_text().replace("name: sts13", "name: sts13-again")
    (folder / "sts13-again.yaml").write_text(card)
    monkeypatch.setattr(sts, "CARDS_DIR", folder)
    found = _card_tasks()
    assert "sts13-again" in found["sts"]
    assert sorted(n for names in found.values() for n in names) == sorted(
        CARD_TASKS | {"sts13-again"})


def test_a_card_of_another_benchmark_in_the_folder_is_refused(tmp_path):
    # A benchmark's folder holds its own cards only: one of another protocol is a mistake.
    from itra_bench.tasks import load_cards

    sts, wordsim = _plugin("sts"), _plugin("wordsim")
    folder = Path(shutil.copytree(sts.CARDS_DIR, tmp_path / "cards"))
    shutil.copy(wordsim.CARDS_DIR / "rg65.yaml", folder)
    with pytest.raises(UserError, match=r"rg65\.yaml: task type 'wordsim'"):
        load_cards(folder, sts.itra_bench_task_file_protocols())


def test_task_definitions_are_those_that_stored_results_record():
    # Built-in tasks whose results tests/data/results_v1 holds (written before the task
    # types were dataclasses): a rerun over them finds the same definition, not a changed one.
    # The triplets' main score was renamed since (accuracy -> acc1, the vocabulary's): that
    # field apart, their definition is the stored one.
    from dataclasses import replace

    old = Path(__file__).parent / "data" / "results_v1" / "pixel-f5429ddd"
    registry = load_registry()
    checked = 0
    for name in ("digits-zeroshot", "digits-linear-probe", "digits-knn", "digits-clustering",
                 "digits-retrieval", "sts13", "wikisections-test"):
        task = registry.tasks[name].item
        if name == "wikisections-test":
            assert task.main_score == "acc1"
            task = replace(task, main_score="accuracy")
        for path in (old / name).glob("*.json"):
            stored = json.loads(path.read_text())["data"]["task_definition"]
            assert task_definition(task) == stored, name
            checked += 1
    assert checked == 7


@pytest.mark.parametrize("protocol", ["knn", "wds"])
def test_a_refused_number_is_shown_as_the_file_wrote_it(tmp_path, protocol):
    # The value read is a float (0.0); the message quotes the file's 0.
    from itra_bench.tasks.wds.plugin import wds_task

    path = tmp_path / "t.yaml"
    path.write_text(f"name: t\ntask_type: {protocol}\nroot: r\ntemperature: 0\n")
    with pytest.raises(UserError) as err:
        load_task_file(path, {"wds": wds_task})
    assert str(err.value) == f"{path}: key 'temperature' must be a positive number, got 0"
