"""A suite's average is over the members fixed where the suite is declared (a plugin, or a
suite file), never over whichever task files a results folder happens to hold: `results`,
the leaderboard files and `compare` show it only when every member has a result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli_run import make_image_folder

PIXEL = ("--plugin", "itra_test_plugin")
PROTOCOLS = ("zeroshot", "knn", "clustering")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("suite-data")
    make_image_folder(root / "pets")
    return root


def _task_files(folder: Path, suite: str = "my-suite") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for protocol in PROTOCOLS:
        path = folder / f"pets-{protocol}.yaml"
        path.write_text(f"name: pets-{protocol}\nprotocol: {protocol}\nroot: pets\nk: 3\n"
                        f"suites: [{suite}]\n")
        paths.append(path)
    return paths


def _run(cli, out: Path, data: Path, *tasks: object, model: str = "pixel") -> None:
    res = cli("run", "--model", model, *PIXEL, "--tasks", *tasks, "--data-root", data,
              "--output", out, "--no-cache", "--workers", "0", "--no-progress",
              "--resamples", "50")
    assert res.code == 0, res


def _board(cli, out: Path) -> list[dict]:
    res = cli("results", out, *PIXEL, "--format", "json")
    assert res.code == 0, res
    return json.loads(res.out)


def _suite_columns(rows: list[dict]) -> set[str]:
    return {k for row in rows for k in row if k.startswith("avg:")}


def test_undeclared_task_file_suite_gets_no_average(cli, tmp_path, data):
    """Task files naming a suite that no plugin or suite file declares: one folder with one
    of them, another with all three; neither shows an average under the suite's name."""
    files = _task_files(tmp_path / "tasks")
    _run(cli, tmp_path / "one", data, files[0])
    _run(cli, tmp_path / "three", data, *files)
    for out in ("one", "three"):
        assert not _suite_columns(_board(cli, tmp_path / out)), out
        assert "avg:my-suite" not in (tmp_path / out / "leaderboard.md").read_text()


def test_suite_file_declares_members_and_average_needs_them_all(cli, tmp_path, data):
    files = _task_files(tmp_path / "tasks")
    suite = tmp_path / "tasks" / "my-suite.yaml"
    suite.write_text("suite: my-suite\ndescription: three views of pets\n"
                     f"tasks: [{', '.join(f.name for f in files)}]\n")
    _run(cli, tmp_path / "all", data, suite)
    rows = _board(cli, tmp_path / "all")
    assert _suite_columns(rows) == {"avg:my-suite"}
    scores = [r for r in json.loads(cli("results", tmp_path / "all", *PIXEL, "--format",
                                        "json").out)][0]
    members = [scores[f"pets-{p}"] for p in PROTOCOLS]
    assert scores["avg:my-suite"] == pytest.approx(sum(members) / 3)
    # One member's task file alone, in another folder: its results record the declared
    # members only when run through the suite file; alone it declares nothing.
    _run(cli, tmp_path / "part", data, files[0])
    _run(cli, tmp_path / "part", data, suite, model="pixel:dim8")
    board = _board(cli, tmp_path / "part")
    by_model = {r["model"]: r for r in board}
    assert by_model["pixel"].get("avg:my-suite") in (None, "")
    assert by_model["pixel:dim8"]["avg:my-suite"] is not None


def test_task_file_cannot_join_an_installed_suite(cli, tmp_path, data):
    (path,) = _task_files(tmp_path / "tasks", suite="demo")[:1]
    res = cli("run", "--model", "pixel", *PIXEL, "--tasks", path, "--data-root", data,
              "--output", tmp_path / "out", "--no-cache", "--workers", "0", "--no-progress")
    assert res.code == 2, res
    assert "demo" in res.err and str(path) in res.err.replace("\n", "")


def test_compare_shows_no_average_of_a_partial_suite(cli, tmp_path):
    out = tmp_path / "out"
    res = cli("run", "--model", "pixel", "--model", "pixel:dim8", *PIXEL, "--tasks",
              "digits-knn", "--output", out, "--no-cache", "--workers", "0", "--no-progress",
              "--resamples", "50")
    assert res.code == 0, res
    res = cli("compare", out, "--models", "pixel", "pixel:dim8", "--format", "json",
              "--resamples", "50", *PIXEL)
    assert res.code == 0, res
    assert not [r for r in json.loads(res.out) if r["task"].startswith("avg:")], res.out
