"""Linear probe: the fit against sklearn's LogisticRegression, model selection, val carving."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression

from itra_bench.protocols.linear_probe import (
    DEFAULT_L2_GRID,
    SKLEARN_TOL,
    fit_logistic_regression,
    linear_probe,
    stratified_split,
)


def _gaussians(num_classes: int, n: int, dim: int, noise: float, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=generator)
    y = torch.randint(0, num_classes, (n,), generator=generator)
    return centres[y] + noise * torch.randn(n, dim, generator=generator), y


def _standardised(train: torch.Tensor, test: torch.Tensor):
    """The probe's preprocessing, written out: L2-normalise, then train mean/std scaling."""
    train, test = F.normalize(train, dim=-1), F.normalize(test, dim=-1)
    mean, std = train.mean(dim=0), train.std(dim=0, unbiased=False)
    return (train - mean) / std, (test - mean) / std


def _sklearn_fit(x: torch.Tensor, y: torch.Tensor, l2: float) -> LogisticRegression:
    # Our objective mean(CE) + l2 * ||W||^2 is sklearn's with C = 1 / (2 n l2).
    c = 1.0 / (2 * len(x) * l2)
    return LogisticRegression(C=c, max_iter=10_000, tol=1e-10).fit(x.double().numpy(), y.numpy())


@pytest.mark.parametrize("l2", [1e-3, 1e-2])
def test_fit_matches_sklearn_logistic_regression(l2: float) -> None:
    x, y = _gaussians(5, 1000, 20, noise=2.0)
    train_x, test_x = _standardised(x[:600], x[600:])
    train_y, test_y = y[:600], y[600:]
    weight, bias = fit_logistic_regression(train_x, train_y, 5, l2, max_iter=500)
    reference = _sklearn_fit(train_x, train_y, l2)

    ours_proba = torch.softmax(test_x @ weight.T + bias, dim=1).numpy()
    theirs_proba = reference.predict_proba(test_x.double().numpy())
    np.testing.assert_allclose(ours_proba, theirs_proba, atol=2e-3)
    np.testing.assert_allclose(weight.numpy(), reference.coef_, atol=2e-3)
    ours_acc = (ours_proba.argmax(axis=1) == test_y.numpy()).mean()
    theirs_acc = reference.score(test_x.double().numpy(), test_y.numpy())
    assert 0.5 < theirs_acc < 0.95
    assert abs(ours_acc - theirs_acc) <= 0.01


def test_penalty_scaling_changes_the_solution() -> None:
    # A wrong factor of 2 (or n) in the penalty must show: compare against a mis-scaled C.
    x, y = _gaussians(4, 400, 10, noise=1.5, seed=1)
    x = F.normalize(x, dim=-1)
    weight, _ = fit_logistic_regression(x, y, 4, 1e-2, max_iter=500)
    right = _sklearn_fit(x, y, 1e-2).coef_
    wrong = _sklearn_fit(x, y, 2e-2).coef_
    assert np.abs(weight.numpy() - right).max() < 2e-3
    assert np.abs(weight.numpy() - wrong).max() > 2e-2


def test_probe_matches_sklearn_end_to_end_with_one_l2() -> None:
    # With a one-value grid the probe refits on all training data (train + carved val).
    x, y = _gaussians(5, 1000, 20, noise=2.0, seed=2)
    metrics = linear_probe(x[:600], y[:600], x[600:], y[600:], 5, l2_grid=[1e-2], max_iter=500)
    train_x, test_x = _standardised(x[:600], x[600:])
    reference = _sklearn_fit(train_x, y[:600], 1e-2)
    assert metrics["l2"] == 1e-2
    assert abs(metrics["acc1"] - reference.score(test_x.double().numpy(), y[600:].numpy())) <= 0.01


