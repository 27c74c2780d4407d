"""Several models in one `itra-bench run`: the model x task grid, one folder per model, the
leaderboard at the end."""

from __future__ import annotations

from itra_bench.results import iter_records

PIXEL = ("--plugin", "itra_test_plugin")


def test_repeated_model_and_models_file_run_the_grid(cli, tmp_path):
    models = tmp_path / "models.txt"
    models.write_text("# the image-only variant\npixel:image-only\n\npixel  # again: once\n")
    res = cli("run", "--model", "pixel", "--models-file", models, *PIXEL, "--tasks",
              "digits-knn,digits-clustering", "--output", tmp_path / "out", "--cache-dir",
              tmp_path / "cache", "--workers", "0", "--no-progress")
    assert res.code == 0, res
    grid = {(r["model"]["name"], r["task"]) for _, r in iter_records(tmp_path / "out")}
    assert grid == {(m, t) for m in ("pixel", "pixel:image-only")
                    for t in ("digits-knn", "digits-clustering")}
    folders = {p.parent.parent.name for p, _ in iter_records(tmp_path / "out")}
    assert len(folders) == 2
    assert "itra-bench leaderboard" in res.out and "pixel:image-only" in res.out


def test_models_file_errors_name_the_file(cli, tmp_path):
    empty = tmp_path / "none.txt"
    empty.write_text("# nothing\n")
    res = cli("run", "--models-file", empty, "--tasks", "demo", *PIXEL)
    assert res.code == 2 and "none.txt" in res.err and "no model spec" in res.err
    res = cli("run", "--models-file", tmp_path / "missing.txt", "--tasks", "demo", *PIXEL)
    assert res.code == 2 and "missing.txt" in res.err
    res = cli("run", "--tasks", "demo", *PIXEL)
    assert res.code == 2 and "--model" in res.err
    res = cli("run", "--model", "pixel", "--model", "demo:random", "--pretrained", "w.pt",
              "--tasks", "demo", *PIXEL)
    assert res.code == 2 and "--pretrained" in res.err
