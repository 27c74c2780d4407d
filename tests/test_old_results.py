"""Result files written by an earlier itra-bench still load, collate and compare to the same
numbers: renaming a word of the vocabulary must not orphan anybody's results.

``tests/data/results_v1`` was written by the main of 2026-12-07 (before the vocabulary of
issue 22): two test models (``pixel``, ``pixel:dim16``) on the demo suite, STS13, Wiki
sections (triplets) and two ELEVATER datasets (zero-shot, and a 2-shot linear probe with
seeds 0 and 1), on tiny synthetic data. ``tests/data/results_v1_expected`` holds what that
main's ``results`` and ``compare --format json`` printed and wrote for it, in that main's
words: the expected tables are read through the vocabulary's table of renamed words
(:mod:`itra_bench.vocabulary`), so what is compared is every number, under today's names.
"""

from __future__ import annotations

import csv
import functools
import json
import shutil
from pathlib import Path

import pytest

from itra_bench.results import iter_records
from itra_bench.vocabulary import RENAMED_INTERVAL_ENDS, current_metric

DATA = Path(__file__).parent / "data"
OLD = DATA / "results_v1"
EXPECTED = DATA / "results_v1_expected"


@pytest.fixture
def old_results(tmp_path) -> Path:
    # A copy: collating writes leaderboard files into the folder.
    return Path(shutil.copytree(OLD, tmp_path / "results"))


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return {row[next(iter(row))]: row for row in csv.DictReader(f)}


@functools.cache
def _protocols() -> dict[str, str]:
    """Each task's protocol, as the old result files record it."""
    return {r["task"]: r["protocol"] for _, r in iter_records(OLD)}


def _metric(task_column: str, name: str) -> str:
    """Today's name of the metric or interval end ``name`` of a column of ``task_column``
    (``TASK`` or ``TASK[variant]``) in the old tables."""
    task = task_column.split("[")[0]
    return RENAMED_INTERVAL_ENDS.get(name, current_metric(_protocols().get(task), name))


def _today(table: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """An old leaderboard or ELEVATER summary in today's words: its ``TASK/NAME`` columns
    and its ``metric`` values (of the dataset of the row)."""
    def column(key: str) -> str:
        task, slash, name = key.rpartition("/")
        return f"{task}/{_metric(task, name)}" if slash and not key.startswith("avg:") else key

    out = {}
    for key, row in table.items():
        row = {column(k): v for k, v in row.items()}
        if "metric" in row:
            row["metric"] = _metric(row["dataset"], row["metric"])
        out[key] = row
    return out


def _same_table(got: dict[str, dict[str, str]], want: dict[str, dict[str, str]]) -> None:
    assert got.keys() == want.keys()
    for key, row in want.items():
        assert set(got[key]) == set(row), key
        for column, value in row.items():
            new = got[key][column]
            try:
                assert float(new) == pytest.approx(float(value), rel=1e-12, abs=1e-12), \
                    (key, column)
            except ValueError:
                assert new == value, (key, column)


def test_every_old_result_file_loads():
    records = list(iter_records(OLD))
    assert len(records) == 2 * 13
    assert {r["model"]["name"] for _, r in records} == {"pixel", "pixel:dim16"}


def test_old_results_collate_to_the_same_leaderboard_and_summary(cli, old_results, tmp_path):
    out = tmp_path / "board"
    res = cli("results", old_results, "--out", out, "--format", "csv")
    assert res.code == 0, res
    assert "warning" not in res.err, res.err
    board = _rows(out / "leaderboard.csv")
    # The renamed words are today's: the triplets' accuracy is acc1, interval ends low/high.
    assert {"wikisections-test/acc1", "wikisections-test/low"} <= set(board["pixel"])
    assert not {"wikisections-test/accuracy", "wikisections-test/ci_low"} & set(board["pixel"])
    _same_table(board, _today(_rows(EXPECTED / "leaderboard.csv")))
    _same_table(_rows(out / "elevater_summary.csv"),
                _today(_rows(EXPECTED / "elevater_summary.csv")))


def test_old_results_compare_to_the_same_differences(cli, old_results):
    res = cli("compare", old_results, "--models", "pixel", "pixel:dim16", "--format", "json")
    assert res.code == 0, res
    got = {row["task"]: row for row in json.loads(res.out)}
    want = {}
    for row in json.loads((EXPECTED / "compare.json").read_text()):
        if "main_score" in row and not row["task"].startswith("avg:"):
            row["main_score"] = _metric(row["task"], row["main_score"])
        want[row["task"]] = {RENAMED_INTERVAL_ENDS.get(k, k): v for k, v in row.items()}
    assert got.keys() == want.keys()
    for task, row in want.items():
        assert got[task].keys() == row.keys(), task
        for key, value in row.items():
            assert got[task][key] == (pytest.approx(value, rel=1e-12, abs=1e-12)
                                      if isinstance(value, float) else value), (task, key)


def test_old_results_make_a_report(cli, old_results, tmp_path):
    res = cli("report", old_results, "--output", tmp_path / "report.html")
    assert res.code == 0, res
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "wikisections-test" in html and "pixel:dim16" in html


@pytest.mark.slow
def test_todays_code_gives_the_numbers_the_old_results_hold(cli, tmp_path, monkeypatch):
    """The runs that wrote ``results_v1``, again on the same (seeded) data: every metric, main
    score and interval is what the earlier main stored, renamed words apart."""
    from elevater_data import use_tiny_cards, write_dataset
    from text_data import sts_pairs, wiki_triplets, write_senteval_sts, write_triplets

    from itra_bench.vision_benchmark.cards import find_card

    datasets = ("cifar-10", "voc-2007-classification")
    use_tiny_cards(monkeypatch, datasets, per_class=4)
    root = tmp_path / "data"
    for name in datasets:
        write_dataset(find_card(name), root, per_class=4)
    for k, name in enumerate(("FNWN", "headlines", "OnWN")):
        write_senteval_sts(root / "STS" / "STS13-en-test", name,
                           sts_pairs(10 + 2 * k, seed=30 + k))
    write_triplets(root / "wikipedia-sections" / "test.csv", wiki_triplets(12, seed=3))
    out = tmp_path / "out"
    common = ("--plugin", "itra_test_plugin", "--data-root", root, "--output", out,
              "--cache-dir", tmp_path / "cache", "--workers", "0", "--no-progress")
    for model in ("pixel", "pixel:dim16"):
        for tasks in ((*datasets, "sts13", "wikisections", "demo"),
                      (*datasets, "--mode", "linear_probe", "--shots", "2", "--seeds", "0,1")):
            res = cli("run", "--model", model, "--tasks", *tasks, *common)
            assert res.code == 0, res

    def by_key(folder: Path) -> dict[tuple[str, str, str], dict]:
        return {(r["model"]["name"], r["task"], r["variant"]): r for _, r in iter_records(folder)}

    old, new = by_key(OLD), by_key(out)
    assert old.keys() == new.keys()
    for key, was in old.items():
        now = new[key]
        assert now["main_score"] == was["main_score"], key
        assert now["metrics"].keys() == was["metrics"].keys(), key
        for metric, value in was["metrics"].items():
            assert now["metrics"][metric] == pytest.approx(value, rel=1e-9, abs=1e-12), \
                (key, metric)
        assert now["main_score_value"] == pytest.approx(was["main_score_value"], rel=1e-9)
        assert now["main_score_interval"] == pytest.approx(was["main_score_interval"],
                                                           rel=1e-9), key
        assert now["num_samples"] == was["num_samples"], key
