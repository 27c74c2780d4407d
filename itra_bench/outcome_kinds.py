"""The kinds of per-sample outcomes (the table of :mod:`itra_bench.sample_outcomes`): for each,
the arrays it needs, those that describe the data, how they split into resampling units, and
the vectorised statistics that recompute its metrics; and the statistics that loaded plugins
add (:func:`plugin_statistic`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from itra_bench.bootstrap import MAX_CELLS, Range, Statistic, mean, pearson, spearman
from itra_bench.errors import PluginBugError
from itra_bench.outcome_statistics import OutcomeStatistic, statistic_key


@dataclass(frozen=True)
class _Kind:
    required: tuple[str, ...]
    #: Arrays that describe the data rather than the model: equal for two comparable results.
    data: tuple[str, ...]
    units: Callable[[Mapping[str, np.ndarray]], list[np.ndarray]]
    statistic: Callable[[str, Mapping[str, np.ndarray]], Statistic | None]
    #: Whether two models' outcomes of one sample are on one scale, so that a permutation
    #: test may swap them (hits and ranks are; raw scores and cluster ids are not).
    exchangeable: bool = True
    #: Metrics whose bootstrap distribution resampling with replacement displaces from the
    #: score, with their range: their intervals are recentred on the score within it (see
    #: :func:`itra_bench.bootstrap.bootstrap_interval`). A duplicated sample agrees with its
    #: copy, which adds mutual information (NMI, AMI), and ranks a positive right beside a
    #: positive (11-point mAP, whose plugin declares its range on its OutcomeStatistic);
    #: means, recalls, correlations and AUC are not displaced.
    recentred: Mapping[str, Range] = field(default_factory=dict)
    #: Where the metric is a mean of per-unit values (accuracy, VQA accuracy, reciprocal
    #: rank), or a mean over classes of per-class means (mean per-class recall): the values
    #: and the classes (None for a plain mean). Such metrics are resampled exactly and at
    #: once (:func:`itra_bench.bootstrap.group_mean_interval`).
    group_means: Callable[[str, Mapping[str, np.ndarray]],
                          tuple[np.ndarray, np.ndarray | None] | None] = \
        lambda metric, arrays: None


# -- means ---------------------------------------------------------------------------------

def _means_statistic(metric: str, arrays: Mapping[str, np.ndarray]) -> Statistic | None:
    if metric not in arrays:
        return None
    names = sorted(arrays)
    column = names.index(metric)
    return lambda *units: mean(units[column])


def _means_values(metric: str, arrays: Mapping[str, np.ndarray]
                  ) -> tuple[np.ndarray, None] | None:
    values = arrays.get(metric)
    return None if values is None or values.ndim != 1 else (values, None)


# -- classification ------------------------------------------------------------------------

def _classification_metric(metric: str) -> int | None:
    """``k`` for ``acc<k>``, 0 for ``mean_per_class_recall*``, None for other metrics."""
    if metric.startswith("acc") and metric[3:].isdigit():
        return int(metric[3:])
    return 0 if metric.startswith("mean_per_class_recall") else None


def _classification_values(metric: str, arrays: Mapping[str, np.ndarray]
                           ) -> tuple[np.ndarray, np.ndarray | None] | None:
    k = _classification_metric(metric)
    if k is None:
        return None
    rank = np.asarray(arrays["rank"])
    return (rank < k, None) if k else (rank == 0, np.asarray(arrays["label"]))


def _classification_statistic(metric: str, arrays: Mapping[str, np.ndarray]
                              ) -> Statistic | None:
    k = _classification_metric(metric)
    if k is None:
        return None
    if k:
        return lambda rank, label: mean(rank < k)
    num_classes = int(arrays["label"].max()) + 1

    def per_class(rank: np.ndarray, label: np.ndarray) -> np.ndarray:
        # Recall of each class present in the resample, averaged over those classes.
        rows = label.shape[0]
        offset = (np.arange(rows)[:, None] * num_classes + label).reshape(-1)
        support = np.bincount(offset, minlength=rows * num_classes).reshape(rows, -1)
        hits = np.bincount(offset, weights=(rank == 0).reshape(-1).astype(np.float64),
                           minlength=rows * num_classes).reshape(rows, -1)
        present = support > 0
        recall = np.where(present, hits / np.maximum(support, 1), 0.0)
        return recall.sum(axis=1) / present.sum(axis=1)
    return per_class


# -- retrieval -----------------------------------------------------------------------------

def _retrieval_units(arrays: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Per image: its text-retrieval hits at each k, its captions' image-retrieval hits at
    each k, and its number of captions."""
    ks = np.asarray(arrays["ks"]).reshape(-1)
    text_rank = np.asarray(arrays["text_rank"])
    image_rank = np.asarray(arrays["image_rank"])
    owner = np.asarray(arrays["caption_image"]).astype(np.int64)
    n_images = len(text_rank)
    text_hits = (text_rank[:, None] < ks[None, :]).astype(np.float64)
    caption_hits = np.stack([np.bincount(owner, weights=(image_rank < k).astype(np.float64),
                                         minlength=n_images) for k in ks], axis=1)
    captions = np.bincount(owner, minlength=n_images).astype(np.float64)
    return [text_hits, caption_hits, captions]