def test_chunked_loss_gives_the_same_fit() -> None:
    # Several chunks (the last one short) must sum to the one-chunk objective and gradient.
    x, y = _gaussians(5, 700, 20, noise=2.0, seed=8)
    x = F.normalize(x, dim=-1)
    whole = fit_logistic_regression(x, y, 5, 1e-2, max_iter=500)
    chunked = fit_logistic_regression(x, y, 5, 1e-2, max_iter=500, chunk_size=256)
    torch.testing.assert_close(chunked[0], whole[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(chunked[1], whole[1], atol=1e-4, rtol=0)


def test_search_tolerance_fit_is_close_to_sklearn_default_tol() -> None:
    # scikit-learn's default criterion, offered as SKLEARN_TOL: both land near the optimum.
    x, y = _gaussians(5, 1000, 20, noise=2.0)
    train_x, test_x = _standardised(x[:600], x[600:])
    weight, bias = fit_logistic_regression(train_x, y[:600], 5, 1e-2, tol=SKLEARN_TOL)
    reference = _sklearn_fit(train_x, y[:600], 1e-2)  # tight optimum
    ours_proba = torch.softmax(test_x @ weight.T + bias, dim=1).numpy()
    np.testing.assert_allclose(
        ours_proba, reference.predict_proba(test_x.double().numpy()), atol=1e-2
    )


def test_warm_start_from_the_optimum_stays_there() -> None:
    x, y = _gaussians(4, 400, 10, noise=1.5, seed=1)
    x = F.normalize(x, dim=-1)
    optimum = fit_logistic_regression(x, y, 4, 1e-2, max_iter=500)
    again = fit_logistic_regression(x, y, 4, 1e-2, max_iter=500, init=optimum)
    torch.testing.assert_close(again[0], optimum[0], atol=1e-4, rtol=0)


def _sklearn_search(train_x, train_y, test_x, test_y, grid):
    """linear_probe's protocol written with scikit-learn's LogisticRegression (default tol)."""
    fit_idx, val_idx = stratified_split(train_y, 0.2, seed=0)
    fit_x, val_x = _standardised(train_x[fit_idx], train_x[val_idx])
    fit_y, val_y = train_y[fit_idx].numpy(), train_y[val_idx].numpy()
    best_l2, best_acc = None, -1.0
    for l2 in sorted(grid, reverse=True):
        model = LogisticRegression(C=1 / (2 * len(fit_y) * l2), max_iter=1000)
        acc = model.fit(fit_x.double().numpy(), fit_y).score(val_x.double().numpy(), val_y)
        if acc > best_acc:
            best_l2, best_acc = l2, acc
    order = torch.cat([fit_idx, val_idx])
    all_x, test_std = _standardised(train_x[order], test_x)
    model = LogisticRegression(C=1 / (2 * len(order) * best_l2), max_iter=1000)
    model.fit(all_x.double().numpy(), train_y[order].numpy())
    return best_l2, model.score(test_std.double().numpy(), test_y.numpy())


def test_search_matches_the_same_search_with_sklearn() -> None:
    x, y = _gaussians(6, 1500, 30, noise=3.0, seed=9)
    grid = [1e-4, 1e-3, 1e-2, 1e-1, 1.0]
    ours = linear_probe(x[:1000], y[:1000], x[1000:], y[1000:], 6, l2_grid=grid)
    l2, acc = _sklearn_search(x[:1000], y[:1000], x[1000:], y[1000:], grid)
    assert 0.5 < acc < 0.95
    assert ours["l2"] == l2
    assert abs(ours["acc1"] - acc) <= 0.005


def test_separable_data_is_classified_perfectly() -> None:
    x, y = _gaussians(4, 200, 8, noise=0.05, seed=3)
    metrics = linear_probe(x[:120], y[:120], x[120:], y[120:], 4)
    assert metrics["acc1"] == 1.0
    assert metrics["mean_per_class_recall"] == 1.0
    assert metrics["val_acc1"] == 1.0
    assert set(metrics) == {"acc1", "mean_per_class_recall", "l2", "val_acc1"}
    assert metrics["l2"] in DEFAULT_L2_GRID


def test_validation_ties_go_to_the_strongest_l2() -> None:
    x, y = _gaussians(4, 200, 8, noise=0.05, seed=3)
    grid = [1e-4, 1e-2, 1.0]
    for l2 in grid:  # each l2 alone is perfect on validation: a three-way tie
        assert linear_probe(x[:120], y[:120], x[120:], y[120:], 4, l2_grid=[l2])["val_acc1"] == 1
    assert linear_probe(x[:120], y[:120], x[120:], y[120:], 4, l2_grid=grid)["l2"] == 1.0


def test_selection_uses_the_given_validation_split() -> None:
    x, y = _gaussians(3, 300, 8, noise=0.05, seed=4)
    grid = [1e-4, 1e-1]
    good = linear_probe(
        x[:100],
        y[:100],
        x[200:],
        y[200:],
        3,
        val_x=x[100:200],
        val_y=y[100:200],
        l2_grid=grid,
        max_iter=200,
    )
    assert good["val_acc1"] == 1.0
    # Validation labels shifted by one class: the classifier is right, validation says wrong.
    shifted = linear_probe(
        x[:100],
        y[:100],
        x[200:],
        y[200:],
        3,
        val_x=x[100:200],
        val_y=(y[100:200] + 1) % 3,
        l2_grid=grid,
        max_iter=200,
    )
    assert shifted["val_acc1"] < 0.2


def test_probe_is_deterministic() -> None:
    x, y = _gaussians(4, 300, 12, noise=1.5, seed=5)
    grid = [1e-4, 1e-2, 1.0]
    first = linear_probe(x[:200], y[:200], x[200:], y[200:], 4, l2_grid=grid, seed=7)
    second = linear_probe(x[:200], y[:200], x[200:], y[200:], 4, l2_grid=grid, seed=7)
    assert first == second


def test_stratified_split_is_deterministic_and_stratified() -> None:
    labels = torch.tensor([0] * 50 + [1] * 20 + [2] * 7 + [3] * 2 + [4])
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]
    train, val = stratified_split(labels, 0.2, seed=3)
    again_train, again_val = stratified_split(labels, 0.2, seed=3)
    assert torch.equal(train, again_train) and torch.equal(val, again_val)
    assert not torch.equal(val, stratified_split(labels, 0.2, seed=4)[1])
    # Disjoint, covering, sorted.
    assert torch.equal(torch.sort(torch.cat([train, val]))[0], torch.arange(len(labels)))
    assert torch.equal(val, torch.sort(val)[0])
    # Per class: round(0.2 n) in val, at least one, never the whole class; singletons train.
    val_counts = torch.bincount(labels[val], minlength=5).tolist()
    assert val_counts == [10, 4, 1, 1, 0]


def test_bad_inputs_raise() -> None:
    x, y = _gaussians(3, 30, 4, noise=1.0)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        linear_probe(x, y, x, y, 2)
    with pytest.raises(ValueError, match="both val_x and val_y"):
        linear_probe(x, y, x, y, 3, val_x=x)
    with pytest.raises(ValueError, match="validation split"):
        linear_probe(x[:3], torch.tensor([0, 1, 2]), x, y, 3)
    with pytest.raises(ValueError, match="NaN"):
        linear_probe(x * float("nan"), y, x, y, 3)
    with pytest.raises(ValueError, match="tol must be positive"):
        fit_logistic_regression(x, y, 3, 1e-2, tol=0.0)


@pytest.mark.gpu
def test_cuda_matches_cpu() -> None:
    x, y = _gaussians(5, 1000, 20, noise=2.0, seed=6)
    grid = [1e-3, 1e-1]
    cpu = linear_probe(x[:600], y[:600], x[600:], y[600:], 5, l2_grid=grid)
    cuda = linear_probe(x[:600], y[:600], x[600:], y[600:], 5, l2_grid=grid, device="cuda")
    assert cuda["l2"] == cpu["l2"]
    assert abs(cuda["acc1"] - cpu["acc1"]) <= 0.01
