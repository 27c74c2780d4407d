"""ELEVATER end to end: synthetic datasets in the real on-disk formats (index + zip, COCO
JSON + zip; multiclass and multilabel) through `itra-bench run`, `results` and `submit`."""

from __future__ import annotations

import json
import zipfile

import pytest
from elevater_data import use_tiny_cards, write_dataset

from itra_bench.results import iter_records
from itra_bench.vision_benchmark.cards import find_card
from itra_bench.vision_benchmark.linear_probe import ELEVATER_LR_GRID

# index multiclass, index multilabel, COCO multiclass, COCO binary (roc_auc)
DATASETS = ("cifar-10", "voc-2007-classification", "resisc45_clip", "hateful-memes")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("elevater")
    for name in DATASETS:
        write_dataset(find_card(name), root, per_class=4)
    return root


@pytest.fixture(autouse=True)
def _tiny_cards(monkeypatch):
    # The cards state ELEVATER's image counts; the tiny data has 4 images per class.
    use_tiny_cards(monkeypatch, DATASETS, per_class=4)


def run(cli, tmp_path, data_root, *extra):
    return cli("run", "--model", "pixel", "--plugin", "itra_test_plugin", "--tasks", *DATASETS,
               "--data-root", data_root, "--output", tmp_path / "out", "--cache-dir",
               tmp_path / "cache", "--workers", "0", "--no-progress", *extra)


def elevater_records(out):
    return [r for _, r in iter_records(out) if r["protocol"] == "elevater"]


def test_zeroshot_runs_every_format_and_writes_prediction_files(cli, tmp_path, data_root):
    res = run(cli, tmp_path, data_root)
    assert res.code == 0, res
    recs = {r["task"]: r for r in elevater_records(tmp_path / "out")}
    assert set(recs) == set(DATASETS)
    assert recs["voc-2007-classification"]["main_score"] == "11point_mAP"
    assert recs["hateful-memes"]["main_score"] == "roc_auc"
    assert recs["cifar-10"]["num_samples"] == 40
    for name, rec in recs.items():
        card = find_card(name)
        pred = json.loads(open(rec["details"]["predictions"]).read())
        assert pred["dataset_name"] == name and pred["n_shot"] == 0
        assert pred["rnd_seeds"] == [0] and pred["num_trainable_params"] == 0
        probs = pred["predictions"]
        assert len(probs) == 1 and len(probs[0]) == rec["num_samples"]
        assert all(len(row) == card.num_classes for row in probs[0])
        assert abs(sum(probs[0][0]) - 1) < 1e-4  # softmax probabilities, 6 decimals


def test_linear_probe_few_shot_seeds_summary_and_submission(cli, tmp_path, data_root):
    res = run(cli, tmp_path, data_root, "--mode", "linear_probe", "--shots", "2",
              "--seeds", "0,1")
    assert res.code == 0, res
    recs = elevater_records(tmp_path / "out")
    assert len(recs) == 2 * len(DATASETS)
    cifar = [r for r in recs if r["task"] == "cifar-10"]
    assert {r["variant"] for r in cifar} == {"linear_probe-2shot-seed0",
                                             "linear_probe-2shot-seed1"}
    assert all(r["details"]["num_train_images"] == 20 for r in cifar)
    # ELEVATER's probe (SGD, lr <= 0.1, 1 training image per class after its 20 % validation
    # carve-out) does not fit 2 shots perfectly, but the colour classes lift it far above the
    # 10 % of chance.
    assert all(r["main_score_value"] > 0.5 for r in cifar)
    assert all(r["details"]["lr"] in ELEVATER_LR_GRID for r in cifar)

    # A rerun computes nothing new.
    again = run(cli, tmp_path, data_root, "--mode", "linear_probe", "--shots", "2",
                "--seeds", "0,1")
    assert again.code == 0 and again.out.count("exists") == 2 * len(DATASETS)

    res = cli("results", tmp_path / "out")
    assert res.code == 0, res
    summary = (tmp_path / "out" / "elevater_summary.md").read_text()
    assert "pixel: linear_probe, 2-shot" in summary and "average" in summary
    assert "± " in summary  # spread over the two seeds

    out_zip = tmp_path / "submission.zip"
    res = cli("submit", tmp_path / "out", "-o", out_zip, "--variant", "linear_probe-2shot")
    assert res.code == 0, res
    with zipfile.ZipFile(out_zip) as zf:
        assert zf.namelist() == ["all_predictions.json"]
        doc = json.loads(zf.read("all_predictions.json"))
    entries = {e["dataset_name"]: e for e in doc["data"]}
    assert set(entries) == set(DATASETS)
    for name, e in entries.items():
        card = find_card(name)
        assert sorted(e["rnd_seeds"]) == [0, 1] and e["n_shot"] == 2
        assert len(e["predictions"]) == 2
        n_test = sum(1 for _ in e["predictions"][0])
        assert all(len(row) == card.num_classes for seed in e["predictions"] for row in seed)
        assert n_test == len(e["predictions"][1])
        assert e["num_trainable_params"] > 0


