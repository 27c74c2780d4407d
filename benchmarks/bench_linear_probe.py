"""Linear-probe L2 search: itra-bench's torch L-BFGS against scikit-learn on the same grid.

Both sides solve the same problems on the same features and split, and pick ``l2`` by the
same rule:

- features: L2-normalised, then standardised with the statistics of the data each classifier
  is fitted on (as ``itra_bench.protocols.linear_probe.linear_probe`` does);
- validation: the stratified 20% split of ``stratified_split(train_y, 0.2, seed=0)``;
- objective for strength ``l2`` on ``n`` fitted samples:
  ``mean_i CE_i + l2 * ||W||^2`` (bias free), which is scikit-learn's multinomial
  ``LogisticRegression(C = 1 / (2 * n * l2))`` (lbfgs) objective ``C * sum_i CE_i + ||W||^2 / 2``;
- grid: ``DEFAULT_L2_GRID`` = 1e-6 ... 1e2, one per decade (9 values); the best validation
  top-1 wins, ties to the stronger penalty; then one refit on train + validation with it and
  top-1 on the test split.

Ours: ``linear_probe(train_x, train_y, test_x, test_y, C, l2_grid=grid)`` (L-BFGS in torch,
float32, analytic gradient, stopping at the same criterion as scikit-learn: largest gradient
entry <= 1e-4; each fit warm-started from the previous, stronger-penalty solution, the final
refit from the chosen one; at most 1000 iterations). scikit-learn: the same loop written with
``LogisticRegression`` (lbfgs, float64, ``max_iter=1000``, ``tol=1e-4`` default), cold start
(its default) and, as a second peer, ``warm_start=True`` along the same strongest-first order.

Data (``--data synthetic``, the default): 10 classes, 5000 training and 2000 test samples of
512-d features: class means ``N(0, I) * 0.06`` plus unit Gaussian noise in a random 64-d
subspace and ``0.3`` isotropic noise (test top-1 about 97% after the probe's normalisation).
``--data digits``: scikit-learn's digits (1797 images) through a fixed random ReLU projection
to 512-d, split 70/30. ``--data clip``: CLIP-like embeddings, 100 classes, 40 training and 20
test samples per class, 512-d, unit norm: a large shared direction (as CLIP image embeddings
have), class directions, a 32-d "style" subspace shared across classes, isotropic noise.

Usage::

    python benchmarks/bench_linear_probe.py --threads 1 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from itra_bench.protocols.linear_probe import (
    DEFAULT_L2_GRID,
    SKLEARN_TOL,
    linear_probe,
    stratified_split,
)


def synthetic(seed: int = 0) -> tuple[torch.Tensor, ...]:
    """10-class, 512-d Gaussian features of realistic difficulty (see the module docstring)."""
    g = torch.Generator().manual_seed(seed)
    classes, dim, n_train, n_test = 10, 512, 5000, 2000
    means = torch.randn(classes, dim, generator=g)
    basis = torch.linalg.qr(torch.randn(dim, 64, generator=g)).Q  # [512, 64]

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, classes, (n,), generator=g)
        noise = torch.randn(n, 64, generator=g) @ basis.T + 0.3 * torch.randn(n, dim, generator=g)
        return means[y] * 0.06 + noise, y

    train_x, train_y = draw(n_train)
    test_x, test_y = draw(n_test)
    return train_x, train_y, test_x, test_y


def digits(seed: int = 0) -> tuple[torch.Tensor, ...]:
    """scikit-learn digits through a fixed random projection to 512-d, 70/30 split."""
    from sklearn.datasets import load_digits

    data = load_digits()
    g = torch.Generator().manual_seed(seed)
    x = torch.tensor(data.data, dtype=torch.float32)
    x = torch.relu(x @ torch.randn(64, 512, generator=g))
    y = torch.tensor(data.target)
    order = torch.randperm(len(y), generator=g)
    cut = int(0.7 * len(y))
    return x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]


def clip_like(seed: int = 0) -> tuple[torch.Tensor, ...]:
    """100-class, unit-norm 512-d CLIP-like embeddings (see the module docstring)."""
    g = torch.Generator().manual_seed(seed)
    classes, dim = 100, 512
    shared = F.normalize(torch.randn(dim, generator=g), dim=0)
    directions = F.normalize(torch.randn(classes, dim, generator=g), dim=1)
    style = torch.linalg.qr(torch.randn(dim, 32, generator=g)).Q  # [512, 32]

    def draw(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(classes).repeat_interleave(per_class)
        n = len(y)
        x = (
            2.0 * shared
            + 0.12 * directions[y]
            + 0.25 * torch.randn(n, 32, generator=g) @ style.T
            + 0.02 * torch.randn(n, dim, generator=g)
        )
        return F.normalize(x, dim=1), y

    train_x, train_y = draw(40)
    test_x, test_y = draw(20)
    return train_x, train_y, test_x, test_y


def _standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    mean, std = train.mean(axis=0), train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return [(t - mean) / std for t in (train, *others)]


def sklearn_probe(train_x, train_y, test_x, test_y, grid, warm: bool) -> dict[str, float]:
    """The same protocol as ``linear_probe``, fitted with scikit-learn's LogisticRegression."""
    from sklearn.linear_model import LogisticRegression

    fit_idx, val_idx = stratified_split(train_y, 0.2, seed=0)
    x = F.normalize(train_x.float(), dim=-1).numpy().astype(np.float64)
    y = train_y.numpy()
    fit_x, val_x = _standardise(x[fit_idx.numpy()], x[val_idx.numpy()])
    fit_y, val_y = y[fit_idx.numpy()], y[val_idx.numpy()]
    n = len(fit_y)
    model = LogisticRegression(max_iter=1000, warm_start=warm)
    best_l2, best_acc = None, -1.0
    for l2 in sorted(grid, reverse=True):
        model.set_params(C=1.0 / (2 * n * l2))
        model.fit(fit_x, fit_y)
        acc = float((model.predict(val_x) == val_y).mean())
        if acc > best_acc:
            best_l2, best_acc = l2, acc
    all_x = np.concatenate([x[fit_idx.numpy()], x[val_idx.numpy()]])
    all_y = np.concatenate([fit_y, val_y])
    test = F.normalize(test_x.float(), dim=-1).numpy().astype(np.float64)
    all_std, test_std = _standardise(all_x, test)
    final = LogisticRegression(C=1.0 / (2 * len(all_y) * best_l2), max_iter=1000)
    final.fit(all_std, all_y)
    return {"acc1": float((final.predict(test_std) == test_y.numpy()).mean()), "l2": best_l2}


