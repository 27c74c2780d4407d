"""Visual entailment (SNLI-VE style) with frozen image-text embeddings: three classes,
``entailment``, ``neutral`` and ``contradiction``, for an (image premise, text hypothesis) pair.

Two protocols:

- **Zero-shot thresholds.** The score of a pair is the cosine similarity of the image and
  hypothesis embeddings. Two thresholds ``t_lo <= t_hi`` map it to a class: ``s >= t_hi`` is
  entailment, ``s < t_lo`` contradiction, anything between neutral. :func:`choose_thresholds`
  picks them on labelled (development) pairs by exhaustive search, :func:`apply_thresholds`
  applies them.
- **Cross-modal transfer** (TAP-C, Song et al. 2022, "CLIP Models are Few-shot Learners",
  section on visual entailment): a classifier trained on *text* premises (the caption the
  image was annotated from) and hypotheses is applied unchanged with the *image* embedding in
  place of the premise embedding. :func:`fuse` builds the classifier's input;
  :func:`train_transfer_classifier` trains it.

All functions are pure functions of tensors; labels are class indices in :data:`LABELS` order.
:func:`entailment_metrics` carries the 0/1 outcome of each pair (per-sample outcomes of kind
``means``, array ``acc1``).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from itra_bench.sample_outcomes import Metrics, SampleOutcomes
from itra_bench.tasks.snli_ve.entailment_config import TransferConfig

LABELS = ("entailment", "neutral", "contradiction")
ENTAILMENT, NEUTRAL, CONTRADICTION = 0, 1, 2


def _check_labels(labels: Tensor, n: int) -> Tensor:
    labels = labels.reshape(-1)
    if labels.shape[0] != n:
        raise ValueError(f"{n} scores or predictions but {labels.shape[0]} labels")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integer class indices, got {labels.dtype}")
    if n and (int(labels.min()) < 0 or int(labels.max()) >= len(LABELS)):
        raise ValueError(f"labels must lie in [0, {len(LABELS)})")
    return labels.to(torch.long)


def pair_similarities(premises: Tensor, hypotheses: Tensor) -> Tensor:
    """Cosine similarity of row ``i`` of ``premises`` with row ``i`` of ``hypotheses``
    (both ``[n, D]``), as float32 ``[n]``."""
    if premises.shape != hypotheses.shape or premises.ndim != 2:
        raise ValueError(f"premise and hypothesis features must both be [n, D], got "
                         f"{tuple(premises.shape)} and {tuple(hypotheses.shape)}")
    return (F.normalize(premises.float(), dim=-1) * F.normalize(hypotheses.float(), dim=-1)
            ).sum(dim=-1)


@dataclass(frozen=True)
class Thresholds:
    """``low`` (t_lo) and ``high`` (t_hi); ``inf`` means the class it bounds is never predicted
    (``low = -inf`` is never returned: the lowest candidate already predicts no contradiction).
    ``accuracy`` is the accuracy they reach on the pairs they were chosen on."""

    low: float
    high: float
    accuracy: float

    def as_details(self) -> dict[str, float | None]:
        """JSON-safe values: an infinite threshold becomes ``None``."""
        return {"t_lo": self.low if math.isfinite(self.low) else None,
                "t_hi": self.high if math.isfinite(self.high) else None,
                "threshold_accuracy": self.accuracy}


def apply_thresholds(similarities: Tensor, low: float, high: float) -> Tensor:
    """Class per score: entailment when ``s >= high``, contradiction when ``s < low``, else
    neutral (``low <= high``)."""
    if low > high:
        raise ValueError(f"t_lo ({low}) must not exceed t_hi ({high})")
    s = similarities.reshape(-1)
    pred = torch.full(s.shape, NEUTRAL, dtype=torch.long)
    pred[s.cpu() < low] = CONTRADICTION
    pred[s.cpu() >= high] = ENTAILMENT
    return pred


def choose_thresholds(similarities: Tensor, labels: Tensor) -> Thresholds:
    """The thresholds ``t_lo <= t_hi`` that maximise accuracy of :func:`apply_thresholds` on
    these scored, labelled pairs.

    Candidates for each threshold are the distinct scores themselves plus ``+inf``: every way
    of cutting the sorted scores into a low (contradiction), middle (neutral) and high
    (entailment) run is reached by exactly one candidate pair, so the search is exhaustive. It
    runs in O(n log n) with prefix counts: for each ``t_lo``, the best ``t_hi >= t_lo`` comes
    from a suffix maximum. Among equally accurate choices the smallest ``t_lo`` wins, then the
    smallest ``t_hi`` (deterministic).
    """
    s = similarities.reshape(-1).detach().cpu().double()
    n = s.shape[0]
    labels = _check_labels(labels.cpu(), n)
    if n == 0:
        raise ValueError("choosing thresholds needs at least one labelled pair")
    if not torch.isfinite(s).all():
        raise ValueError("similarities contain NaN or infinite values")
    values, inverse = torch.unique(s, sorted=True, return_inverse=True)
    m = values.shape[0]
    counts = np.zeros((m, len(LABELS)), dtype=np.int64)
    np.add.at(counts, (inverse.numpy(), labels.numpy()), 1)
    # below[k, c]: pairs of class c scoring under candidate k (k = m is +inf).
    below = np.vstack([np.zeros((1, len(LABELS)), dtype=np.int64), counts.cumsum(axis=0)])
    total_entail = int(below[m, ENTAILMENT])
    # correct(i, j) = below[i, C] + (below[j, N] - below[i, N]) + (total_E - below[j, E])
    gain = below[:, NEUTRAL] - below[:, ENTAILMENT]
    best_j = np.empty(m + 1, dtype=np.int64)
    j_star = m
    for j in range(m, -1, -1):  # suffix argmax, preferring the smaller j on ties
        if gain[j] >= gain[j_star]:
            j_star = j
        best_j[j] = j_star
    correct = (below[:, CONTRADICTION] - below[:, NEUTRAL] + total_entail
               + gain[best_j])
    i = int(np.argmax(correct))  # first maximum: the smallest t_lo
    j = int(best_j[i])
    candidates = [*values.tolist(), math.inf]
    return Thresholds(candidates[i], candidates[j], int(correct[i]) / n)


def entailment_metrics(predictions: Tensor, labels: Tensor) -> Metrics:
    """Accuracy overall and per class, named as the classification protocols name them,
    carrying each pair's 0/1 outcome (array ``acc1``).

    - ``acc1``: fraction of pairs whose predicted class is the label;
    - ``recall_<class>`` for each class present in ``labels``: the accuracy on the pairs of
      that class (its recall);
    - ``mean_per_class_recall``: the mean of those (scikit-learn's balanced accuracy).
    """
    pred = predictions.reshape(-1).cpu().long()
    labels = _check_labels(labels.cpu(), pred.shape[0])
    if pred.shape[0] == 0:
        raise ValueError("no pairs to score")
    # Counts divided in float64: a float32 mean is off by up to 1e-7 of the exact fraction.
    hit = (pred == labels).double()
    metrics = {"acc1": float(hit.sum()) / len(hit)}
    per_class = []
    for c, name in enumerate(LABELS):
        mask = labels == c
        if mask.any():
            metrics[f"recall_{name}"] = float(hit[mask].sum()) / int(mask.sum())
            per_class.append(metrics[f"recall_{name}"])
    metrics["mean_per_class_recall"] = sum(per_class) / len(per_class)
    return Metrics(metrics, SampleOutcomes("means", {"acc1": hit.numpy()}))


def fuse(premises: Tensor, hypotheses: Tensor) -> Tensor:
    """The transfer classifier's input for ``[n, D]`` premise and hypothesis embeddings:
    ``[p, h, p + h, p - h, p * h]`` (``[n, 5D]``) of the L2-normalised ``p`` and ``h``.

    TAP-C fuses the two embeddings this way; normalising first puts image and text
    embeddings, whose norms differ, on the same scale, as CLIP's similarity does.
    """
    p = F.normalize(premises.float(), dim=-1)
    h = F.normalize(hypotheses.float(), dim=-1)
    return torch.cat([p, h, p + h, p - h, p * h], dim=-1)


@dataclass
class PairFeatures:
    """Premise/hypothesis pairs as rows into two feature tables (texts repeat across pairs,
    so they are stored once): pair ``k`` is ``premises[premise_index[k]]`` with
    ``hypotheses[hypothesis_index[k]]``."""

    premises: Tensor
    hypotheses: Tensor
    premise_index: Tensor
    hypothesis_index: Tensor

    def __len__(self) -> int:
        return int(self.premise_index.shape[0])

    def fused(self, rows: Tensor, device: torch.device | str = "cpu") -> Tensor:
        """:func:`fuse` of the pairs ``rows``, on ``device``."""
        rows = rows.cpu()
        return fuse(self.premises[self.premise_index[rows]].to(device),
                    self.hypotheses[self.hypothesis_index[rows]].to(device))


@dataclass
class TransferResult:
    """The trained classifier (in eval mode, on the training device) and its history."""

    classifier: nn.Module
    best_epoch: int
    dev_accuracy: float
    train_loss: list[float] = field(default_factory=list)
    dev_accuracies: list[float] = field(default_factory=list)


def predict(classifier: nn.Module, pairs: PairFeatures, batch_size: int = 4096) -> Tensor:
    """Predicted class per pair (CPU int64)."""
    device = next(classifier.parameters()).device
    out = []
    with torch.inference_mode():
        for start in range(0, len(pairs), batch_size):
            rows = torch.arange(start, min(start + batch_size, len(pairs)))
            out.append(classifier(pairs.fused(rows, device)).argmax(dim=-1).cpu())
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def train_transfer_classifier(train: PairFeatures, train_labels: Tensor, dev: PairFeatures,
                              dev_labels: Tensor, config: TransferConfig | None = None,
                              seed: int = 0, device: torch.device | str = "cpu"
                              ) -> TransferResult:
    """Train the TAP-C style classifier on ``train`` (text premises) and keep the epoch that
    is most accurate on ``dev``. Deterministic for a given seed and device."""
    config = config or TransferConfig()
    if config.epochs < 1 or config.batch_size < 1 or config.hidden_dim < 1:
        raise ValueError(f"epochs, batch_size and hidden_dim must be positive: {config}")
    train_labels = _check_labels(train_labels.cpu(), len(train))
    dev_labels = _check_labels(dev_labels.cpu(), len(dev))
    if len(train) == 0 or len(dev) == 0:
        raise ValueError("the transfer classifier needs training and development pairs")
    dim = train.premises.shape[1]
    if train.hypotheses.shape[1] != dim or dev.premises.shape[1] != dim:
        raise ValueError("premise and hypothesis features must have the same dimension")
    # Parameters are drawn on the CPU from the seed, so every device starts alike.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        classifier = nn.Sequential(nn.Linear(5 * dim, config.hidden_dim), nn.ReLU(),
                                   nn.Linear(config.hidden_dim, len(LABELS)))
    classifier = classifier.to(device)
    optimiser = torch.optim.AdamW(classifier.parameters(), lr=config.lr,
                                  weight_decay=config.weight_decay)
    order_generator = torch.Generator().manual_seed(seed)
    labels_on_device = train_labels.to(device)
    best_state, best_epoch, best_acc = classifier.state_dict(), 0, -1.0
    losses, dev_accs = [], []
    for epoch in range(1, config.epochs + 1):
        classifier.train()
        order = torch.randperm(len(train), generator=order_generator)
        total = 0.0
        for start in range(0, len(train), config.batch_size):
            rows = order[start:start + config.batch_size]
            loss = F.cross_entropy(classifier(train.fused(rows, device)),
                                   labels_on_device[rows.to(device)])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(rows)
        classifier.eval()
        acc = int((predict(classifier, dev) == dev_labels).sum()) / len(dev)
        losses.append(total / len(train))
        dev_accs.append(acc)
        if acc > best_acc:
            best_state = copy.deepcopy(classifier.state_dict())
            best_epoch, best_acc = epoch, acc
    classifier.load_state_dict(best_state)
    classifier.eval()
    return TransferResult(classifier, best_epoch, best_acc, losses, dev_accs)
