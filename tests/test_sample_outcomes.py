"""Per-sample outcomes: each kind recomputes its metrics as the protocols and the reference
libraries do, on all samples and on resampled ones; the samples file is checked by its
hash; the runner refuses outcomes that disagree with the reported main score."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.metrics import (
    adjusted_mutual_info_score,
    balanced_accuracy_score,
    normalized_mutual_info_score,
    roc_auc_score,
)

from itra_bench.protocols.classification_metrics import classification_metrics
from itra_bench.protocols.retrieval import retrieval_metrics
from itra_bench.results import iter_records
from itra_bench.sample_outcomes import (
    Metrics,
    OutcomeMismatchError,
    SampleOutcomes,
    check_outcomes,
    compare,
    interval,
    read_outcomes,
    samples_path,
    write_outcomes,
)


def _resampled(outcomes: SampleOutcomes, metric: str, idx: np.ndarray) -> float:
    """The kind's vectorised statistic on one explicit resample of its units."""
    units, stat = outcomes.statistic(metric)
    return float(stat(*(u[idx][None] for u in units))[0])


def test_classification_outcomes_recompute_the_protocol_and_sklearn():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(300, 7, generator=g)
    labels = torch.randint(0, 7, (300,), generator=g)
    metrics = classification_metrics(scores, labels)
    assert isinstance(metrics, Metrics) and metrics.samples.kind == "classification"
    for name in ("acc1", "acc5", "mean_per_class_recall"):
        assert metrics.samples.value(name) == pytest.approx(metrics[name], abs=1e-12)
        check_outcomes(metrics.samples, metrics, name)
    # On a resample (duplicates, some classes possibly absent) the statistic is still
    # sklearn's balanced accuracy of the resampled predictions.
    pred = scores.argmax(1).numpy()
    idx = np.random.default_rng(1).integers(0, 300, 300)
    assert _resampled(metrics.samples, "mean_per_class_recall", idx) == pytest.approx(
        balanced_accuracy_score(labels.numpy()[idx], pred[idx]), abs=1e-12)
    assert _resampled(metrics.samples, "acc1", idx) == pytest.approx(
        float(np.mean(pred[idx] == labels.numpy()[idx])), abs=1e-12)


def test_retrieval_outcomes_resample_images_with_their_captions():
    g = torch.Generator().manual_seed(0)
    images, captions_per_image = 40, [1, 2, 3, 5] * 10
    text_to_image = torch.tensor([i for i, c in enumerate(captions_per_image) for _ in range(c)])
    img = torch.randn(images, 16, generator=g)
    txt = img[text_to_image] + 1.5 * torch.randn(len(text_to_image), 16, generator=g)
    metrics = retrieval_metrics(img, txt, text_to_image)
    outcomes = metrics.samples
    assert outcomes.units == images
    for name, value in metrics.items():
        assert outcomes.value(name) == pytest.approx(value, abs=1e-12), name
    # A resample of images, each with all its captions, evaluated by brute force: the ranks
    # are held fixed (each query keeps its rank against the original gallery).
    idx = np.random.default_rng(3).integers(0, images, images)
    image_rank, text_rank = outcomes.arrays["image_rank"], outcomes.arrays["text_rank"]
    owner = text_to_image.numpy()
    caption_rows = np.concatenate([np.flatnonzero(owner == i) for i in idx])
    expected = {}
    for k in (1, 5, 10):
        expected[f"text_retrieval_recall@{k}"] = np.mean(text_rank[idx] < k)
        expected[f"image_retrieval_recall@{k}"] = np.mean(image_rank[caption_rows] < k)
    expected["mean_recall"] = np.mean(list(expected.values()))
    for name, value in expected.items():
        assert _resampled(outcomes, name, idx) == pytest.approx(value, abs=1e-12), name


