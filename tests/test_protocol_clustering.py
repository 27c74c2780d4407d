"""Clustering scores against sklearn's KMeans and mutual-information scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

from itra_bench.protocols.clustering import clustering_scores


def _blobs(num_classes: int, n: int, dim: int, noise: float, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=generator)
    labels = torch.randint(0, num_classes, (n,), generator=generator)
    return centres[labels] + noise * torch.randn(n, dim, generator=generator), labels


def _reference(features: torch.Tensor, labels: torch.Tensor, k: int, seed: int, n_init: int):
    x = features.numpy().astype(np.float32)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    clusters = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit_predict(x)
    return {
        "nmi": normalized_mutual_info_score(labels.numpy(), clusters),
        "ami": adjusted_mutual_info_score(labels.numpy(), clusters),
    }


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_sklearn(seed: int) -> None:
    features, labels = _blobs(6, 400, 10, noise=0.9, seed=seed)
    ours = clustering_scores(features, labels, seed=seed, n_init=5)
    theirs = _reference(features, labels, 6, seed, 5)
    assert 0.2 < theirs["nmi"] < 0.95  # a partly wrong clustering, so agreement means something
    assert ours == pytest.approx(theirs, abs=1e-9)


def test_explicit_number_of_clusters() -> None:
    features, labels = _blobs(4, 300, 8, noise=0.7, seed=2)
    ours = clustering_scores(features, labels, num_clusters=8, seed=3, n_init=3)
    assert ours == pytest.approx(_reference(features, labels, 8, 3, 3), abs=1e-9)
    assert ours != pytest.approx(clustering_scores(features, labels, seed=3, n_init=3))


def test_well_separated_blobs_score_one() -> None:
    features, labels = _blobs(5, 300, 16, noise=0.01, seed=4)
    scores = clustering_scores(features, labels)
    assert scores["nmi"] == pytest.approx(1.0)
    assert scores["ami"] == pytest.approx(1.0)


def test_features_are_l2_normalised() -> None:
    # Rescaling each sample must not change the clusters.
    features, labels = _blobs(4, 200, 8, noise=0.8, seed=5)
    scales = torch.rand(200, 1, generator=torch.Generator().manual_seed(0)) * 10 + 0.1
    assert clustering_scores(features * scales, labels, n_init=3) == pytest.approx(
        clustering_scores(features, labels, n_init=3), abs=1e-6
    )


def test_bad_inputs_raise() -> None:
    features, labels = _blobs(3, 10, 4, noise=1.0)
    with pytest.raises(ValueError, match="num_clusters"):
        clustering_scores(features, labels, num_clusters=11)
    with pytest.raises(ValueError, match="rows"):
        clustering_scores(features, labels[:5])
    with pytest.raises(ValueError, match="NaN"):
        clustering_scores(features * float("nan"), labels)
