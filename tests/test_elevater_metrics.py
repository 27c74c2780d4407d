"""ELEVATER metrics agree with vision-evaluation's evaluators; few-shot sampling as ELEVATER."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from itra_bench.vision_benchmark.few_shot import elevater_train_val_split, sample_few_shot
from itra_bench.vision_benchmark.metrics import elevater_metric, zeroshot_probabilities

v_eval = pytest.importorskip("vision_evaluation.evaluators")


def _reference(name: str, probs: np.ndarray, targets: np.ndarray) -> float:
    """ELEVATER's vision_benchmark/evaluation/metric.py, on vision-evaluation's evaluators."""
    if name == "accuracy":
        evaluator = v_eval.TopKAccuracyEvaluator(1)
        evaluator.add_predictions(predictions=probs, targets=targets)
        return evaluator.get_report()["accuracy_top1"]
    if name == "mean_per_class":
        evaluator = v_eval.BalancedAccuracyScoreEvaluator()
    elif name == "11point_mAP":
        evaluator = v_eval.MeanAveragePrecisionNPointsEvaluator(11)
    else:
        evaluator = v_eval.RocAucEvaluator()
        evaluator.add_predictions(probs, targets)
        return evaluator.get_report()["roc_auc"]
    evaluator.add_predictions(probs, targets)
    return evaluator.get_report()[evaluator._get_id()]


def _probs(rng: np.random.Generator, n: int, c: int, quantise: bool) -> np.ndarray:
    logits = rng.normal(size=(n, c))
    if quantise:
        logits = np.round(logits)  # many exact ties, within and across rows
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return probs.astype(np.float32)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("quantise", [False, True])
def test_multiclass_metrics_match_vision_evaluation(seed: int, quantise: bool) -> None:
    rng = np.random.default_rng(seed)
    n, c = 300, 12
    probs = _probs(rng, n, c, quantise)
    # Classes 3 and 7 never occur in the targets.
    targets = rng.choice([k for k in range(c) if k not in (3, 7)], size=n)
    for name in ("accuracy", "mean_per_class", "11point_mAP"):
        ours = elevater_metric(name, probs, targets)
        assert ours == pytest.approx(_reference(name, probs, targets), abs=1e-6), name
    # Tensor inputs give the same numbers.
    assert elevater_metric("accuracy", torch.from_numpy(probs), torch.from_numpy(targets)) == (
        pytest.approx(_reference("accuracy", probs, targets), abs=1e-6)
    )


def test_mean_per_class_drops_absent_class_columns() -> None:
    # Sample 0's argmax is class 2, which has no target sample: dropped with its column,
    # the argmax becomes class 0 and the sample counts as correct.
    probs = np.array([[0.3, 0.1, 0.6], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1]])
    targets = np.array([0, 1, 1])
    assert elevater_metric("mean_per_class", probs, targets) == pytest.approx(0.75)
    assert _reference("mean_per_class", probs, targets) == pytest.approx(0.75)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("quantise", [False, True])
def test_multilabel_map_matches_vision_evaluation(seed: int, quantise: bool) -> None:
    rng = np.random.default_rng(100 + seed)
    n, c = 200, 9
    probs = _probs(rng, n, c, quantise)
    targets = (rng.random((n, c)) < 0.25).astype(np.int64)
    targets[:, 4] = 0  # a class with no positive sample
    ours = elevater_metric("11point_mAP", probs, targets)
    assert ours == pytest.approx(_reference("11point_mAP", probs, targets), abs=1e-6)


def test_eleven_point_map_hand_computed() -> None:
    # One class, scores ranked: pos, neg, pos, neg, pos. P = 3 positives.
    # Curve points (recall, precision): (1/3, 1), (1/3, 1/2), (2/3, 2/3), (2/3, 1/2), (1, 3/5),
    # plus (0, 1). Interpolated precision at t = 1.0: 3/5; t = 0.9..0.7: 3/5 (only recall 1
    # reaches them); t = 0.6..0.4 (0.6, 0.5, 0.3999..): 2/3; t = 0.2999..: 1 (recall 1/3 >= t)
    # ... t = 0.0: 1. So 4 x 3/5 + 3 x 2/3 + 4 x 1 over 11 points.
    scores = np.array([[0.9], [0.8], [0.7], [0.6], [0.5]])
    targets = np.array([[1], [0], [1], [0], [1]])
    expected = (4 * 3 / 5 + 3 * 2 / 3 + 4 * 1.0) / 11
    assert elevater_metric("11point_mAP", scores, targets) == pytest.approx(expected, abs=1e-12)
    assert _reference("11point_mAP", scores, targets) == pytest.approx(expected, abs=1e-12)


def test_eleven_point_map_groups_tied_scores() -> None:
    # All scores tie: one curve point (recall 1, precision 1/2) plus (recall 0, precision 1).
    # Thresholds 1.0 .. 0.0999 see only the recall-1 point (1/2); t = 0 sees both (1).
    scores = np.full((4, 1), 0.5)
    targets = np.array([[1], [0], [1], [0]])
    expected = (10 * 0.5 + 1.0) / 11
    assert elevater_metric("11point_mAP", scores, targets) == pytest.approx(expected)
    assert _reference("11point_mAP", scores, targets) == pytest.approx(expected)


@pytest.mark.parametrize("seed", range(3))
def test_roc_auc_matches_vision_evaluation_binary(seed: int) -> None:
    rng = np.random.default_rng(seed)
    probs = _probs(rng, 150, 2, quantise=seed == 2)
    targets = rng.integers(0, 2, size=150)
    ours = elevater_metric("roc_auc", probs, targets)
    assert ours == pytest.approx(_reference("roc_auc", probs, targets), abs=1e-6)
    # ELEVATER scores the positive-class column.
    from sklearn.metrics import roc_auc_score

    assert ours == pytest.approx(roc_auc_score(targets, probs[:, 1]))


def test_metric_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="unknown ELEVATER metric"):
        elevater_metric("top5", np.ones((2, 2)), np.array([0, 1]))
    with pytest.raises(ValueError, match="targets must lie in"):
        elevater_metric("accuracy", np.ones((2, 2)), np.array([0, 2]))
    with pytest.raises(ValueError, match="rows"):
        elevater_metric("accuracy", np.ones((3, 2)), np.array([0, 1]))
    assert elevater_metric("mean-per-class", np.eye(2), np.array([0, 1])) == 1.0


def test_zeroshot_probabilities() -> None:
    image = torch.tensor([[3.0, 4.0], [0.0, -2.0]])
    classifier = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    probs = zeroshot_probabilities(image, classifier)
    expected = torch.softmax(100 * torch.tensor([[0.6, 0.8], [0.0, -1.0]]), dim=-1)
    torch.testing.assert_close(probs, expected)
    assert torch.allclose(probs.sum(dim=1), torch.ones(2))


# ---- few-shot sampling -------------------------------------------------------------------


def _reference_few_shot(labels: list[list[int]], k: int, seed: int, num_classes: int) -> list[int]:
    """vision_datasets DatasetManifest.sample_few_shot_subset, written out on label lists."""
    images = list(range(len(labels)))
    random.Random(seed).shuffle(images)
    counts, negatives, chosen = [0] * num_classes, 0, []
    for i in images:
        if not labels[i]:
            if negatives < k:
                negatives += 1
                chosen.append(i)
            continue
        own = [counts[c] for c in labels[i]]
        if min(own) >= k:
            continue
        if min(own) <= k / 2 or max(own) <= 1.5 * k:
            chosen.append(i)
            for c in labels[i]:
                counts[c] += 1
        if min(counts) >= k:
            break
    return chosen


def test_few_shot_multiclass_balanced_and_deterministic() -> None:
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 10, size=500)
    targets[targets == 9] = 8  # class 9 absent
    targets[:3] = 9  # ... but for 3 samples: fewer than the shots
    picked = sample_few_shot(targets, shots=5, seed=1, num_classes=10)
    counts = np.bincount(targets[picked.numpy()], minlength=10)
    assert counts[:9].tolist() == [5] * 9 and counts[9] == 3
    assert len(set(picked.tolist())) == len(picked)
    assert torch.equal(picked, sample_few_shot(targets, shots=5, seed=1, num_classes=10))
    other = sample_few_shot(targets, shots=5, seed=2, num_classes=10)
    assert set(other.tolist()) != set(picked.tolist())
    assert picked.tolist() == _reference_few_shot([[int(t)] for t in targets], 5, 1, 10)
    assert sample_few_shot(torch.from_numpy(targets), 5, 1, 10).tolist() == picked.tolist()


def test_few_shot_all() -> None:
    assert sample_few_shot([2, 0, 1], shots=-1, seed=0, num_classes=3).tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="shots"):
        sample_few_shot([0, 1], shots=0, seed=0, num_classes=2)
    with pytest.raises(ValueError, match="lie in"):
        sample_few_shot([0, 3], shots=1, seed=0, num_classes=2)


def test_few_shot_multilabel_follows_vision_datasets() -> None:
    rng = np.random.default_rng(3)
    targets = (rng.random((400, 6)) < 0.2).astype(np.int64)
    targets[:5] = 0  # label-free images: at most `shots` of them are kept
    picked = sample_few_shot(targets, shots=4, seed=7, num_classes=6)
    labels = [np.flatnonzero(row).tolist() for row in targets]
    assert picked.tolist() == _reference_few_shot(labels, 4, 7, 6)
    per_class = targets[picked.numpy()].sum(axis=0)
    assert (per_class >= 4).all()  # enough images here, so every class reaches the shots
    negatives = int((targets[picked.numpy()].sum(axis=1) == 0).sum())
    assert negatives <= 4


def test_train_val_split_multiclass() -> None:
    targets = np.array([0, 1, 0, 1, 0, 2, 0, 0, 1, 2])
    train, val = elevater_train_val_split(targets, 0.2)
    # ceil(5 * .2) = 1 first sample of class 0, ceil(3 * .2) = 1 of class 1, 1 of class 2.
    assert val.tolist() == [0, 1, 5]
    assert sorted(train.tolist()) == [2, 3, 4, 6, 7, 8, 9]


def test_train_val_split_multilabel_greedy() -> None:
    targets = np.array([[1, 1, 0], [1, 0, 0], [0, 1, 1], [0, 0, 1], [1, 0, 0]])
    train, val = elevater_train_val_split(targets, 0.2)
    # Needs: ceil(3*.2)=1, ceil(2*.2)=1, ceil(2*.2)=1. Class 0 -> sample 0 (also covers 1);
    # class 2 -> sample 2.
    assert val.tolist() == [0, 2]
    assert sorted(train.tolist()) == [1, 3, 4]
