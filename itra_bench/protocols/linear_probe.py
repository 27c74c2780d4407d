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

from itra_bench.progress import Bar, ProgressReporter
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
    # A float64 sum is NaN or infinite exactly when an entry is (float32 values cannot
    # overflow it), and is ~30x cheaper than an elementwise isfinite over the matrix.
    if not torch.isfinite(x.sum(dtype=torch.float64)):
        raise ValueError(f"{name} features contain NaN or infinite values")


#: scikit-learn's ``LogisticRegression`` default stopping criterion (``tol=1e-4`` on the same
#: objective's largest gradient entry), for ``linear_probe(tol=SKLEARN_TOL)``: 2-5x fewer
#: iterations than the default ``1e-6``, but weakly regularised fits stop short of the optimum
#: (on CLIP-like features 5 points of test top-1 short; benchmarks/README.md).
SKLEARN_TOL = 1e-4


class _Objective:
    """``mean_i CE(W x_i + b, y_i) + l2 ||W||^2`` and its gradient, for a flat ``[C*D + C]``
    parameter vector (``W`` row-major, then ``b``)."""

    def __init__(self, x: Tensor, y: Tensor, num_classes: int, l2: float, chunk_size: int):
        self.n, self.dim = x.shape
        self.classes, self.l2 = num_classes, l2
        # Class-major logits [C, m] = W x^T: for few classes BLAS runs this and its transpose
        # product (P x) 2-4x faster than the sample-major [m, C] layout autograd would use.
        self.chunks = [
            (
                x[s : s + chunk_size],
                y[s : s + chunk_size],
                torch.arange(len(y[s : s + chunk_size]), device=x.device),
            )
            for s in range(0, self.n, chunk_size)
        ]

    def __call__(self, theta: Tensor) -> tuple[float, Tensor]:
        split = self.classes * self.dim
        weight, bias = theta[:split].view(self.classes, self.dim), theta[split:]
        grad = torch.zeros_like(theta)
        grad_w, grad_b = grad[:split].view(self.classes, self.dim), grad[split:]
        # The loss is summed in float64: L-BFGS compares losses that differ in the 7th digit.
        loss = torch.zeros((), dtype=torch.float64, device=theta.device)
        for cx, cy, rows in self.chunks:
            logits = torch.addmm(bias[:, None], weight, cx.T)
            lse = torch.logsumexp(logits, dim=0)
            loss += lse.sum(dtype=torch.float64) - logits[cy, rows].sum(dtype=torch.float64)
            proba = logits.sub_(lse).exp_()
            proba[cy, rows] -= 1.0  # softmax minus one-hot: d CE / d logits
            grad_w.addmm_(proba, cx)
            grad_b += proba.sum(dim=1)
        grad /= self.n
        grad_w.add_(weight, alpha=2 * self.l2)
        loss = loss / self.n + self.l2 * weight.pow(2).sum(dtype=torch.float64)
        return float(loss), grad


