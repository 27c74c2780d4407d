"""`itra-bench compare`: per-task paired differences from the stored per-sample outcomes,
Holm's marker, suite means, and refusals when the two results are not comparable."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from itra_bench.results import iter_records

PIXEL = ("--plugin", "itra_test_plugin")


@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> Path:
    """Three pixel models on the demo suite, run once for the module: `pixel` and
    `pixel:dim32` are the same weights under two names; `pixel:dim8` is a different
    (weaker) projection."""
    from itra_bench.cli import main

    out = tmp_path_factory.mktemp("compare") / "out"
    code = main(["run", *PIXEL, "--model", "pixel", "--model", "pixel:dim32", "--model",
                 "pixel:dim8", "--tasks", "demo", "--output", str(out), "--no-cache",
                 "--workers", "0", "--no-progress", "--resamples", "200"])
    assert code == 0
    return out


@pytest.fixture
def results(stored, tmp_path) -> Path:
    """A private copy of the stored results (tests alter files in it)."""
    return Path(shutil.copytree(stored, tmp_path / "results"))


def _compare(cli, folder: Path, a: str, b: str, *extra: str) -> list[dict]:
    res = cli("compare", folder, "--models", a, b, "--format", "json", "--resamples", "300",
              *extra)
    assert res.code == 0, res
    return json.loads(res.out)


def test_the_same_weights_under_two_names_differ_nowhere(cli, results):
    rows = _compare(cli, results, "pixel", "pixel:dim32")
    tasks = [r for r in rows if not r["task"].startswith("avg:")]
    assert {r["task"] for r in tasks} == {"digits-zeroshot", "digits-linear-probe",
                                          "digits-knn", "digits-clustering", "digits-retrieval"}
    for r in tasks:
        assert r["difference"] == 0 and r["p_value"] == 1.0 and r["significant"] is False
        assert r["low"] == r["high"] == 0


def test_differences_equal_the_stored_scores_and_holm_marks_small_p(cli, results):
    rows = _compare(cli, results, "pixel", "pixel:dim8")
    stored = {(r["model"]["name"], r["task"]): r["main_score_value"]
              for _, r in iter_records(results)}
    tasks = [r for r in rows if not r["task"].startswith("avg:")]
    for r in tasks:
        a, b = stored[("pixel", r["task"])], stored[("pixel:dim8", r["task"])]
        assert r["a"] == pytest.approx(100 * a) and r["b"] == pytest.approx(100 * b)
        assert r["difference"] == pytest.approx(100 * (b - a))
        assert r["low"] <= r["difference"] <= r["high"]
        assert 0 < r["p_value"] <= 1
    # Holm at 0.05 over m tasks: the smallest p must be under 0.05 / m, and so on.
    ps = sorted((r["p_value"], r["significant"]) for r in tasks)
    m, rejecting = len(ps), True
    for rank, (p, marked) in enumerate(ps):
        rejecting = rejecting and p <= 0.05 / (m - rank)
        assert marked == rejecting
    suite, = [r for r in rows if r["task"].startswith("avg:demo")]
    assert suite["difference"] == pytest.approx(np.mean([r["difference"] for r in tasks]))
    assert suite["low"] <= suite["difference"] <= suite["high"]


def test_the_table_names_both_models_and_marks_significance(cli, results):
    res = cli("compare", results, "--models", "pixel", "pixel:dim8", "--resamples", "300")
    assert res.code == 0, res
    assert "B = pixel:dim8 vs A = pixel" in " ".join(res.out.split())
    for name in ("digits-zeroshot", "digits-retrieval", "avg:demo (5 tasks)", "Holm"):
        assert name in res.out


def _record(results: Path, model: str, task: str) -> tuple[Path, dict]:
    (path, record), = [(p, r) for p, r in iter_records(results)
                       if r["model"]["name"] == model and r["task"] == task]
    return path, record


def test_results_on_other_data_are_refused_naming_the_task(cli, results):
    path, record = _record(results, "pixel:dim8", "digits-knn")
    record["data"]["identity"] = "another-dataset"
    path.write_text(json.dumps(record))
    res = cli("compare", results, "--models", "pixel", "pixel:dim8")
    assert res.code == 2 and "Traceback" not in res.err
    assert "task digits-knn" in res.err and "different data" in res.err


def test_a_replaced_samples_file_is_refused(cli, results):
    path, record = _record(results, "pixel:dim8", "digits-zeroshot")
    samples = path.with_name(record["samples"]["file"])
    other = _record(results, "pixel", "digits-zeroshot")
    samples.write_bytes(other[0].with_name(other[1]["samples"]["file"]).read_bytes())
    res = cli("compare", results, "--models", "pixel", "pixel:dim8")
    assert res.code == 2
    assert "digits-zeroshot" in res.err and "does not match the hash" in res.err


def test_a_result_without_outcomes_says_how_to_get_them(cli, results):
    path, record = _record(results, "pixel", "digits-knn")
    record["samples"] = None
    path.write_text(json.dumps(record))
    res = cli("compare", results, "--models", "pixel", "pixel:dim8")
    assert res.code == 2 and "no per-sample outcomes" in res.err and "--overwrite" in res.err


def test_unknown_or_ambiguous_models_are_named(cli, results):
    res = cli("compare", results, "--models", "pixel", "nope")
    assert res.code == 2 and "'nope'" in res.err and "pixel:dim8" in res.err
    res = cli("compare", results, "--models", "pixel", "pixel")
    assert res.code == 2 and "same model twice" in res.err


def _point_samples_at(results: Path, file: object, monkeypatch) -> tuple[Path, list[Path]]:
    """Make pixel:dim8's digits-knn result name ``file`` as its samples file; returns the
    result's path and the list of every path read from now on."""
    path, record = _record(results, "pixel:dim8", "digits-knn")
    record["samples"]["file"] = file
    path.write_text(json.dumps(record))
    read: list[Path] = []
    real_read_bytes = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: read.append(self)
                        or real_read_bytes(self))
    return path, read


def _never_read(path: Path, file: object, read: list[Path]) -> None:
    if isinstance(file, str) and "\0" not in file:
        assert (path.parent / file).resolve() not in {p.resolve() for p in read}


@pytest.mark.parametrize("file", ["../../../../etc/passwd", "/etc/passwd", "..", ".", "",
                                  "x/..", "a\x00b", 7])
def test_a_samples_file_outside_the_results_folder_is_refused_and_never_read(
        cli, results, monkeypatch, file):
    path, read = _point_samples_at(results, file, monkeypatch)
    res = cli("compare", results, "--models", "pixel", "pixel:dim8")
    assert res.code == 2, res
    assert "Traceback" not in res.err and "task digits-knn" in res.err and str(path) in res.err
    _never_read(path, file, read)


def test_results_and_report_never_follow_a_samples_file(cli, results, tmp_path, monkeypatch):
    file = "../../../../etc/passwd"
    path, read = _point_samples_at(results, file, monkeypatch)
    assert cli("results", results).code == 0
    assert cli("report", results, "-o", tmp_path / "report.html").code == 0
    _never_read(path, file, read)
