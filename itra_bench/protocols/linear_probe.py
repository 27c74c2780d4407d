"""Linear probe: multinomial logistic regression on frozen features, L2 strength by validation.

The objective fitted by :func:`fit_logistic_regression`, for ``n`` samples, is

    mean_i cross_entropy(W x_i + b, y_i) + l2 * ||W||_F^2

with the bias ``b`` not penalised. It is the same problem as scikit-learn's
``LogisticRegression(C=1 / (2 * n * l2))`` (multinomial, L2 penalty, lbfgs), whose
objective is ``C * sum_i cross_entropy_i + ||W||_F^2 / 2``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from itra_bench.protocols.classification_metrics import classification_metrics

#: The L2 strengths tried by default: one per decade from 1e-6 to 1e2.
DEFAULT_L2_GRID: tuple[float, ...] = tuple(10.0**e for e in range(-6, 3))


def _check_xy(name: str, x: Tensor, y: Tensor, num_classes: int) -> None:
    if x.ndim != 2:
        raise ValueError(f"{name} features must be [N, D], got shape {tuple(x.shape)}")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(
            f"{name} labels must be [N] with N = {x.shape[0]}, got shape {tuple(y.shape)}"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{name} split is empty")
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise ValueError(f"{name} labels must be integer class indices, got dtype {y.dtype}")
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise ValueError(
            f"{name} labels must lie in [0, {num_classes}), "
            f"found values in [{int(y.min())}, {int(y.max())}]"
        )
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} features contain NaN or infinite values")


def fit_logistic_regression(
    x: Tensor,
    y: Tensor,
    num_classes: int,
    l2: float,
    device: torch.device | str = "cpu",
    max_iter: int = 1000,
    *,
    init: tuple[Tensor, Tensor] | None = None,
    chunk_size: int = 65536,
) -> tuple[Tensor, Tensor]:
    """Fit multinomial logistic regression with an L2 penalty on the weights.

    Minimises ``mean_i cross_entropy(W x_i + b, y_i) + l2 * ||W||_F^2`` (see the module
    docstring for the equivalent scikit-learn ``C``) with full-batch L-BFGS in float32 on
    ``device``, for at most ``max_iter`` iterations, from zero or from ``init = (W, b)``.
    Features are used as given (no normalisation). The loss is accumulated over
    ``chunk_size`` rows at a time, so memory beyond ``x`` is about ``chunk_size x C``.
    Returns ``W`` ``[C, D]`` and ``b`` ``[C]`` on ``device``. Deterministic for given inputs.
    """
    _check_xy("training", x, y, num_classes)
    if l2 < 0:
        raise ValueError(f"l2 must be non-negative, got {l2}")
    x = x.to(device=device, dtype=torch.float32)
    y = y.to(device=device, dtype=torch.long)
    n, dim = x.shape
    if init is None:
        weight = torch.zeros(num_classes, dim, device=x.device)
        bias = torch.zeros(num_classes, device=x.device)
    else:
        weight = init[0].detach().to(device=x.device, dtype=torch.float32).clone()
        bias = init[1].detach().to(device=x.device, dtype=torch.float32).clone()
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=max_iter,
        max_eval=max_iter * 2,
        history_size=20,
        tolerance_grad=1e-6,
        tolerance_change=1e-10,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        optimizer.zero_grad()
        total = torch.zeros((), device=x.device)
        # Backward per chunk so no [N, C] logits matrix is kept for large training sets.
        for start in range(0, n, chunk_size):
            logits = x[start : start + chunk_size] @ weight.T + bias
            loss = F.cross_entropy(logits, y[start : start + chunk_size], reduction="sum") / n
            loss.backward()
            total += loss.detach()
        penalty = l2 * weight.pow(2).sum()
        penalty.backward()
        return total + penalty.detach()

    optimizer.step(closure)
    return weight.detach(), bias.detach()


def stratified_split(labels: Tensor, fraction: float, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Split sample indices into (train, validation), class by class, deterministically.

    From each class with ``n_c >= 2`` samples, ``round(fraction * n_c)`` samples (at least one,
    and at most ``n_c - 1``) go to validation, chosen by a permutation seeded with ``seed``;
    classes with one sample stay in train. Returns two sorted int64 index tensors on the CPU.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
    labels = labels.reshape(-1).cpu().long()
    generator = torch.Generator().manual_seed(seed)
    val_parts = []
    for cls in torch.unique(labels).tolist():
        members = torch.nonzero(labels == cls).flatten()
        count = len(members)
        if count < 2:
            continue
        n_val = min(max(1, math.floor(fraction * count + 0.5)), count - 1)
        val_parts.append(members[torch.randperm(count, generator=generator)[:n_val]])
    val_mask = torch.zeros(len(labels), dtype=torch.bool)
    if val_parts:
        val_mask[torch.cat(val_parts)] = True
    return torch.nonzero(~val_mask).flatten(), torch.nonzero(val_mask).flatten()


def _preprocess(x: Tensor, device: torch.device | str) -> Tensor:
    return F.normalize(x.to(device=device, dtype=torch.float32), dim=-1)


def _standardise(train: Tensor, *others: Tensor) -> list[Tensor]:
    mean = train.mean(dim=0)
    std = train.std(dim=0, unbiased=False)
    # A constant feature carries no information; dividing by 1 keeps it at zero, not NaN.
    std = torch.where(std > 0, std, torch.ones_like(std))
    return [(t - mean) / std for t in (train, *others)]


def linear_probe(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    num_classes: int,
    *,
    val_x: Tensor | None = None,
    val_y: Tensor | None = None,
    l2_grid: Sequence[float] | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    device: torch.device | str = "cpu",
    max_iter: int = 1000,
) -> dict[str, float]:
    """Linear-probe classification metrics, with the L2 strength chosen on validation data.

    Features are L2-normalised, then standardised with the mean and standard deviation of
    the data the classifier is fitted on. For each ``l2`` in ``l2_grid`` (default
    :data:`DEFAULT_L2_GRID`) a classifier (:func:`fit_logistic_regression`) is fitted on the
    training split and scored by top-1 accuracy on the validation split; the best ``l2``
    wins, ties going to the stronger regularisation. The validation split is ``val_x, val_y``
    when given, otherwise a stratified ``val_fraction`` of the training data carved by
    :func:`stratified_split` with ``seed``. The classifier is then refitted on training plus
    validation data with that ``l2`` and evaluated on the test split.

    Returns :func:`classification_metrics` of the test split plus ``l2`` (the chosen strength)
    and ``val_acc1`` (its validation accuracy). Deterministic for given inputs and ``seed``.
    """
    if num_classes < 2:
        raise ValueError(f"a linear probe needs at least 2 classes, got {num_classes}")
    _check_xy("training", train_x, train_y, num_classes)
    _check_xy("test", test_x, test_y, num_classes)
    if train_x.shape[1] != test_x.shape[1]:
        raise ValueError(
            f"training features have dimension {train_x.shape[1]}, test features {test_x.shape[1]}"
        )
    grid = sorted({float(v) for v in (DEFAULT_L2_GRID if l2_grid is None else l2_grid)})
    if not grid or grid[0] < 0:
        raise ValueError(f"l2_grid must hold non-negative values, got {l2_grid}")

    train_x = _preprocess(train_x, device)
    train_y = train_y.to(device=device, dtype=torch.long)
    if (val_x is None) != (val_y is None):
        raise ValueError("give both val_x and val_y, or neither")
    if val_x is None:
        fit_idx, val_idx = stratified_split(train_y, val_fraction, seed)
        if len(val_idx) == 0:
            raise ValueError(
                "cannot carve a validation split: no class has two training samples; "
                "pass val_x and val_y"
            )
        fit_idx, val_idx = fit_idx.to(train_x.device), val_idx.to(train_x.device)
        fit_x, fit_y = train_x[fit_idx], train_y[fit_idx]
        val_x, val_y = train_x[val_idx], train_y[val_idx]
    else:
        _check_xy("validation", val_x, val_y, num_classes)
        if val_x.shape[1] != train_x.shape[1]:
            raise ValueError(
                f"training features have dimension {train_x.shape[1]}, validation features "
                f"{val_x.shape[1]}"
            )
        fit_x, fit_y = train_x, train_y
        val_x, val_y = _preprocess(val_x, device), val_y.to(device=device, dtype=torch.long)

    fit_std, val_std = _standardise(fit_x, val_x)
    best_l2, best_acc = None, -1.0
    init = None
    # Strongest penalty first: each fit starts from the previous, smoother solution, which
    # converges faster, and ">" keeps the stronger l2 on equal accuracy.
    for l2 in reversed(grid):
        init = fit_logistic_regression(fit_std, fit_y, num_classes, l2, device, max_iter, init=init)
        weight, bias = init
        acc = classification_metrics(val_std @ weight.T + bias, val_y)["acc1"]
        if acc > best_acc:
            best_l2, best_acc = l2, acc

    all_x = torch.cat([fit_x, val_x])
    all_y = torch.cat([fit_y, val_y])
    all_std, test_std = _standardise(all_x, _preprocess(test_x, device))
    weight, bias = fit_logistic_regression(all_std, all_y, num_classes, best_l2, device, max_iter)
    metrics = classification_metrics(test_std @ weight.T + bias, test_y.to(device))
    metrics["l2"] = best_l2
    metrics["val_acc1"] = best_acc
    return metrics