def test_correlation_auc_and_clustering_outcomes_equal_the_references():
    rng = np.random.default_rng(0)
    gold = np.round(rng.uniform(0, 5, 200), 1)
    pred = np.round(gold + rng.normal(0, 1, 200), 1)  # rounded: ties on both sides
    corr = SampleOutcomes("correlation", {"pred": pred, "gold": gold})
    assert corr.value("spearman") == pytest.approx(stats.spearmanr(pred, gold)[0], abs=1e-12)
    assert corr.value("pearson") == pytest.approx(stats.pearsonr(pred, gold)[0], abs=1e-12)

    label = (rng.random(300) < 0.4).astype(int)
    score = np.round(rng.random(300) + 0.3 * label, 2)  # ties, as rounded probabilities have
    auc = SampleOutcomes("binary_scores", {"score": score, "label": label})
    assert auc.value("roc_auc") == pytest.approx(roc_auc_score(label, score), abs=1e-12)
    idx = rng.integers(0, 300, 300)
    assert _resampled(auc, "roc_auc", idx) == pytest.approx(
        roc_auc_score(label[idx], score[idx]), abs=1e-12)

    cluster, truth = rng.integers(0, 5, 150), rng.integers(0, 4, 150)
    clus = SampleOutcomes("clustering", {"cluster": cluster, "label": truth})
    assert clus.value("nmi") == pytest.approx(normalized_mutual_info_score(truth, cluster))
    assert clus.value("ami") == pytest.approx(adjusted_mutual_info_score(truth, cluster))


def test_vectorised_nmi_equals_sklearn_on_resamples_and_edge_cases():
    rng = np.random.default_rng(5)
    cluster, truth = rng.integers(0, 6, 120), rng.integers(0, 4, 120)
    cluster[:60] = truth[:60]  # partly informative
    outcomes = SampleOutcomes("clustering", {"cluster": cluster, "label": truth})
    units, stat = outcomes.statistic("nmi")
    idx = rng.integers(0, 120, (50, 120))
    got = stat(*(u[idx] for u in units))
    want = [normalized_mutual_info_score(truth[i], cluster[i]) for i in idx]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    # One class and one cluster: 1 (a perfect match); one cluster only: 0; all identical.
    ones, zeros = np.ones((1, 5), int), np.zeros((1, 5), int)
    assert stat(zeros, ones)[0] == normalized_mutual_info_score(ones[0], zeros[0]) == 1.0
    mixed = np.array([[0, 1, 0, 1, 1]])
    assert stat(zeros, mixed)[0] == normalized_mutual_info_score(mixed[0], zeros[0]) == 0.0


def test_scores_on_different_scales_get_a_bootstrap_p_value_not_a_swap():
    rng = np.random.default_rng(0)
    gold = rng.normal(size=400)
    a = SampleOutcomes("correlation", {"pred": gold + rng.normal(0, 2, 400), "gold": gold})
    # B ranks the pairs far better, on another scale (a swap would mix the two scales).
    b = SampleOutcomes("correlation", {"pred": 100 + 0.01 * (gold + rng.normal(0, 0.3, 400)),
                                       "gold": gold})
    d = compare(a, b, "spearman", resamples=500)
    assert d.difference.low > 0 and d.p_value == pytest.approx(2 / 501)
    same = compare(a, a, "spearman", resamples=500)
    assert same.p_value == 1.0 and same.difference.estimate == 0


def test_means_outcomes_name_their_metrics():
    rr = np.array([1.0, 0.5, 0.0, 1 / 3])
    outcomes = SampleOutcomes("means", {"mrr@10": rr, "recall@50": np.ones(4)})
    assert outcomes.value("mrr@10") == pytest.approx(rr.mean())
    assert outcomes.value("recall@50") == 1.0
    assert outcomes.value("ndcg@10") is None


def test_outcomes_that_disagree_with_the_reported_score_are_caught():
    outcomes = SampleOutcomes("means", {"acc1": np.array([1.0, 0.0, 1.0, 1.0])})
    check_outcomes(outcomes, {"acc1": 0.75}, "acc1")
    with pytest.raises(ValueError, match="give acc1 = 0.75.*reported 0.8"):
        check_outcomes(outcomes, {"acc1": 0.8}, "acc1")
    with pytest.raises(ValueError, match="do not define"):
        check_outcomes(outcomes, {"nmi": 0.8}, "nmi")
    check_outcomes(SampleOutcomes("correlation", {"pred": np.ones(3), "gold": np.arange(3.0)}),
                   {"spearman": float("nan")}, "spearman")  # both undefined: agree


def test_interval_is_seeded_and_holds_the_estimate():
    correct = (np.random.default_rng(0).random(500) < 0.8).astype(float)
    outcomes = SampleOutcomes("means", {"acc1": correct})
    ci = interval(outcomes, "acc1", seed=0)
    assert ci.low <= correct.mean() <= ci.high and ci.resamples == 1000
    assert interval(outcomes, "acc1", seed=0) == ci
    assert interval(outcomes, "nmi") is None


