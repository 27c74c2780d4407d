"""ELEVATER's image-classification metrics, computed exactly as ELEVATER computes them.

ELEVATER (``vision_benchmark/evaluation/metric.py`` in
Computer-Vision-in-the-Wild/Elevater_Toolkit_IC) scores every dataset with one of four
metrics, each a thin wrapper around an evaluator of the ``vision-evaluation`` package
(``vision_evaluation/evaluators.py``) or scikit-learn. The scores it feeds them are
*probabilities*: ``softmax(100 * cosine similarity)`` for zero-shot
(``vision_benchmark/evaluation/clip_zeroshot_evaluator.py``) and ``softmax(logits)`` of the
linear classifier for linear probe (``vision_benchmark/evaluation/full_model_finetune.py``;
a softmax over classes even for the multilabel datasets). :func:`elevater_metric` takes the
same ``[N, C]`` probabilities and returns the same number, as a fraction in ``[0, 1]``
(ELEVATER's own logs multiply by 100).

Two quirks of the reference evaluators are reproduced on purpose, because they change the
numbers:

- ``mean_per_class`` and ``11point_mAP`` first drop every class that has no positive target
  (``MemorizingEverythingEvaluator.calculate_score``, ``filter_out_zero_tgt=True``). For
  ``mean_per_class`` this also removes that class's *score column* before the argmax, so a
  sample can never be predicted as an absent class.
- ``11point_mAP`` interpolates on scikit-learn's precision-recall curve, whose last point is
  (recall 0, precision 1), so the precision interpolated at recall 0 is always 1; and its
  recall thresholds are ``numpy.linspace(1, 0, 11)`` as floats (``0.29999999999999993``, ...),
  compared with ``>=`` against recalls computed as ``tp / positives``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

# Torch-free names, re-exported: cards are read with them while tasks are listed.
from itra_bench.vision_benchmark.metric_names import (  # noqa: F401
    ELEVATER_METRICS,
    METRIC_ALIASES,
    RESULT_NAMES,
    canonical_metric,
)


def _as_numpy(array: np.ndarray | Tensor) -> np.ndarray:
    if isinstance(array, Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def zeroshot_probabilities(image_features: Tensor, classifier: Tensor) -> Tensor:
    """ELEVATER's zero-shot class probabilities: ``softmax(100 * normalize(image) @ classifier.T)``.

    ``image_features`` is ``[N, D]`` and is L2-normalised row by row here; ``classifier`` is
    ``[C, D]``, one text embedding per class, used as given (ELEVATER normalises each class
    embedding when it builds it: the mean of the normalised template embeddings, normalised
    again). Returns ``[N, C]`` float32 probabilities on the device of ``image_features``.
    Follows ``vision_benchmark/evaluation/clip_zeroshot_evaluator.py``.
    """
    if image_features.ndim != 2 or classifier.ndim != 2:
        raise ValueError(
            "image_features must be [N, D] and classifier [C, D], got shapes "
            f"{tuple(image_features.shape)} and {tuple(classifier.shape)}"
        )
    if image_features.shape[1] != classifier.shape[1]:
        raise ValueError(
            f"image features have dimension {image_features.shape[1]}, the classifier "
            f"{classifier.shape[1]}"
        )
    image = F.normalize(image_features.float(), dim=-1)
    logits = 100.0 * image @ classifier.to(device=image.device, dtype=torch.float32).T
    return logits.softmax(dim=-1)


def _top1_accuracy(probs: np.ndarray, targets: np.ndarray) -> float:
    # vision_evaluation TopKAccuracyEvaluator(1): numpy argmax, so ties go to the lowest index
    # and a row holding NaN predicts its first NaN column.
    return float(np.mean(np.argmax(probs, axis=1) == targets))


def _target_matrix(targets: np.ndarray, num_classes: int) -> np.ndarray:
    if targets.ndim == 1:
        matrix = np.zeros((len(targets), num_classes), dtype=np.int64)
        matrix[np.arange(len(targets)), targets] = 1
        return matrix
    return targets


def _mean_per_class(probs: np.ndarray, targets: np.ndarray) -> float:
    # vision_evaluation BalancedAccuracyScoreEvaluator on the columns kept by
    # MemorizingEverythingEvaluator.calculate_score (classes with a positive target).
    matrix = _target_matrix(targets, probs.shape[1])
    present = np.flatnonzero(matrix.any(axis=0))
    if present.size == 0:
        return 0.0
    truth = np.argmax(matrix[:, present], axis=1)
    predicted = np.argmax(probs[:, present], axis=1)
    recalls = [np.mean(predicted[truth == c] == c) for c in np.unique(truth)]
    return float(np.mean(recalls))


def _interpolated_precision(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Precision interpolated at ELEVATER's 11 recall thresholds for one class.

    The curve is scikit-learn's ``precision_recall_curve``: one point per distinct score
    (samples with equal scores enter together), plus (recall 0, precision 1). The value at
    threshold ``t`` is the highest precision among points with ``recall >= t``
    (vision_evaluation ``PrecisionRecallCurveMixin._calc_precision_recall_interp``).
    """
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores = scores[order]
    hits = positive[order].astype(np.float64)
    # Last position of every run of equal scores: the points of the curve.
    ends = np.r_[np.flatnonzero(np.diff(sorted_scores)), len(sorted_scores) - 1]
    tp = np.cumsum(hits)[ends]
    predicted_positive = (ends + 1).astype(np.float64)
    precision = np.r_[tp / predicted_positive, 1.0]
    recall = np.r_[tp / tp[-1], 0.0]
    thresholds = np.linspace(1, 0, 11)
    return np.array([precision[recall >= t].max() for t in thresholds])


