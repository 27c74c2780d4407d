"""Per-sample outcomes of an ELEVATER result, from which its main score is recomputed exactly
(and its bootstrap interval and paired comparisons computed): see
:mod:`itra_bench.sample_outcomes` for the kinds.

The outcomes are taken from the probabilities *as the prediction file stores them*, which is
what the result's main score is computed on, so that ties the 6-decimal rounding creates are
broken exactly as ELEVATER breaks them:

- ``accuracy`` (result name ``acc1``): kind ``classification``, ``rank`` = the position of
  the target class when the row is ordered as ELEVATER's ``argmax`` chooses (higher scores
  first, ties to the lower class index, a NaN before any number), so ``rank == 0`` exactly
  when ELEVATER counts the image as right;
- ``mean_per_class`` (``mean_per_class_recall_present``): kind ``classification``, ``rank``
  = 0 when ELEVATER's prediction, the ``argmax`` over the columns of classes that have a test
  sample, is the target and 1 otherwise. Such outcomes recompute the main score only: their
  ``acc1`` is the accuracy of that restricted prediction, not the result's ``acc1``;
- ``roc_auc``: kind ``binary_scores``, ``score`` = the positive-class probability;
- ``11point_mAP``: kind ``multilabel``, the stored ``scores`` and 0/1 ``labels``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from itra_bench.sample_outcomes import SampleOutcomes, as_array
from itra_bench.vision_benchmark.metric_names import ELEVATER_METRICS, canonical_metric

#: Rows ranked at once: bounds the ``[rows, classes]`` comparison masks (ImageNet: 50,000 x
#: 1,000) to a few tens of megabytes.
_CHUNK_CELLS = 4_000_000


def argmax_rank(probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """The 0-based rank of ``targets[i]`` in row ``i`` of ``probs`` ``[N, C]``, in the order in
    which ``numpy.argmax`` picks: NaN first (it wins ``argmax``), then higher scores, equal
    ones by lower class index. ``rank == 0`` exactly where ``argmax(row) == target``."""
    probs = np.asarray(probs, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    n, classes = probs.shape
    columns = np.arange(classes)
    out = np.empty(n, dtype=np.int64)
    step = max(1, _CHUNK_CELLS // max(1, classes))
    for start in range(0, n, step):
        p = probs[start:start + step]
        t = targets[start:start + step]
        own = np.take_along_axis(p, t[:, None], axis=1)
        nan, own_nan = np.isnan(p), np.isnan(own)
        # A column beats the target when it is NaN and the target is not, or both are
        # numbers and it scores higher; it ties when both are NaN or the numbers are equal.
        beats = (nan & ~own_nan) | (p > own)
        ties = (nan & own_nan) | (p == own)
        out[start:start + step] = (beats | (ties & (columns[None, :] < t[:, None]))).sum(axis=1)
    return out


def elevater_outcomes(metric: str, probs: Any, targets: Any) -> SampleOutcomes | None:
    """The per-sample outcomes from which ``metric`` (an ELEVATER metric, any accepted
    spelling) of ``probs`` ``[N, C]`` against ``targets`` (``[N]`` classes, or ``[N, C]`` 0/1
    for multilabel datasets) is recomputed exactly; ``probs`` as the metric was given them
    (the stored, rounded probabilities). None for ``roc_auc`` of more than two classes,
    which no outcome kind recomputes."""
    key = canonical_metric(metric)
    if key not in ELEVATER_METRICS:
        raise ValueError(f"unknown ELEVATER metric {metric!r}; choose one of "
                         f"{', '.join(ELEVATER_METRICS)}")
    scores = as_array(probs).astype(np.float64, copy=False)
    truth = as_array(targets)
    if truth.ndim == 2 and truth.shape[1] == 1 and scores.shape[1] != 1:
        truth = truth[:, 0]  # [N, 1] class indices, as elevater_metric accepts them
    if key == "11point_mAP":
        if truth.ndim == 1:
            matrix = np.zeros(scores.shape, dtype=np.int8)
            matrix[np.arange(len(truth)), truth.astype(np.int64)] = 1
        else:
            matrix = (truth > 0).astype(np.int8)
        return SampleOutcomes("multilabel", {"scores": scores, "labels": matrix})
    if key == "roc_auc":
        if scores.shape[1] > 2:
            return None
        # ELEVATER scores the positive-class column of two (hateful-memes).
        return SampleOutcomes("binary_scores", {"score": scores[:, -1],
                                                "label": truth.reshape(-1).astype(np.int64)})
    if key == "accuracy":
        label = truth.astype(np.int64)
        rank = argmax_rank(scores, label)
    else:
        # ELEVATER drops the columns of classes without a test sample before its argmax; a
        # [N, C] target row is read as its first positive among the kept classes.
        if truth.ndim == 2:
            present = np.flatnonzero((truth > 0).any(axis=0))
            if present.size == 0:
                return None  # ELEVATER scores 0 without a single class present
            label = present[np.argmax(truth[:, present], axis=1)]
        else:
            label = truth.astype(np.int64)
            present = np.flatnonzero(np.bincount(label, minlength=scores.shape[1]))
        predicted = present[np.argmax(scores[:, present], axis=1)]
        rank = (predicted != label).astype(np.int64)
    return SampleOutcomes("classification", {"rank": rank.astype(np.int32),
                                             "label": label.astype(np.int32)})