def test_compare_refuses_outcomes_of_other_samples():
    def outcomes(rank: list[int], label: list[int]) -> SampleOutcomes:
        return SampleOutcomes("classification", {"rank": np.array(rank),
                                                 "label": np.array(label)})

    a, b = outcomes([0, 1, 0], [0, 1, 2]), outcomes([0, 0, 0], [0, 1, 1])
    with pytest.raises(OutcomeMismatchError, match="'label' arrays differ"):
        compare(a, b, "acc1")
    c = outcomes([0, 0, 0], [0, 1, 2])
    d = compare(a, c, "acc1", resamples=200)
    assert d.difference.estimate == pytest.approx(1 / 3)  # B - A
    assert (d.b, d.a) == (pytest.approx(2 / 3), 1.0)


def test_samples_file_round_trips_and_is_checked_by_its_hash(tmp_path):
    outcomes = SampleOutcomes("retrieval", {
        "image_rank": np.array([0, 3, 1]), "text_rank": np.array([0, 2]),
        "caption_image": np.array([0, 0, 1]), "ks": np.array([1, 5, 10])})
    result = tmp_path / "retrieval.json"
    meta = write_outcomes(samples_path(result), outcomes)
    assert meta["file"] == "retrieval.samples.npz" and meta["units"] == 2
    record = {"samples": meta}
    back = read_outcomes(result, record)
    assert back.kind == "retrieval"
    for name, array in outcomes.arrays.items():
        np.testing.assert_array_equal(back.arrays[name], array)
    # Another run's file in its place is refused, naming the file.
    write_outcomes(samples_path(result), SampleOutcomes("means", {"acc1": np.ones(2)}))
    with pytest.raises(OutcomeMismatchError, match="retrieval.samples.npz does not match"):
        read_outcomes(result, record)
    samples_path(result).unlink()
    with pytest.raises(OutcomeMismatchError, match="unreadable"):
        read_outcomes(result, record)
    with pytest.raises(OutcomeMismatchError, match="no per-sample outcomes.*--overwrite"):
        read_outcomes(result, {"samples": None})


def test_a_run_stores_outcomes_and_intervals_for_every_demo_task(cli, tmp_path):
    res = cli("run", "--model", "pixel", "--plugin", "itra_test_plugin", "--tasks", "demo",
              "--output", tmp_path / "out", "--no-cache", "--workers", "0", "--no-progress")
    assert res.code == 0, res
    files = sorted((tmp_path / "out").rglob("*.json"))
    results = [f for f in files if not f.name.startswith("leaderboard")]
    assert len(results) == 5
    for path in results:
        record = json.loads(path.read_text())
        ci = record["main_score_interval"]
        assert ci["low"] <= record["main_score_value"] <= ci["high"], path
        assert ci["resamples"] == 1000 and ci["confidence"] == 0.95
        outcomes = read_outcomes(path, record)
        assert outcomes.value(record["main_score"]) == pytest.approx(
            record["main_score_value"], rel=1e-12)
    assert "95% CI" in res.out


def test_runner_refuses_a_task_whose_outcomes_disagree():
    from itra_bench.errors import PluginBugError
    from itra_bench.registry import PluginInfo
    from itra_bench.runner import RunConfig, _main_score_interval
    from itra_bench.task import Task, TaskResult

    task = Task()
    task.name = "liar"
    wrong = TaskResult({"acc1": 0.9}, "acc1", 2,
                       samples=SampleOutcomes("means", {"acc1": np.array([1.0, 0.0])}))
    for resamples in (1000, 0):  # checked with or without an interval
        with pytest.raises(PluginBugError, match="task 'liar' of plugin 'p'.*reported 0.9"):
            _main_score_interval(task, wrong, PluginInfo("p", "dist", "mod", "1"),
                                 RunConfig(model="m", tasks=[], resamples=resamples))


def test_resamples_0_still_checks_and_keeps_the_outcomes(cli, tmp_path):
    res = cli("run", "--model", "pixel", "--plugin", "itra_test_plugin", "--tasks",
              "digits-knn", "--output", tmp_path / "out", "--no-cache", "--workers", "0",
              "--no-progress", "--resamples", "0")
    assert res.code == 0, res
    (path, record), = iter_records(tmp_path / "out")
    assert record["main_score_interval"] is None
    assert read_outcomes(path, record).value("acc1") == record["main_score_value"]