def _lbfgs(
    objective: _Objective, theta: Tensor, tol: float, max_iter: int, history: int = 10
) -> Tensor:
    """Minimise ``objective`` from ``theta`` with L-BFGS and a backtracking Armijo line search.

    Stops when the largest gradient entry is at most ``tol`` (scikit-learn's lbfgs criterion),
    after ``max_iter`` iterations, or when the loss no longer decreases in float32 precision.
    """
    loss, grad = objective(theta)
    steps: list[tuple[Tensor, Tensor, float]] = []  # (s, y, 1 / y.s) of recent iterations
    for iteration in range(max_iter):
        if float(grad.abs().max()) <= tol:
            break
        direction = grad.neg()
        alphas = []
        for s, y, rho in reversed(steps):
            alpha = rho * float(s.dot(direction))
            direction.add_(y, alpha=-alpha)
            alphas.append(alpha)
        if steps:
            s, y, rho = steps[-1]
            direction.mul_(1.0 / (rho * float(y.dot(y))))
        for (s, y, rho), alpha in zip(steps, reversed(alphas), strict=True):
            direction.add_(s, alpha=alpha - rho * float(y.dot(direction)))
        slope = float(grad.dot(direction))
        if not slope < 0:  # curvature pairs spoiled by rounding: fall back to steepest descent
            steps.clear()
            direction, slope = grad.neg(), -float(grad.dot(grad))
        # First step: scaled so that the initial move is small, as torch's LBFGS does.
        step = min(1.0, 1.0 / float(grad.abs().sum())) if iteration == 0 else 1.0
        for _ in range(30):
            candidate = theta + step * direction
            new_loss, new_grad = objective(candidate)
            if new_loss <= loss + 1e-4 * step * slope:
                break
            # Minimum of the quadratic through loss, slope and new_loss, kept within [0.1, 0.5].
            curvature = new_loss - loss - slope * step
            ratio = -slope * step / (2 * curvature) if curvature > 0 else 0.5
            step *= min(0.5, max(0.1, ratio))
        else:
            break  # no decrease found: the loss is flat to float precision
        s, y = candidate - theta, new_grad - grad
        ys = float(y.dot(s))
        if ys > 1e-10:
            steps.append((s, y, 1.0 / ys))
            if len(steps) > history:
                steps.pop(0)
        decrease = loss - new_loss
        theta, grad, loss = candidate, new_grad, new_loss
        if decrease <= 1e-9 * max(abs(loss), 1.0):
            break
    return theta


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
    tol: float = 1e-6,
) -> tuple[Tensor, Tensor]:
    """Fit multinomial logistic regression with an L2 penalty on the weights.

    Minimises ``mean_i cross_entropy(W x_i + b, y_i) + l2 * ||W||_F^2`` (see the module
    docstring for the equivalent scikit-learn ``C``) with full-batch L-BFGS in float32 on
    ``device``, until the largest entry of the gradient is at most ``tol`` or for at most
    ``max_iter`` iterations. It starts from ``init = (W, b)`` when given, otherwise from zero
    weights and the log class frequencies as bias. Features are used as given (no
    normalisation). The loss is accumulated over ``chunk_size`` rows at a time, so memory
    beyond ``x`` is about ``chunk_size x C``. Returns ``W`` ``[C, D]`` and ``b`` ``[C]`` on
    ``device``. Deterministic for given inputs.
    """
    _check_xy("training", x, y, num_classes)
    if l2 < 0:
        raise ValueError(f"l2 must be non-negative, got {l2}")
    if tol <= 0:
        raise ValueError(f"tol must be positive, got {tol}")
    x = x.detach().to(device=device, dtype=torch.float32)
    y = y.to(device=device, dtype=torch.long)
    dim = x.shape[1]
    theta = torch.zeros(num_classes * (dim + 1), device=x.device)
    if init is None:
        # The optimum of the bias alone: saves the first few iterations of every cold start.
        counts = torch.bincount(y, minlength=num_classes).clamp(min=1).float()
        theta[num_classes * dim :] = (counts / counts.sum()).log()
    else:
        theta[: num_classes * dim] = init[0].detach().reshape(-1).to(theta)
        theta[num_classes * dim :] = init[1].detach().to(theta)
    with torch.no_grad():
        objective = _Objective(x, y, num_classes, l2, chunk_size)
        theta = _lbfgs(objective, theta, tol, max_iter)
    return theta[: num_classes * dim].view(num_classes, dim).clone(), theta[num_classes * dim :]


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


def _moments(x: Tensor) -> tuple[Tensor, Tensor]:
    mean = x.mean(dim=0)
    # Two passes rather than Tensor.std, whose column-wise reduction is ~10x slower on the CPU.
    std = (x - mean).pow_(2).mean(dim=0).sqrt_()
    # A constant feature carries no information; dividing by 1 keeps it at zero, not NaN.
    return mean, torch.where(std > 0, std, torch.ones_like(std))


