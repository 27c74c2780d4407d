"""k-NN classification against sklearn's KNeighborsClassifier and the DINO vote formula."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from sklearn.neighbors import KNeighborsClassifier

from itra_bench.protocols.knn import knn_classification, knn_scores

NUM_CLASSES = 6


def _data(seed: int = 0, n_train: int = 300, n_test: int = 120, dim: int = 16):
    """Overlapping Gaussian classes: k-NN accuracy is well away from 0 and 1."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(NUM_CLASSES, dim, generator=generator)
    y = torch.randint(0, NUM_CLASSES, (n_train + n_test,), generator=generator)
    x = centres[y] + 2.0 * torch.randn(n_train + n_test, dim, generator=generator)
    return x[:n_train].double(), y[:n_train], x[n_train:].double(), y[n_train:]


@pytest.mark.parametrize("weighting", ["uniform", "distance"])
@pytest.mark.parametrize("k", [1, 5, 20])
def test_matches_sklearn(weighting: str, k: int) -> None:
    train_x, train_y, test_x, test_y = _data()
    reference = KNeighborsClassifier(
        n_neighbors=k, metric="cosine", weights=weighting, algorithm="brute"
    ).fit(train_x.numpy(), train_y.numpy())
    expected_pred = reference.predict(test_x.numpy())
    expected_proba = reference.predict_proba(test_x.numpy())

    scores = knn_scores(
        train_x, train_y, test_x, NUM_CLASSES, k=k, weighting=weighting, chunk_size=32
    )
    np.testing.assert_array_equal(scores.argmax(dim=1).numpy(), expected_pred)
    proba = (scores / scores.sum(dim=1, keepdim=True)).numpy()
    np.testing.assert_allclose(proba, expected_proba, atol=1e-5)

    metrics = knn_classification(
        train_x, train_y, test_x, test_y, NUM_CLASSES, k=k, weighting=weighting, chunk_size=32
    )
    acc = accuracy_score(test_y.numpy(), expected_pred)
    assert 0.3 < acc < 0.95
    assert metrics["acc1"] == pytest.approx(acc)
    assert metrics["mean_per_class_recall"] == pytest.approx(
        balanced_accuracy_score(test_y.numpy(), expected_pred)
    )


def test_zero_distance_neighbours_take_all_the_weight_like_sklearn() -> None:
    train_x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.6, 0.8]])
    train_y = torch.tensor([2, 0, 1, 0])
    test_x = torch.tensor([[2.0, 0.0], [0.8, 0.6]])
    reference = KNeighborsClassifier(n_neighbors=3, metric="cosine", weights="distance")
    reference.fit(train_x.numpy(), train_y.numpy())
    scores = knn_scores(train_x, train_y, test_x, 3, k=3, weighting="distance")
    # Test point 0 sits on training points 0 and 2 (classes 2 and 1): only they vote, the tie
    # goes to the lower class index, and sklearn agrees.
    assert scores[0].tolist() == [0.0, 1.0, 1.0]
    np.testing.assert_array_equal(scores.argmax(dim=1).numpy(), reference.predict(test_x.numpy()))
    np.testing.assert_allclose(
        (scores / scores.sum(dim=1, keepdim=True)).numpy(),
        reference.predict_proba(test_x.numpy()),
        atol=1e-6,
    )


@pytest.mark.parametrize("temperature", [0.07, 0.01])
def test_softmax_votes_follow_the_dino_formula(temperature: float) -> None:
    train_x, train_y, test_x, _ = _data(seed=1)
    k = 10
    similarity = F.normalize(test_x, dim=-1) @ F.normalize(train_x, dim=-1).T
    top_sim, top_idx = similarity.topk(k, dim=1)
    expected = torch.zeros(len(test_x), NUM_CLASSES, dtype=torch.float64)
    expected.scatter_add_(1, train_y[top_idx], (top_sim / temperature).exp())

    scores = knn_scores(
        train_x,
        train_y,
        test_x,
        NUM_CLASSES,
        k=k,
        weighting="softmax",
        temperature=temperature,
        chunk_size=50,
    )
    assert torch.isfinite(scores).all()
    # Scores are the DINO votes up to one positive factor per test point.
    torch.testing.assert_close(
        scores.double() / scores.double().sum(dim=1, keepdim=True),
        expected / expected.sum(dim=1, keepdim=True),
        rtol=1e-4,
        atol=1e-6,
    )


def test_equal_similarities_keep_lower_training_indices() -> None:
    train_x = torch.tensor([[1.0, 0.0]] * 4 + [[0.0, 1.0]])
    train_y = torch.tensor([3, 2, 1, 0, 0])
    test_x = torch.tensor([[1.0, 0.0], [1.0, 0.1]])
    for chunk_size in (1, 2):
        scores = knn_scores(train_x, train_y, test_x, 4, k=2, chunk_size=chunk_size)
        # The four identical neighbours tie; the two with the lowest indices (classes 3 and 2)
        # are kept, and the vote tie between classes 2 and 3 goes to class 2.
        assert scores.tolist() == [[0.0, 0.0, 1.0, 1.0]] * 2
    metrics = knn_classification(train_x, train_y, test_x, torch.tensor([2, 3]), 4, k=2)
    assert metrics["acc1"] == 0.5


def test_chunking_does_not_change_results() -> None:
    train_x, train_y, test_x, test_y = _data(seed=2)
    for weighting in ("uniform", "distance", "softmax"):
        whole = knn_scores(
            train_x, train_y, test_x, NUM_CLASSES, weighting=weighting, chunk_size=10_000
        )
        chunked = knn_scores(
            train_x, train_y, test_x, NUM_CLASSES, weighting=weighting, chunk_size=7
        )
        torch.testing.assert_close(whole, chunked)


def test_bad_inputs_raise() -> None:
    train_x, train_y, test_x, test_y = _data(n_train=10, n_test=3)
    with pytest.raises(ValueError, match="weighting"):
        knn_classification(train_x, train_y, test_x, test_y, NUM_CLASSES, weighting="gauss")
    with pytest.raises(ValueError, match="k must be"):
        knn_classification(train_x, train_y, test_x, test_y, NUM_CLASSES, k=11)
    with pytest.raises(ValueError, match="train labels"):
        knn_classification(train_x, train_y + 10, test_x, test_y, NUM_CLASSES, k=5)


@pytest.mark.gpu
def test_cuda_matches_cpu() -> None:
    train_x, train_y, test_x, test_y = _data(seed=3)
    for weighting in ("uniform", "distance", "softmax"):
        cpu = knn_scores(train_x, train_y, test_x, NUM_CLASSES, weighting=weighting)
        cuda = knn_scores(train_x, train_y, test_x, NUM_CLASSES, weighting=weighting, device="cuda")
        torch.testing.assert_close(cuda.cpu(), cpu, rtol=1e-4, atol=1e-5)
