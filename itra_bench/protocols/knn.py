"""k-nearest-neighbour classification by cosine similarity on frozen features."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from itra_bench.protocols.classification_metrics import classification_metrics

WEIGHTINGS = ("uniform", "distance", "softmax")


def _nearest(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Similarities and indices ``[B, k]`` of the k best columns of each row of ``scores``.

    Among columns tied with the k-th best score, the lowest indices are kept (a stable
    descending sort), so the neighbour set does not depend on ``topk``'s internal order.
    """
    values, indices = scores.topk(k, dim=1)
    kth = values[:, -1:]
    tied_rows = torch.nonzero((scores >= kth).sum(dim=1) > k).flatten()
    if len(tied_rows):
        rows = scores[tied_rows]
        boundary = kth[tied_rows]
        at_boundary = rows == boundary
        slots_left = k - (rows > boundary).sum(dim=1, keepdim=True)
        keep = (rows > boundary) | (at_boundary & (at_boundary.cumsum(dim=1) <= slots_left))
        # Exactly k columns are kept per row, and nonzero lists them row by row.
        kept = torch.nonzero(keep)[:, 1].reshape(len(tied_rows), k)
        indices[tied_rows] = kept
        values[tied_rows] = rows.gather(1, kept)
    return values, indices


def _votes(similarity: Tensor, weighting: str, temperature: float) -> Tensor:
    if weighting == "uniform":
        return torch.ones_like(similarity)
    if weighting == "distance":
        # sklearn's weights="distance" with metric="cosine": 1 / (1 - cos), distance clipped
        # to [0, 2]; a neighbour at distance 0 makes only the zero-distance neighbours count.
        distance = (1.0 - similarity).clamp(0.0, 2.0)
        at_zero = distance == 0
        return torch.where(
            at_zero.any(dim=1, keepdim=True), at_zero.to(distance.dtype), 1.0 / distance
        )
    # softmax: exp(cos / T) as in InstDisc and DINO. Subtracting the row maximum scales a
    # row's votes by one factor, which changes no ranking but avoids overflow for small T.
    return ((similarity - similarity.amax(dim=1, keepdim=True)) / temperature).exp()


def knn_scores(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    num_classes: int,
    k: int = 20,
    weighting: str = "uniform",
    temperature: float = 0.07,
    chunk_size: int = 1024,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Class vote totals ``[N_test, C]`` from the k nearest training points by cosine.

    Features are L2-normalised; each test point's ``k`` most similar training points vote
    for their labels (ties in similarity at the k-th place: lower training index first).
    Each neighbour's vote, for cosine similarity ``s``, is

    - ``uniform``: 1;
    - ``distance``: ``1 / (1 - s)``, as scikit-learn's ``KNeighborsClassifier(
      metric="cosine", weights="distance")``; if some neighbours are at distance 0 only they
      vote, with weight 1 each;
    - ``softmax``: ``exp(s / temperature)`` (InstDisc, DINO), stored divided by the row's
      largest vote, which changes no ranking.

    Test points are processed ``chunk_size`` at a time. The result is float32 on ``device``.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    if weighting == "softmax" and not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if train_x.ndim != 2 or test_x.ndim != 2 or train_x.shape[1] != test_x.shape[1]:
        raise ValueError(
            f"train and test features must be [N, D] with the same D, got shapes "
            f"{tuple(train_x.shape)} and {tuple(test_x.shape)}"
        )
    if train_y.ndim != 1 or train_y.shape[0] != train_x.shape[0]:
        raise ValueError(
            f"train labels must be [N] with N = {train_x.shape[0]}, got {tuple(train_y.shape)}"
        )
    if not 1 <= k <= train_x.shape[0]:
        raise ValueError(f"k must be in [1, {train_x.shape[0]}] (training set size), got {k}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if train_y.dtype.is_floating_point or train_y.dtype == torch.bool:
        raise ValueError(f"train labels must be integer class indices, got {train_y.dtype}")
    train_y = train_y.to(device=device, dtype=torch.long)
    if int(train_y.min()) < 0 or int(train_y.max()) >= num_classes:
        raise ValueError(
            f"train labels must lie in [0, {num_classes}), "
            f"found values in [{int(train_y.min())}, {int(train_y.max())}]"
        )
    for name, x in (("train", train_x), ("test", test_x)):
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} features contain NaN or infinite values")

    train = F.normalize(train_x.to(device=device, dtype=torch.float32), dim=-1)
    test = F.normalize(test_x.to(device=device, dtype=torch.float32), dim=-1)
    scores = []
    for start in range(0, test.shape[0], chunk_size):
        similarity, neighbours = _nearest(test[start : start + chunk_size] @ train.T, k)
        votes = _votes(similarity, weighting, temperature)
        totals = torch.zeros(similarity.shape[0], num_classes, device=train.device)
        scores.append(totals.scatter_add_(1, train_y[neighbours], votes))
    if not scores:
        return torch.zeros(0, num_classes, device=train.device)
    return torch.cat(scores)


def knn_classification(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    num_classes: int,
    k: int = 20,
    weighting: str = "uniform",
    temperature: float = 0.07,
    chunk_size: int = 1024,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """k-NN classification metrics (see :func:`classification_metrics`).

    Class scores are the vote totals of :func:`knn_scores`; a test point is assigned the
    class with the most votes, and among classes with equal totals the lowest class index
    (the same rule decides the order for ``acc5``, including classes with no votes).
    """
    scores = knn_scores(
        train_x, train_y, test_x, num_classes, k, weighting, temperature, chunk_size, device
    )
    return classification_metrics(scores, test_y)
