"""Per-sample outcomes of ELEVATER results: every mode and metric records outcomes that
recompute ELEVATER's number on the stored (6-decimal) probabilities exactly, ties included;
the vectorised 11-point mAP of resampled rows equals ELEVATER's; the terminal summary never
cuts a dataset name."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from elevater_data import use_tiny_cards, write_dataset
from rich.console import Console

from itra_bench.results import iter_records
from itra_bench.sample_outcomes import check_outcomes, read_outcomes
from itra_bench.vision_benchmark.cards import find_card
from itra_bench.vision_benchmark.metrics import elevater_metric
from itra_bench.vision_benchmark.submission import file_probabilities
from itra_bench.vision_benchmark.task import score_predictions

# One dataset per ELEVATER metric: accuracy, mean_per_class, roc_auc, 11point_mAP.
DATASETS = ("cifar-10", "oxford-iiit-pets", "hateful-memes", "voc-2007-classification")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("elevater")
    for name in DATASETS:
        write_dataset(find_card(name), root, per_class=3)
    return root


@pytest.fixture(autouse=True)
def _tiny_cards(monkeypatch):
    use_tiny_cards(monkeypatch, DATASETS, per_class=3)


def _run(cli, tmp_path, data_root, *extra):
    res = cli("run", "--model", "pixel", "--plugin", "itra_test_plugin", "--tasks", *DATASETS,
              "--data-root", data_root, "--output", tmp_path / "out", "--no-cache",
              "--workers", "0", "--no-progress", "--resamples", "200", *extra)
    assert res.code == 0, res
    return {(r["task"], r["variant"]): (Path(p), r) for p, r in iter_records(tmp_path / "out")
            if r["protocol"] == "elevater"}


def _check_record(path: Path, rec: dict) -> None:
    """The samples file is the one the JSON names, its outcomes give the main score, which is
    ELEVATER's metric of the prediction file, and the interval brackets it."""
    meta = rec["samples"]
    assert isinstance(meta, dict), f"{rec['task']}: no per-sample outcomes"
    npz = path.with_name(meta["file"])
    assert hashlib.sha256(npz.read_bytes()).hexdigest() == meta["sha256"]
    value = rec["main_score_value"]
    ci = rec["main_score_interval"]
    assert ci["low"] <= value <= ci["high"]
    outcomes = read_outcomes(path, rec)
    assert outcomes.units == rec["num_samples"]
    assert abs(outcomes.value(rec["main_score"]) - value) <= 1e-12
    # The outcomes' labels are the test targets: ELEVATER's metric of the file against them
    # is the reported value.
    stored = np.asarray(json.loads(Path(rec["details"]["predictions"]).read_text())
                        ["predictions"][0])
    labels = outcomes.arrays["labels" if outcomes.kind == "multilabel" else "label"]
    assert elevater_metric(rec["details"]["elevater_metric"], stored, labels) == value


def test_zeroshot_results_carry_outcomes_that_recompute_the_main_score(cli, tmp_path,
                                                                        data_root):
    recs = _run(cli, tmp_path, data_root)
    assert {task for task, _ in recs} == set(DATASETS)
    kinds = {task: rec["samples"] and rec["samples"]["kind"]
             for (task, _), (_, rec) in recs.items()}
    assert kinds == {"cifar-10": "classification", "oxford-iiit-pets": "classification",
                     "hateful-memes": "binary_scores",
                     "voc-2007-classification": "multilabel"}
    for path, rec in recs.values():
        _check_record(path, rec)


@pytest.mark.slow
def test_few_shot_linear_probe_results_carry_outcomes(cli, tmp_path, data_root):
    # Without the hyper-parameter search: the outcomes do not depend on how lr was chosen.
    recs = _run(cli, tmp_path, data_root, "--mode", "linear_probe", "--shots", "2",
                "--seeds", "0,1", "--no-tuning", "--lr", "0.05", "--l2", "0.0001")
    assert len(recs) == 2 * len(DATASETS)
    for path, rec in recs.values():
        assert rec["variant"].startswith("linear_probe-2shot-seed")
        _check_record(path, rec)


