"""ELEVATER's few-shot training subsets and its train/validation split, reproduced index for index.

ELEVATER builds a k-shot training set with ``DatasetManifest.sample_few_shot_subset(k, seed)``
of the ``vision-datasets`` package (called from ``construct_dataloader`` in
``vision_benchmark/evaluation/feature.py``), then carves a validation part from it with
``get_dataloader(..., val_split=0.2)`` (same file). Both are deterministic, and both are
reproduced here on the list of training targets in the order of the dataset's index file,
so the same images are chosen as ELEVATER chooses for the same seed.
"""

from __future__ import annotations

import math
import random
from collections import Counter

import numpy as np
import torch
from torch import Tensor


def _targets_numpy(targets: np.ndarray | Tensor | list) -> np.ndarray:
    if isinstance(targets, Tensor):
        return targets.detach().cpu().numpy()
    return np.asarray(targets)


def _label_lists(targets: np.ndarray, num_classes: int) -> list[list[int]]:
    if targets.ndim == 1:
        if len(targets) and (targets.min() < 0 or targets.max() >= num_classes):
            raise ValueError(
                f"targets must lie in [0, {num_classes}), found [{targets.min()}, {targets.max()}]"
            )
        return [[int(t)] for t in targets]
    if targets.ndim == 2 and targets.shape[1] == num_classes:
        return [np.flatnonzero(row > 0).tolist() for row in targets]
    raise ValueError(
        f"targets must be [N] class indices or [N, {num_classes}] 0/1 multilabel rows, "
        f"got shape {targets.shape}"
    )


def sample_few_shot(
    targets: np.ndarray | Tensor | list, shots: int, seed: int, num_classes: int
) -> Tensor:
    """Indices of ELEVATER's ``shots``-per-class training subset for ``seed``.

    ``targets`` is ``[N]`` integer classes, or ``[N, num_classes]`` 0/1 rows for multilabel
    datasets, in the order of the training index file. ``shots == -1`` returns every index
    in order (ELEVATER's "full" setting). Otherwise, as ``sample_few_shot_subset`` of
    ``vision_datasets`` does (``vision_datasets/common/manifest_dataset.py``), the images are
    shuffled with ``random.Random(seed).shuffle`` and visited in that order:

    - an image with no label is kept while fewer than ``shots`` such images are kept;
    - an image whose classes all have ``shots`` kept images already is skipped;
    - otherwise it is kept if its least-sampled class has at most ``shots / 2`` images or its
      most-sampled class at most ``1.5 * shots``, and its classes' counts go up by one each;
    - the walk stops as soon as every class has at least ``shots`` images.

    For multiclass targets this keeps exactly ``min(shots, n_c)`` images of each class ``c``:
    the first ones in the shuffled order. For multilabel targets a class can end with more
    than ``shots`` images (an image counts for all its classes) or fewer (when its images
    were skipped or run out); the rule above is the whole definition.

    Returns an int64 tensor of indices into ``targets`` in the order ELEVATER's subset lists
    them (the shuffled order), which is the order :func:`elevater_train_val_split` expects.
    Deterministic for given arguments.
    """
    array = _targets_numpy(targets)
    labels = _label_lists(array, num_classes)
    n = len(labels)
    if shots == -1:
        return torch.arange(n, dtype=torch.long)
    if shots <= 0:
        raise ValueError(f"shots must be a positive number of images per class or -1, got {shots}")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    counts = [0] * num_classes
    negatives = 0
    chosen: list[int] = []
    for index in order:
        image_labels = labels[index]
        if not image_labels:
            if negatives < shots:
                negatives += 1
                chosen.append(index)
            continue
        label_counts = [counts[c] for c in image_labels]
        if min(label_counts) >= shots:
            continue
        if min(label_counts) <= shots / 2 or max(label_counts) <= 1.5 * shots:
            chosen.append(index)
            for c in image_labels:
                counts[c] += 1
        if min(counts) >= shots:
            break
    return torch.tensor(chosen, dtype=torch.long)


def elevater_train_val_split(
    targets: np.ndarray | Tensor | list, val_split: float = 0.2
) -> tuple[Tensor, Tensor]:
    """ELEVATER's (train, validation) split of a training set, as index tensors into ``targets``.

    ``targets`` is ``[N]`` integer classes or ``[N, C]`` 0/1 multilabel rows, in the order of
    the (few-shot) training set. Follows ``get_dataloader(..., val_split)`` in
    ``vision_benchmark/evaluation/feature.py``, which is not random:

    - multiclass: from each class with ``n_c`` samples, its first ``ceil(n_c * val_split)``
      samples in order go to validation;
    - multilabel: each class needs ``ceil(n_pos_c * val_split)`` validation positives; while
      some class (lowest index first) still needs positives, its first not yet taken positive
      sample goes to validation and counts for all of that sample's classes.

    The training indices are the rest, in the order ``list(set(range(N)) - val)`` gives in
    CPython (the order ELEVATER's ``Subset`` holds them, which its seeded shuffling indexes
    into); the validation indices are sorted. Returns two int64 tensors.
    """
    array = _targets_numpy(targets)
    n = len(array)
    if array.ndim == 1:
        val: list[int] = []
        for label, count in Counter(array.tolist()).items():
            take = math.ceil(count * val_split)
            val.extend(np.flatnonzero(array == label)[:take].tolist())
    elif array.ndim == 2:
        remaining = (array > 0).astype(np.int64)
        need = np.ceil(remaining.sum(axis=0) * val_split)
        val = []
        pending = np.flatnonzero(need > 0)
        while pending.size > 0:
            sample = int(np.flatnonzero(remaining[:, pending[0]] > 0)[0])
            val.append(sample)
            need -= remaining[sample]
            remaining[sample] = 0
            pending = np.flatnonzero(need > 0)
    else:
        raise ValueError(f"targets must be [N] or [N, C], got shape {array.shape}")
    val_set = set(val)
    train = list(set(range(n)) - val_set)
    return torch.tensor(train, dtype=torch.long), torch.tensor(sorted(val_set), dtype=torch.long)
