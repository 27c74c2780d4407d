"""`--format table|csv|markdown|json` of `itra-bench list` and `itra-bench results`, and
terminal tables that never cut a name at any width."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from itra_bench.cli import main
from itra_bench.registry import load_registry
from itra_bench.tables import Column, render, table_widths, to_markdown

PIXEL = ("--plugin", "itra_test_plugin")
MODELS = ("pixel", "pixel:image-only")
TASKS = ("digits-knn", "digits-clustering")


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory) -> Path:
    """A results folder of two tiny models on two demo tasks, from a real run."""
    tmp = tmp_path_factory.mktemp("formats")
    code = main(["run", "--model", MODELS[0], "--model", MODELS[1], *PIXEL,
                 "--tasks", ",".join(TASKS), "--output", str(tmp / "out"),
                 "--cache-dir", str(tmp / "cache"), "--workers", "0", "--no-progress"])
    assert code == 0
    return tmp / "out"


def task_names() -> list[str]:
    return sorted(load_registry().tasks)


def markdown_rows(text: str) -> list[list[str]]:
    """Body rows of a pipe table, split on unescaped pipes."""
    lines = text.strip().splitlines()
    assert lines[1].startswith("|") and set(lines[1]) <= set("|-: ")
    return [[c.strip() for c in line.strip("|").replace("\\|", "\0").split("|")]
            for line in lines[2:]]


def test_list_tasks_csv_json_markdown_hold_every_name_whole(cli):
    names = task_names()
    res = cli("list", "tasks", "--format", "csv")
    assert res.code == 0, res
    rows = list(csv.DictReader(io.StringIO(res.out)))
    assert [r["task"] for r in rows] == names
    assert {"task", "aliases", "protocol", "main_score", "suites", "description",
            "plugin", "distribution"} == set(rows[0])

    res = cli("list", "tasks", "--format", "json")
    objects = json.loads(res.out)
    assert [o["task"] for o in objects] == names
    # Stable keys, in one order for every object; lists stay lists.
    assert all(list(o) == list(objects[0]) for o in objects)
    knn = next(o for o in objects if o["task"] == "digits-knn")
    assert knn["suites"] == ["demo"] and knn["protocol"] == "knn"

    res = cli("list", "tasks", "--format", "markdown")
    body = markdown_rows(res.out)
    assert [r[0] for r in body] == names
    assert "…" not in res.out


@pytest.mark.parametrize("width", ["40", "100", "400"])
def test_list_tasks_table_never_cuts_a_name(cli, monkeypatch, width):
    monkeypatch.setenv("COLUMNS", width)
    res = cli("list", "tasks")
    assert res.code == 0, res
    assert "…" not in res.out
    words = set(res.out.replace("│", " ").replace(",", " ").split())
    for name in task_names():
        assert name in words, f"{name} cut at width {width}"
    assert max(len(line) for line in res.out.splitlines()) <= int(width) or width == "40"


def test_list_suites_and_plugins_json(cli):
    suites = json.loads(cli("list", "suites", "--format", "json").out)
    demo = next(s for s in suites if s["suite"] == "demo")
    assert demo["count"] == 5 and "digits-knn" in demo["tasks"]
    plugins = json.loads(cli("list", "plugins", "--format", "json").out)
    assert {"plugin", "module", "distribution"} == set(plugins[0])


@pytest.mark.slow
def test_results_formats_parse_back_with_every_name(cli, results_dir):
    files = {p: p.read_bytes() for p in (results_dir / "leaderboard.csv",
                                         results_dir / "leaderboard.md")}
    res = cli("results", results_dir, "--format", "csv")
    assert res.code == 0, res
    rows = list(csv.DictReader(io.StringIO(res.out)))
    assert [r["model"] for r in rows] == sorted(MODELS)
    assert set(TASKS) <= set(rows[0])
    assert all(0 < float(r["digits-knn"]) <= 100 for r in rows)

    objects = json.loads(cli("results", results_dir, "--format", "json").out)
    assert [o["model"] for o in objects] == sorted(MODELS)
    assert all(isinstance(o["digits-knn"], float) for o in objects)
    assert all(list(o) == list(objects[0]) for o in objects)

    md = cli("results", results_dir, "--format", "markdown").out
    body = markdown_rows(md)
    assert [r[0] for r in body] == sorted(MODELS)
    header = [c.strip() for c in md.splitlines()[0].strip("|").split("|")]
    assert set(TASKS) <= set(header)
    # The written leaderboard files are the same whatever is printed.
    assert {p: p.read_bytes() for p in files} == files


@pytest.mark.slow
@pytest.mark.parametrize("width", ["30", "40", "400"])
def test_results_table_never_cuts_a_name(cli, results_dir, monkeypatch, width):
    monkeypatch.setenv("COLUMNS", width)
    res = cli("results", results_dir)
    assert res.code == 0, res
    assert "…" not in res.out
    words = {w.removesuffix(":") for w in res.out.replace("│", " ").replace("┃", " ").split()}
    assert {*MODELS, *TASKS} <= words, res.out


LONG = "a-very-long-model-name-that-is-wider-than-the-terminal-itself"


def rows_and_columns() -> tuple[list[dict], list[Column]]:
    columns = [Column("model", whole=True), Column("note"),
               Column("some-task-with-a-long-name", whole=True, align="right")]
    rows = [{"model": LONG, "note": "free text that may wrap between words | pipes",
             "some-task-with-a-long-name": 97.123456},
            {"model": "m2", "note": None, "some-task-with-a-long-name": 5.0}]
    return rows, columns


@pytest.mark.parametrize("width", [20, 40, 80, 200])
def test_render_table_keeps_names_and_numbers_whole(width):
    rows, columns = rows_and_columns()
    console = Console(file=io.StringIO(), width=width, color_system=None)
    render(rows, columns, "table", console, title="t")
    out = console.file.getvalue()
    assert "…" not in out
    words = {w.removesuffix(":") for w in out.replace("│", " ").replace("┃", " ").split()}
    assert {LONG, "m2", "some-task-with-a-long-name", "97.12", "5.00"} <= words, out
    if width == 200:
        assert "│" in out  # wide enough: a real table
    else:
        assert "│" not in out and "model: " + LONG in out  # stacked


def test_table_widths_fit_or_give_way():
    rows, columns = rows_and_columns()
    widths = table_widths(rows, columns, 120)
    assert widths is not None and sum(widths) + 3 * len(widths) + 1 <= 120
    assert widths[0] == len(LONG) and widths[2] == len("some-task-with-a-long-name")
    assert table_widths(rows, columns, 80) is None


def test_markdown_escapes_pipes_and_csv_json_keep_values():
    rows, columns = rows_and_columns()
    md = to_markdown(rows, columns)
    assert "\\| pipes" in md and md.splitlines()[1] == "|---|---|---:|"
    assert [r[1] for r in markdown_rows(md)] == ["free text that may wrap between words "
                                                 "\0 pipes", ""]
    console = Console(file=io.StringIO(), width=20)
    render(rows, columns, "json", console)
    assert json.loads(console.file.getvalue())[0]["some-task-with-a-long-name"] == 97.123456
    console = Console(file=io.StringIO(), width=20)
    render(rows, columns, "csv", console)
    back = list(csv.DictReader(io.StringIO(console.file.getvalue())))
    assert back[0]["model"] == LONG and back[1]["note"] == ""


def test_unknown_format_is_refused_by_the_parser(cli):
    res = cli("list", "tasks", "--format", "xml")
    assert res.code == 2 and "--format" in res.err


@pytest.mark.parametrize("width", ["50", "80"])
def test_check_data_table_never_cuts_a_task_name(cli, monkeypatch, width):
    monkeypatch.setenv("COLUMNS", width)
    res = cli("check-data", "--tasks", "demo")
    assert res.code == 0, res
    for name in ("digits-zeroshot", "digits-linear-probe", "digits-clustering"):
        assert name in res.out, name
