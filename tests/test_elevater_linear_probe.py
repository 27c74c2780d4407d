"""ELEVATER's linear-probe protocol on synthetic features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from itra_bench.threads import torch_threads
from itra_bench.vision_benchmark.few_shot import sample_few_shot
from itra_bench.vision_benchmark.linear_probe import (
    ELEVATER_L2_COARSE,
    ELEVATER_L2_GRID,
    ELEVATER_LR_GRID,
    ElevaterProbeConfig,
    _Heads,
    elevater_linear_probe,
    elevater_probe_shots,
)


@pytest.fixture(autouse=True)
def _one_thread():
    # Thousands of tiny tensor ops: a second intra-op thread only adds synchronisation, and on
    # a busy 2-core machine it makes every op orders of magnitude slower.
    with torch_threads(1):
        yield


def _blobs(n: int, classes: int, dim: int, spread: float, seed: int):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, dim, generator=torch.Generator().manual_seed(99)) * 3
    y = torch.arange(n) % classes
    return centers[y] + spread * torch.randn(n, dim, generator=g), y


def test_grids_are_elevaters() -> None:
    assert ELEVATER_LR_GRID == pytest.approx([1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1])
    assert len(ELEVATER_L2_GRID) == 97
    assert ELEVATER_L2_GRID[0] == pytest.approx(1e-6) and ELEVATER_L2_GRID[-1] == pytest.approx(1e6)
    assert [ELEVATER_L2_GRID[i] for i in ELEVATER_L2_COARSE] == pytest.approx(
        [1e-6, 1e-4, 1e-2, 1.0, 1e2, 1e4, 1e6]
    )
    assert elevater_probe_shots(1) == (2, False) and elevater_probe_shots(5) == (5, True)


def test_separable_data_reaches_full_accuracy_and_search_is_faithful() -> None:
    train_x, train_y = _blobs(100, 5, 16, 1.0, seed=0)
    test_x, test_y = _blobs(200, 5, 16, 1.0, seed=1)
    result = elevater_linear_probe(train_x, train_y, test_x, 5, test_y=test_y)
    assert result.test_score == 1.0
    assert result.probs_test.shape == (200, 5) and result.probs_test.dtype == np.float32
    assert np.allclose(result.probs_test.sum(axis=1), 1.0, atol=1e-5)
    assert (result.probs_test.argmax(axis=1) == test_y.numpy()).all()
    assert result.lr in ELEVATER_LR_GRID and result.l2 in ELEVATER_L2_GRID
    assert result.val_score == 1.0
    # The search: 7 coarse l2 per rate, then at most 2 per rate in each of 4 refinements.
    assert 6 * 7 <= len(result.trace) <= 6 * (7 + 8)
    first = [(lr, l2) for lr, l2, _ in result.trace[: 6 * 7]]
    assert first == [
        (lr, ELEVATER_L2_GRID[j]) for lr in ELEVATER_LR_GRID for j in ELEVATER_L2_COARSE
    ]
    # The winner is the first pair (in ELEVATER's order) reaching the best score.
    best = max(score for _, _, score in result.trace)
    assert result.val_score == best


def test_deterministic_per_seed_and_seed_matters() -> None:
    train_x, train_y = _blobs(60, 3, 8, 4.0, seed=2)
    test_x, _ = _blobs(90, 3, 8, 4.0, seed=3)
    cfg = ElevaterProbeConfig(lr_grid=(1e-2,), epochs=3, extra_final_epochs=2)
    a = elevater_linear_probe(train_x, train_y, test_x, 3, seed=5, config=cfg)
    b = elevater_linear_probe(train_x, train_y, test_x, 3, seed=5, config=cfg)
    c = elevater_linear_probe(train_x, train_y, test_x, 3, seed=6, config=cfg)
    np.testing.assert_array_equal(a.probs_test, b.probs_test)
    assert (a.lr, a.l2, a.trace) == (b.lr, b.l2, b.trace)
    assert not np.array_equal(a.probs_test, c.probs_test)


def test_no_tuning_uses_given_hyperparameters() -> None:
    train_x, train_y = _blobs(40, 4, 8, 1.0, seed=4)
    test_x, test_y = _blobs(40, 4, 8, 1.0, seed=5)
    result = elevater_linear_probe(
        train_x, train_y, test_x, 4, tune=False, lr=0.05, l2=3e-4, test_y=test_y
    )
    assert (result.lr, result.l2, result.val_score, result.trace) == (0.05, 3e-4, None, [])
    assert result.test_score == 1.0
    # A learning rate of 0 leaves the random initial head: not a trained classifier.
    frozen = elevater_linear_probe(train_x, train_y, test_x, 4, tune=False, lr=0.0, l2=0.0)
    assert not np.allclose(frozen.probs_test, result.probs_test)
    with pytest.raises(ValueError, match="tune=False needs"):
        elevater_linear_probe(train_x, train_y, test_x, 4, tune=False, lr=0.1)


def test_heads_match_torch_sgd_and_batchnorm() -> None:
    """One batched step equals nn.BatchNorm1d + nn.Linear + loss + torch.optim.SGD, per head."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 6, generator=g), torch.randint(0, 4, (32,), generator=g)
    y_multi = (torch.rand(32, 4, generator=g) < 0.3).float()
    init = (torch.randn(4, 6, generator=g) * 0.1, torch.randn(4, generator=g) * 0.1)
    lrs, wds = torch.tensor([0.1, 0.01]), torch.tensor([1e-3, 1.0])
    for multilabel, target in ((False, y), (True, y_multi)):
        heads = _Heads(init, lrs, wds, momentum=0.9, nesterov=False)
        for _ in range(3):
            heads.step(x, target, multilabel)
        for m in range(2):
            bn = torch.nn.BatchNorm1d(6, affine=False)
            linear = torch.nn.Linear(6, 4)
            with torch.no_grad():
                linear.weight.copy_(init[0])
                linear.bias.copy_(init[1])
            opt = torch.optim.SGD(
                linear.parameters(), lr=float(lrs[m]), momentum=0.9, weight_decay=float(wds[m])
            )
            loss_fn = torch.nn.BCEWithLogitsLoss() if multilabel else torch.nn.CrossEntropyLoss()
            for _ in range(3):
                opt.zero_grad()
                loss_fn(linear(bn(x)), target).backward()
                opt.step()
            torch.testing.assert_close(heads.weight[:, m, :], linear.weight.detach().T)
            torch.testing.assert_close(heads.bias[m], linear.bias.detach())
            bn.eval()
            torch.testing.assert_close(
                heads.probs(x, m), linear(bn(x)).softmax(dim=-1).detach(), rtol=1e-5, atol=1e-6
            )


