"""Clustering quality of features: k-means clusters scored against the true labels."""

from __future__ import annotations

import numpy as np
from torch import Tensor

from itra_bench.sample_outcomes import Metrics, SampleOutcomes


def clustering_scores(
    features: Tensor,
    labels: Tensor,
    num_clusters: int | None = None,
    seed: int = 0,
    n_init: int = 10,
) -> dict[str, float]:
    """NMI and AMI between k-means clusters of the features and the labels.

    Features (``[N, D]``, any device) are L2-normalised and clustered in float32 by
    scikit-learn's ``KMeans(n_clusters=num_clusters, n_init=n_init, random_state=seed)``;
    ``num_clusters`` defaults to the number of distinct labels. Returns ``nmi`` and ``ami``,
    scikit-learn's ``normalized_mutual_info_score`` and ``adjusted_mutual_info_score`` with
    their default arithmetic-mean normalisation, carrying each sample's cluster and label
    (``clustering`` outcomes). Deterministic for a given ``seed``.
    """
    # scikit-learn takes seconds to import; only runs that cluster should pay for it.
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score
    from sklearn.preprocessing import normalize

    if features.ndim != 2:
        raise ValueError(f"features must be [N, D], got shape {tuple(features.shape)}")
    y = labels.detach().reshape(-1).cpu().numpy()
    if y.shape[0] != features.shape[0]:
        raise ValueError(f"features has {features.shape[0]} rows but labels has {y.shape[0]}")
    x = features.detach().float().cpu().numpy()
    if not np.isfinite(x).all():
        raise ValueError("features contain NaN or infinite values")
    if num_clusters is None:
        num_clusters = len(np.unique(y))
    if not 1 <= num_clusters <= x.shape[0]:
        raise ValueError(
            f"num_clusters must be in [1, {x.shape[0]}] (number of samples), got {num_clusters}"
        )
    x = normalize(x)
    kmeans = KMeans(n_clusters=num_clusters, n_init=n_init, random_state=seed)
    clusters = kmeans.fit_predict(x)
    return Metrics({
        "nmi": float(normalized_mutual_info_score(y, clusters)),
        "ami": float(adjusted_mutual_info_score(y, clusters)),
    }, SampleOutcomes("clustering", {"cluster": clusters.astype(np.int32),
                                     "label": y.astype(np.int64)}))