def _eleven_point_map(probs: np.ndarray, targets: np.ndarray) -> float:
    # vision_evaluation MeanAveragePrecisionNPointsEvaluator(11), on the kept columns.
    matrix = _target_matrix(targets, probs.shape[1])
    present = np.flatnonzero(matrix.any(axis=0))
    if present.size == 0:
        return 0.0
    per_class = [np.mean(_interpolated_precision(probs[:, c], matrix[:, c] > 0)) for c in present]
    return float(np.mean(per_class))


def _roc_auc(probs: np.ndarray, targets: np.ndarray) -> float:
    # ELEVATER metric.roc_auc: sklearn roc_auc_score on the positive-class column when the
    # scores have two columns (hateful-memes), else on the scores as given.
    from sklearn.metrics import roc_auc_score

    scores = probs[:, 1] if probs.ndim == 2 and probs.shape[1] == 2 else probs
    return float(roc_auc_score(targets, scores))


def elevater_metric(name: str, probs: np.ndarray | Tensor, targets: np.ndarray | Tensor) -> float:
    """One of ELEVATER's dataset metrics, as a fraction in ``[0, 1]``.

    ``probs`` is ``[N, C]`` class probabilities (or any scores; only their order matters
    except for NaN). ``targets`` is ``[N]`` integer classes, or ``[N, C]`` 0/1 for multilabel
    datasets. ``name`` is one of:

    - ``accuracy`` (alias ``acc1``): fraction of samples whose target is the ``argmax`` of
      their row (ties to the lower class index). Multiclass targets only.
    - ``mean_per_class`` (aliases ``mean-per-class``, ``mean_per_class_recall_present``):
      restricted to the classes that have at
      least one target sample, the mean over those classes of the fraction of their samples
      whose ``argmax`` over those classes' columns is the class (balanced accuracy).
    - ``11point_mAP``: restricted to the classes with at least one positive target, the mean
      over classes of the VOC 11-point interpolated average precision: the mean, over recall
      thresholds ``numpy.linspace(1, 0, 11)``, of the highest precision reached at a recall
      of at least the threshold, on the precision-recall curve of that class's column with
      (recall 0, precision 1) appended (so the term at recall 0 is always 1).
    - ``roc_auc``: scikit-learn's ``roc_auc_score`` of binary targets against ``probs[:, 1]``
      (the positive class) when ``C == 2``; otherwise of ``probs`` as given.

    Definitions follow ``vision_benchmark/evaluation/metric.py`` of ELEVATER and the
    evaluators of ``vision_evaluation/evaluators.py`` it calls.
    """
    key = canonical_metric(name)
    if key not in ELEVATER_METRICS:
        raise ValueError(
            f"unknown ELEVATER metric {name!r}; choose one of {', '.join(ELEVATER_METRICS)}"
        )
    scores = _as_numpy(probs).astype(np.float64, copy=False)
    truth = _as_numpy(targets)
    if scores.ndim != 2:
        raise ValueError(f"probs must be [N, C], got shape {scores.shape}")
    if truth.ndim == 2 and truth.shape[1] == 1 and scores.shape[1] != 1:
        # [N, 1] class indices, as ELEVATER's loaders give them (it squeezes them too).
        truth = truth[:, 0]
    if truth.shape[0] != scores.shape[0]:
        raise ValueError(f"probs has {scores.shape[0]} rows but targets has {truth.shape[0]}")
    if scores.shape[0] == 0:
        raise ValueError("cannot compute a metric on zero samples")
    if truth.ndim == 1:
        truth = truth.astype(np.int64)
        if truth.min() < 0 or truth.max() >= scores.shape[1]:
            raise ValueError(
                f"targets must lie in [0, {scores.shape[1]}), found [{truth.min()}, {truth.max()}]"
            )
    elif truth.shape != scores.shape:
        raise ValueError(
            f"multilabel targets must have the shape of probs {scores.shape}, got {truth.shape}"
        )
    if key == "accuracy":
        if truth.ndim != 1:
            raise ValueError("accuracy needs single-label targets [N]; use 11point_mAP")
        return _top1_accuracy(scores, truth)
    if key == "mean_per_class":
        return _mean_per_class(scores, truth)
    if key == "11point_mAP":
        return _eleven_point_map(scores, truth)
    return _roc_auc(scores, truth)