def test_multilabel_probe_and_few_shot_pipeline() -> None:
    g = torch.Generator().manual_seed(7)
    dim, classes = 12, 4
    directions = torch.randn(classes, dim, generator=g)
    y_all = (torch.rand(300, classes, generator=g) < 0.35).float()
    x_all = y_all @ directions * 2 + 0.5 * torch.randn(300, dim, generator=g)
    picked = sample_few_shot(y_all[:200].long(), shots=10, seed=0, num_classes=classes)
    cfg = ElevaterProbeConfig(lr_grid=(1e-2, 1e-1), epochs=5, extra_final_epochs=5)
    result = elevater_linear_probe(
        x_all[picked],
        y_all[picked],
        x_all[200:],
        classes,
        multilabel=True,
        test_y=y_all[200:],
        config=cfg,
    )
    assert result.probs_test.shape == (100, classes)
    assert result.l2 in ELEVATER_L2_GRID
    assert result.test_score is not None and result.test_score > 0.8  # 11-point mAP


def test_bad_inputs() -> None:
    x, y = _blobs(20, 2, 4, 1.0, seed=0)
    with pytest.raises(ValueError, match="lie in"):
        elevater_linear_probe(x, y + 5, x, 2)
    with pytest.raises(ValueError, match="same dimension"):
        elevater_linear_probe(x, y, x[:, :3], 2)
    with pytest.raises(ValueError, match="both val_x and val_y"):
        elevater_linear_probe(x, y, x, 2, val_x=x)