DATA = {"synthetic": synthetic, "digits": digits, "clip": clip_like}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=sorted(DATA), default="synthetic")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--tol", type=float, default=SKLEARN_TOL, help="our fits' gradient tolerance (1e-4)"
    )
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args()

    from threadpoolctl import threadpool_limits

    load_before = os.getloadavg()[0]
    torch.set_num_threads(args.threads)
    train_x, train_y, test_x, test_y = DATA[args.data]()
    classes = int(train_y.max()) + 1
    grid = list(DEFAULT_L2_GRID)
    runs: dict[str, list[float]] = {"ours": [], "sklearn": [], "sklearn_warm": []}
    results: dict[str, dict[str, float]] = {}
    with threadpool_limits(args.threads):
        # Untimed warm-up on a slice: first-call costs (thread pools, lazy imports) out of
        # the figures.
        linear_probe(train_x[:300], train_y[:300], test_x[:50], test_y[:50], classes, l2_grid=grid)
        sklearn_probe(train_x[:300], train_y[:300], test_x[:50], test_y[:50], grid, False)
        for _ in range(args.repeats):
            # Alternate the three in every repeat, so drift in machine load hits all of them.
            start = time.perf_counter()
            results["ours"] = linear_probe(
                train_x, train_y, test_x, test_y, classes, l2_grid=grid, tol=args.tol
            )
            runs["ours"].append(time.perf_counter() - start)
            for name, warm in (("sklearn", False), ("sklearn_warm", True)):
                start = time.perf_counter()
                results[name] = sklearn_probe(train_x, train_y, test_x, test_y, grid, warm)
                runs[name].append(time.perf_counter() - start)
    report = {
        "data": args.data,
        "threads": args.threads,
        "repeats": args.repeats,
        "grid": grid,
        "tol": args.tol,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus",
        "load_avg_before": load_before,
        "load_avg_after": os.getloadavg()[0],
    }
    for name, times in runs.items():
        report[name] = {
            "seconds_median": statistics.median(times),
            "seconds_all": times,
            "test_acc1": results[name]["acc1"],
            "chosen_l2": results[name]["l2"],
        }
    for peer in ("sklearn", "sklearn_warm"):
        report[f"speedup_vs_{peer}"] = (
            report[peer]["seconds_median"] / report["ours"]["seconds_median"]
        )
        report[f"acc_gap_points_vs_{peer}"] = 100 * (
            report["ours"]["test_acc1"] - report[peer]["test_acc1"]
        )
    print(json.dumps(report, indent=2))
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(report, handle, indent=2)


if __name__ == "__main__":
    main()