def _standardise(train: Tensor, *others: Tensor) -> list[Tensor]:
    mean, std = _moments(train)
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
    tol: float = 1e-6,
    progress: ProgressReporter | None = None,
) -> dict[str, float]:
    """Linear-probe classification metrics, with the L2 strength chosen on validation data.

    Features are L2-normalised, then standardised with the mean and standard deviation of
    the data the classifier is fitted on. For each ``l2`` in ``l2_grid`` (default
    :data:`DEFAULT_L2_GRID`) a classifier (:func:`fit_logistic_regression`) is fitted on the
    training split and scored by top-1 accuracy on the validation split; the best ``l2``
    wins, ties going to the stronger regularisation. The validation split is ``val_x, val_y``
    when given, otherwise a stratified ``val_fraction`` of the training data carved by
    :func:`stratified_split` with ``seed``. The classifier is then refitted on training plus
    validation data with that ``l2`` and evaluated on the test split. Every fit runs until its
    largest gradient entry is at most ``tol`` (:data:`SKLEARN_TOL` is scikit-learn's default
    criterion, faster but less converged) or for ``max_iter`` iterations.

    Returns :func:`classification_metrics` of the test split plus ``l2`` (the chosen strength)
    and ``val_acc1`` (its validation accuracy). Deterministic for given inputs and ``seed``.
    ``progress`` (the run's) shows the fits done, of the grid's and the final one.
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

    progress = progress or ProgressReporter(enabled=False)
    with progress.bar("linear probe: L2 search, final fit", total=len(grid) + 1,
                      unit="fits") as bar:
        metrics = _search_and_fit(fit_x, fit_y, val_x, val_y, test_x, test_y, num_classes,
                                  grid, device, max_iter, tol, bar)
    return metrics


def _search_and_fit(
    fit_x: Tensor,
    fit_y: Tensor,
    val_x: Tensor,
    val_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    num_classes: int,
    grid: list[float],
    device: torch.device | str,
    max_iter: int,
    tol: float,
    bar: Bar,
) -> dict[str, float]:
    """The L2 search and final fit of :func:`linear_probe` on its prepared splits, advancing
    ``bar`` by one per fit."""
    fit_mean, fit_scale = _moments(fit_x)
    fit_std, val_std = (fit_x - fit_mean) / fit_scale, (val_x - fit_mean) / fit_scale
    best_l2, best_acc, best_fit = None, -1.0, None
    init = None
    # Strongest penalty first: each fit starts from the previous, smoother solution, which
    # converges faster, and ">" keeps the stronger l2 on equal accuracy.
    for l2 in reversed(grid):
        init = fit_logistic_regression(
            fit_std, fit_y, num_classes, l2, device, max_iter, init=init, tol=tol
        )
        weight, bias = init
        acc = classification_metrics(val_std @ weight.T + bias, val_y)["acc1"]
        if acc > best_acc:
            best_l2, best_acc, best_fit = l2, acc, init
        bar.advance()

    all_x = torch.cat([fit_x, val_x])
    all_y = torch.cat([fit_y, val_y])
    all_mean, all_scale = _moments(all_x)
    all_std = (all_x - all_mean) / all_scale
    test_std = (_preprocess(test_x, device) - all_mean) / all_scale
    # Warm start: the chosen classifier re-expressed on the new standardisation computes the
    # same scores, and train + validation moves the optimum little from there.
    weight, bias = best_fit
    init = (
        weight * (all_scale / fit_scale),
        bias + weight @ ((all_mean - fit_mean) / fit_scale),
    )
    weight, bias = fit_logistic_regression(
        all_std, all_y, num_classes, best_l2, device, max_iter, init=init, tol=tol
    )
    bar.advance()
    metrics = classification_metrics(test_std @ weight.T + bias, test_y.to(device))
    metrics["l2"] = best_l2
    metrics["val_acc1"] = best_acc
    return metrics
