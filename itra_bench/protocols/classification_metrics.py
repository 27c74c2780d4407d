"""Single-label classification metrics from a matrix of class scores.

Ties are broken as a stable descending sort would: among classes with equal scores, the one
with the lower index ranks first (the same choice as ``argmax``). The rule is what makes
top-k accuracy deterministic when scores tie, e.g. k-NN vote counts.
"""

from __future__ import annotations

import torch
from torch import Tensor

from itra_bench.sample_outcomes import Metrics, SampleOutcomes


def stable_descending_rank(scores: Tensor, target: Tensor) -> Tensor:
    """The 0-based rank of column ``target[i]`` in row ``i`` of ``scores``, best first.

    The rank of column ``j`` is the number of columns that score higher, plus the number of
    columns that score the same and have a lower index: its position after a stable sort by
    descending score. ``scores`` is ``[B, K]``, ``target`` is ``[B]`` with values in ``[0, K)``;
    the result is a ``[B]`` int64 tensor on the device of ``scores``.
    """
    target = target.to(device=scores.device, dtype=torch.long)
    own = scores.gather(1, target[:, None])
    columns = torch.arange(scores.shape[1], device=scores.device)
    ahead = (scores > own) | ((scores == own) & (columns[None, :] < target[:, None]))
    return ahead.sum(dim=1)


def classification_metrics(scores: Tensor, labels: Tensor) -> dict[str, float]:
    """Top-1 and top-5 accuracy and mean per-class recall of class scores against labels.

    ``scores`` is ``[N, C]`` (higher means more likely; logits, similarities or vote counts),
    ``labels`` is ``[N]`` with integer classes in ``[0, C)``. Returns

    - ``acc1``: fraction of samples whose label ranks first;
    - ``acc5``: fraction whose label ranks in the first five (only when ``C >= 5``);
    - ``mean_per_class_recall``: the top-1 recall of each class present in ``labels``,
      averaged over those classes (sklearn's ``balanced_accuracy_score``).

    Ranks follow :func:`stable_descending_rank`, so the top-1 prediction is ``argmax``.
    The returned :class:`~itra_bench.sample_outcomes.Metrics` carry each sample's rank and
    label (``classification`` outcomes).
    """
    if scores.ndim != 2:
        raise ValueError(f"scores must be [N, C], got shape {tuple(scores.shape)}")
    n, num_classes = scores.shape
    labels = labels.reshape(-1)
    if labels.shape[0] != n:
        raise ValueError(f"scores has {n} rows but labels has {labels.shape[0]} entries")
    if n == 0:
        raise ValueError("cannot compute classification metrics on zero samples")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
    labels = labels.to(device=scores.device, dtype=torch.long)
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        raise ValueError(
            f"labels must lie in [0, {num_classes}) for {num_classes} score columns, "
            f"found values in [{low}, {high}]"
        )
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN; check the features for NaN or overflow")

    rank = stable_descending_rank(scores, labels)
    metrics = {"acc1": int((rank < 1).sum()) / n}
    if num_classes >= 5:
        metrics["acc5"] = int((rank < 5).sum()) / n

    # Recall of class c = correct top-1 among samples of class c; classes absent from the
    # labels have no recall and are left out of the mean, as balanced_accuracy_score does.
    support = torch.bincount(labels, minlength=num_classes)
    hits = torch.bincount(labels[rank == 0], minlength=num_classes)
    present = support > 0
    recall = hits[present].double() / support[present].double()
    metrics["mean_per_class_recall"] = float(recall.mean())
    return Metrics(metrics, SampleOutcomes("classification", {
        "rank": rank.cpu().to(torch.int32), "label": labels.cpu().to(torch.int32)}))