def _retrieval_statistic(metric: str, arrays: Mapping[str, np.ndarray]) -> Statistic | None:
    ks = [int(k) for k in np.asarray(arrays["ks"]).reshape(-1)]

    def recalls(text_hits: np.ndarray, caption_hits: np.ndarray, captions: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
        text = text_hits.mean(axis=-2)                               # [rows, K]
        image = caption_hits.sum(axis=-2) / captions.sum(axis=-1)[..., None]
        return text, image

    for i, k in enumerate(ks):
        if metric == f"text_retrieval_recall@{k}":
            return lambda *u, i=i: recalls(*u)[0][..., i]
        if metric == f"image_retrieval_recall@{k}":
            return lambda *u, i=i: recalls(*u)[1][..., i]
    if metric == "mean_recall":
        def mean_recall(*u: np.ndarray) -> np.ndarray:
            text, image = recalls(*u)
            return (text.sum(axis=-1) + image.sum(axis=-1)) / (2 * len(ks))
        return mean_recall
    return None


# -- correlation, ROC AUC, clustering ----------------------------------------

def _correlation_statistic(metric: str, arrays: Mapping[str, np.ndarray]) -> Statistic | None:
    return {"spearman": spearman, "pearson": pearson}.get(metric)


def _per_row(function: Callable[..., float]) -> Statistic:
    """A statistic that calls a plain per-sample-set metric once per resample row (for
    metrics that are not vectorised: scikit-learn's, ELEVATER's)."""
    def statistic(*arrays: np.ndarray) -> np.ndarray:
        return np.array([function(*(a[r] for a in arrays)) for r in range(arrays[0].shape[0])],
                        dtype=np.float64)
    return statistic


def _roc_auc(score: np.ndarray, label: np.ndarray) -> float:
    """Area under the ROC curve as the Mann-Whitney statistic (ties count one half), which
    is what scikit-learn's ``roc_auc_score`` computes; NaN without both labels."""
    from scipy.stats import rankdata

    positive = label.astype(bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _binary_statistic(metric: str, arrays: Mapping[str, np.ndarray]) -> Statistic | None:
    return _per_row(_roc_auc) if metric == "roc_auc" else None


def _clustering_statistic(metric: str, arrays: Mapping[str, np.ndarray]) -> Statistic | None:
    if metric == "nmi":
        return _nmi_rows
    if metric != "ami":
        return None

    def ami(cluster: np.ndarray, label: np.ndarray) -> float:
        from sklearn.metrics import adjusted_mutual_info_score

        return float(adjusted_mutual_info_score(label, cluster))
    return _per_row(ami)


def _nmi_rows(cluster: np.ndarray, label: np.ndarray) -> np.ndarray:
    """scikit-learn's ``normalized_mutual_info_score(label, cluster)`` (arithmetic mean
    normalisation, natural log) of each row, from per-row contingency tables."""
    rows, n = label.shape
    # From the arrays given: two models compared on one set of labels may number their
    # clusters differently.
    clusters, classes = int(cluster.max()) + 1, int(label.max()) + 1
    out = np.empty(rows)
    step = max(1, MAX_CELLS // (classes * clusters))
    for start in range(0, rows, step):
        lab, clu = label[start:start + step], cluster[start:start + step]
        r = lab.shape[0]
        code = ((np.arange(r)[:, None] * classes + lab) * clusters + clu).reshape(-1)
        table = np.bincount(code, minlength=r * classes * clusters).reshape(
            r, classes, clusters).astype(np.float64)
        pi, pj = table.sum(axis=2), table.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            outer = pi[:, :, None] * pj[:, None, :]
            terms = np.where(table > 0, table / n * (np.log(table) - np.log(outer)
                                                     + np.log(n)), 0.0)
            # As scikit-learn: terms below machine epsilon are zero, the sum is clipped at 0.
            terms = np.where(np.abs(terms) < np.finfo(np.float64).eps, 0.0, terms)
            mi = np.clip(terms.sum(axis=(1, 2)), 0.0, None)

            def entropy(p: np.ndarray) -> np.ndarray:
                return -np.where(p > 0, p / n * np.log(p / n), 0.0).sum(axis=1)
            nmi = mi / ((entropy(pi) + entropy(pj)) / 2)
        n_classes, n_clusters = (pi > 0).sum(axis=1), (pj > 0).sum(axis=1)
        nmi = np.where(mi == 0, 0.0, nmi)
        out[start:start + r] = np.where((n_classes == 1) & (n_clusters == 1), 1.0, nmi)
    return out


def _named(*names: str) -> Callable[[Mapping[str, np.ndarray]], list[np.ndarray]]:
    return lambda arrays: [np.asarray(arrays[n]) for n in names]


KINDS: dict[str, _Kind] = {
    "means": _Kind((), (), lambda arrays: [np.asarray(arrays[n]) for n in sorted(arrays)],
                   _means_statistic, group_means=_means_values),
    "classification": _Kind(("rank", "label"), ("label",), _named("rank", "label"),
                            _classification_statistic,
                            group_means=_classification_values),
    "retrieval": _Kind(("image_rank", "text_rank", "caption_image", "ks"),
                       ("caption_image", "ks"), _retrieval_units, _retrieval_statistic),
    "correlation": _Kind(("pred", "gold"), ("gold",), _named("pred", "gold"),
                         _correlation_statistic, exchangeable=False),
    "binary_scores": _Kind(("score", "label"), ("label",), _named("score", "label"),
                           _binary_statistic, exchangeable=False),
    # Its metrics (ELEVATER's 11-point mAP) come from plugins: see plugin_statistic.
    "multilabel": _Kind(("scores", "labels"), ("labels",), _named("scores", "labels"),
                        lambda metric, arrays: None, exchangeable=False),
    "clustering": _Kind(("cluster", "label"), ("label",), _named("cluster", "label"),
                        _clustering_statistic, exchangeable=False,
                        recentred={"nmi": (0.0, 1.0), "ami": (-math.inf, 1.0)}),
}


def plugin_statistic(kind: str, metric: str) -> OutcomeStatistic | None:
    """The statistic that a plugin of :func:`itra_bench.registry.current_registry` provides
    for ``metric`` of outcomes of ``kind`` (None when no loaded plugin does)."""
    from itra_bench.registry import current_registry

    table = current_registry().outcome_statistics
    for provided in table.values():
        if provided.item.kind not in KINDS:
            raise PluginBugError(
                f"plugin bug: {provided.plugin.describe()} provides the outcome statistic "
                f"{provided.item.metric!r} for outcomes of kind {provided.item.kind!r}, which "
                f"is not one; the kinds are {', '.join(sorted(KINDS))}. Report it to the "
                "plugin's authors.")
    provided = table.get(statistic_key(kind, metric))
    return None if provided is None else provided.item