@pytest.mark.slow
def test_finetune_result_carries_outcomes(cli, tmp_path, data_root):
    out = tmp_path / "out"
    res = cli("run", "--model", "demo:random", "--tasks", "cifar-10", "--data-root", data_root,
              "--mode", "finetune", "--shots", "1", "--seeds", "0", "--no-tuning", "--lr",
              "0.01", "--l2", "0.0001", "--task-option", "epochs=1",
              "--task-option", "final_epochs=2", "--workers", "0", "--no-progress",
              "--output", out, "--no-cache", "--resamples", "100")
    assert res.code == 0, res
    [(path, rec)] = list(iter_records(out))
    _check_record(Path(path), rec)


# --- ties the 6-decimal file creates ---------------------------------------------------------


def _scored(name: str, probs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    card = find_card(name)
    metrics = score_predictions(card, probs, targets)
    samples = getattr(metrics, "samples", None)
    assert samples is not None, "score_predictions gives no per-sample outcomes"
    main = {"accuracy": "acc1", "mean_per_class": "mean_per_class_recall_present"}.get(
        card.metric, card.metric)
    expected = elevater_metric(card.metric, file_probabilities(probs), targets)
    assert metrics[main] == expected
    check_outcomes(samples, metrics, main)
    assert abs(samples.value(main) - expected) <= 1e-12
    return metrics


def test_accuracy_outcomes_follow_elevaters_argmax_on_ties_the_file_creates():
    # Row 0: classes 1 and 2 differ by 2e-7 and tie at 6 decimals; ELEVATER's argmax then
    # picks class 1, so the target 2 is a miss although it scored higher.
    probs = np.array([[0.2, 0.3999999, 0.4000001],
                      [0.2, 0.4000001, 0.3999999],
                      [0.5, 0.25, 0.25],
                      [0.25, 0.25, 0.5],
                      [0.3333334, 0.3333333, 0.3333333]])
    targets = np.array([2, 1, 2, 2, 0])
    stored = file_probabilities(probs)
    assert elevater_metric("accuracy", probs, targets) == 0.8
    assert elevater_metric("accuracy", stored, targets) == 0.6
    _scored("cifar-10", np.pad(probs, ((0, 0), (0, 7))), targets)


def test_accuracy_outcomes_rank_a_nan_first_as_argmax_does():
    from itra_bench.vision_benchmark.outcomes import elevater_outcomes

    probs = np.array([[0.1, np.nan, 0.9], [np.nan, 0.2, np.nan], [0.3, 0.3, 0.4]])
    for targets in (np.array([1, 0, 2]), np.array([2, 2, 0])):
        outcomes = elevater_outcomes("accuracy", probs, targets)
        assert outcomes.value("acc1") == elevater_metric("accuracy", probs, targets)


def test_mean_per_class_outcomes_drop_absent_columns_and_follow_ties():
    # Class 3 has no test sample and its column wins rows 0 and 1: ELEVATER drops it and
    # scores their argmax over classes 0-2. Row 2 ties classes 0 and 1 at 6 decimals.
    probs = np.array([[0.1, 0.2, 0.05, 0.65],
                      [0.3, 0.1, 0.0, 0.6],
                      [0.4000001, 0.3999999, 0.2, 0.0],
                      [0.1, 0.1, 0.8, 0.0],
                      [0.7, 0.1, 0.2, 0.0]])
    targets = np.array([1, 0, 1, 2, 1])
    metrics = _scored("oxford-iiit-pets", np.pad(probs, ((0, 0), (0, 33))), targets)
    assert metrics["mean_per_class_recall_present"] == pytest.approx((1 + 1 / 3 + 1) / 3)


def test_roc_auc_outcomes_equal_sklearn_with_ties_from_rounding():
    rng = np.random.default_rng(0)
    positive = rng.integers(0, 100, size=300) / 100 + rng.uniform(-4e-7, 4e-7, size=300)
    probs = np.stack([1 - positive, positive], axis=1)
    targets = (rng.random(300) < positive).astype(np.int64)
    stored = file_probabilities(probs)
    assert len(np.unique(stored[:, 1])) < len(np.unique(probs[:, 1]))  # the file ties scores
    metrics = _scored("hateful-memes", probs, targets)
    assert metrics["roc_auc"] != metrics["roc_auc_unrounded"]
    from sklearn.metrics import roc_auc_score

    from itra_bench.outcome_kinds import _roc_auc

    assert abs(_roc_auc(stored[:, 1], targets) - roc_auc_score(targets, stored[:, 1])) <= 1e-12


def test_multilabel_outcomes_give_the_11point_map_of_the_file_with_its_ties():
    probs = np.array([[0.1000004, 0.8999996], [0.1000001, 0.8999999], [0.05, 0.95]])
    targets = np.array([[1, 1], [0, 1], [0, 1]])
    card = find_card("voc-2007-classification")
    padded = np.pad(probs, ((0, 0), (0, card.num_classes - 2)))
    metrics = _scored("voc-2007-classification", padded,
                      np.pad(targets, ((0, 0), (0, card.num_classes - 2))))
    assert metrics["11point_mAP"] == pytest.approx((1 + 6 / 11) / 2)
    assert metrics.samples.arrays["scores"].tolist() == file_probabilities(padded).tolist()


def test_torch_inputs_are_accepted():
    probs = torch.softmax(torch.randn(12, 10, generator=torch.Generator().manual_seed(0)), 1)
    metrics = _scored("cifar-10", probs.numpy(), np.arange(12) % 10)
    assert metrics.samples.kind == "classification"


# --- 11-point mAP of bootstrap resamples, vectorised ----------------------------------------


def _resampled_case(seed: int, n: int = 60, classes: int = 5):
    rng = np.random.default_rng(seed)
    scores = file_probabilities(rng.dirichlet(np.ones(classes) * 0.3, size=n))
    scores[: n // 3, 0] = 0.25  # long runs of ties
    labels = (rng.random((n, classes)) < 0.15).astype(np.int8)
    labels[:, -1] = 0
    labels[3, -1] = 1  # a class with one positive: often absent from a resample
    idx = rng.integers(0, n, size=(40, n))
    return scores, labels, idx


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_resampled_11point_map_equals_elevater_on_every_resample(seed):
    from itra_bench.vision_benchmark.resampled_map import resampled_eleven_point_map

    scores, labels, idx = _resampled_case(seed)
    expected = [elevater_metric("11point_mAP", scores[i], labels[i]) for i in idx]
    got = resampled_eleven_point_map(scores[idx], labels[idx])
    assert got.shape == (len(idx),)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    # One set of samples (no resample axis is a resample of one).
    assert abs(resampled_eleven_point_map(scores[None], labels[None])[0]
               - elevater_metric("11point_mAP", scores, labels)) <= 1e-12


def test_resampled_11point_map_general_scores_and_no_positives():
    from itra_bench.vision_benchmark.resampled_map import resampled_eleven_point_map

    scores, labels, idx = _resampled_case(3)
    signed = np.round(np.log(scores + 1e-3), 3)  # negative, with ties; -0.0 and 0.0 tie
    signed[0, 1], signed[1, 1] = -0.0, 0.0
    expected = [elevater_metric("11point_mAP", signed[i], labels[i]) for i in idx]
    np.testing.assert_allclose(resampled_eleven_point_map(signed[idx], labels[idx]), expected,
                               rtol=0, atol=1e-12)
    none = np.zeros_like(labels)
    assert resampled_eleven_point_map(scores[None], none[None]).tolist() == [
        elevater_metric("11point_mAP", scores, none)]
    with_nan = scores.copy()
    with_nan[2, 0] = np.nan
    rows = idx[:5]
    got = resampled_eleven_point_map(with_nan[rows], labels[rows])
    expected = [elevater_metric("11point_mAP", with_nan[i], labels[i]) for i in rows]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


# --- the terminal summary never cuts a dataset name ------------------------------------------


def test_summary_table_keeps_whole_dataset_names_on_a_narrow_console():
    from itra_bench.vision_benchmark.summary import SummaryBlock, describe, print_summary

    long_name = "fgvc-aircraft-2013b-variants102"
    block = SummaryBlock("a-model-with-a-long-name", "linear_probe", 5, {
        long_name: ("mean_per_class_recall_present", {0: 0.5, 1: 0.25}),
        "cifar-10": ("acc1", {0: 0.9, 1: 0.8})})
    for show in (lambda c: [c.print(r) for r in describe([block])],
                 lambda c: print_summary([block], c)):
        for width in (100, 40):
            buf = io.StringIO()
            console = Console(file=buf, width=width, color_system=None)
            show(console)
            text = buf.getvalue()
            assert long_name in text and "mean_per_class_recall_present" in text, text
            assert "37.50 ± 17.68" in text and "average" in text, text