def test_submit_refuses_mixed_shot_counts(cli, tmp_path, data_root):
    assert run(cli, tmp_path, data_root).code == 0
    assert run(cli, tmp_path, data_root, "--mode", "linear_probe", "--shots", "2").code == 0
    res = cli("submit", tmp_path / "out", "-o", tmp_path / "s.zip")
    assert res.code == 2 and "disagree on 'n_shot'" in res.err


def test_missing_datasets_stop_before_compute_unless_skip_missing(cli, tmp_path, data_root):
    res = cli("run", "--model", "pixel", "--plugin", "itra_test_plugin", "--tasks", "elevater",
              "--data-root", data_root, "--output", tmp_path / "out", "--no-cache",
              "--workers", "0", "--no-progress")
    assert res.code == 2
    assert "caltech-101" in res.err and "mnist" in res.err and "--skip-missing" in res.err
    assert not list((tmp_path).rglob("*.json"))
    res = cli("run", "--model", "pixel", "--plugin", "itra_test_plugin", "--tasks", "elevater",
              "--data-root", data_root, "--output", tmp_path / "out", "--no-cache",
              "--workers", "0", "--no-progress", "--skip-missing")
    assert res.code == 0, res
    assert {r["task"] for r in elevater_records(tmp_path / "out")} == set(DATASETS)


def test_check_data_lists_ready_and_missing_with_files(cli, data_root):
    res = cli("check-data", "--tasks", "elevater", "--data-root", data_root)
    assert res.code == 1
    assert "ready" in res.out and "missing" in res.out
    assert "caltech_101_20211007" in res.out.replace("\n", "").replace(" ", "").replace("│", "")


def test_no_tuning_uses_the_given_hyper_parameters(cli, tmp_path, data_root):
    res = cli("run", "--model", "pixel", "--plugin", "itra_test_plugin", "--tasks", "cifar10",
              "--data-root", data_root, "--output", tmp_path / "out", "--no-cache",
              "--workers", "0", "--no-progress", "--mode", "linear_probe", "--shots", "-1",
              "--no-tuning", "--lr", "0.05", "--l2", "0.0001")
    assert res.code == 0, res
    [rec] = elevater_records(tmp_path / "out")
    assert rec["variant"] == "linear_probe-full-seed0"
    assert rec["details"]["lr"] == 0.05 and rec["details"]["l2"] == 0.0001
    assert rec["details"]["num_train_images"] == 40
    res = cli("run", "--model", "pixel", "--plugin", "itra_test_plugin", "--tasks", "cifar10",
              "--data-root", data_root, "--output", tmp_path / "out", "--mode", "linear_probe",
              "--no-tuning", "--lr", "0.05")
    assert res.code == 2 and "--no-tuning needs both --lr and --l2" in res.err


def test_interrupted_suite_keeps_finished_datasets_and_resumes(cli, tmp_path, data_root,
                                                               monkeypatch):
    import itra_bench.vision_benchmark.task as elevater

    real = elevater.elevater_metric
    calls = {"n": 0}

    def interrupt_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(elevater, "elevater_metric", interrupt_on_third)
    res = run(cli, tmp_path, data_root)
    assert res.code == 130 and "results written so far are kept" in res.err
    done = {r["task"] for r in elevater_records(tmp_path / "out")}
    assert len(done) >= 1 and len(done) < len(DATASETS)

    monkeypatch.setattr(elevater, "elevater_metric", real)
    res = run(cli, tmp_path, data_root)
    assert res.code == 0, res
    assert res.out.count("exists") == len(done)
    assert {r["task"] for r in elevater_records(tmp_path / "out")} == set(DATASETS)


def test_one_shot_probe_samples_two_as_elevater_does(cli, tmp_path, data_root):
    res = cli("run", "--model", "pixel", "--plugin", "itra_test_plugin", "--tasks", "cifar10",
              "--data-root", data_root, "--output", tmp_path / "out", "--no-cache",
              "--workers", "0", "--no-progress", "--mode", "linear_probe", "--shots", "1")
    assert res.code == 0, res
    [rec] = elevater_records(tmp_path / "out")
    assert rec["variant"] == "linear_probe-1shot-seed0"
    assert rec["details"]["num_train_images"] == 20  # 2 per class: 1 trains, 1 validates
    pred = json.loads(open(rec["details"]["predictions"]).read())
    assert pred["n_shot"] == 1
