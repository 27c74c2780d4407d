"""Resampling statistics for scores: percentile bootstrap intervals (recentred on the score
for statistics that resampling itself inflates), paired differences with a permutation
p-value, and Holm's correction across tasks.

A *statistic* maps arrays whose first axis is the resample to one value per resample: the
mean of 0/1 outcomes is ``lambda correct: correct.mean(axis=-1)``. Each input array holds
one row per evaluation sample (a test image, a query, a sentence pair); a resample draws
samples with replacement, the same draw for every array, so that paired quantities (a
prediction and its gold score, two models' outcomes on one image) stay paired.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

#: Defaults: 1,000 resamples (as is usual for percentile intervals of a mean) at 95 %.
RESAMPLES = 1000
CONFIDENCE = 0.95
#: Resampled values held at once (all arrays together): about 64 MB of float64.
MAX_CELLS = 8_000_000

Statistic = Callable[..., np.ndarray]
#: The lowest and highest value a statistic can take.
Range = tuple[float, float]


@dataclass(frozen=True)
class Interval:
    """A confidence interval ``[low, high]`` around ``estimate``."""

    estimate: float
    low: float
    high: float
    confidence: float
    resamples: int

    @property
    def half_width(self) -> float:
        """Half the interval's width (``score ± half_width`` where the interval is
        symmetric)."""
        return (self.high - self.low) / 2

    def as_record(self) -> dict[str, float | int]:
        """The interval as result files store it."""
        return {"low": self.low, "high": self.high, "confidence": self.confidence,
                "resamples": self.resamples}


@dataclass(frozen=True)
class PairedDifference:
    """Model A's score minus model B's on the same samples, with its paired bootstrap
    interval and a two-sided paired permutation p-value."""

    a: float
    b: float
    difference: Interval
    p_value: float
    #: The difference on each bootstrap resample (for averaging over tasks).
    distribution: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False,
                                     compare=False)


def _arrays(samples: Sequence[np.ndarray]) -> list[np.ndarray]:
    arrays = [np.asarray(a) for a in samples]
    if not arrays:
        raise ValueError("a statistic needs at least one array of per-sample values")
    n = len(arrays[0])
    if n == 0:
        raise ValueError("no evaluation samples to resample")
    if any(len(a) != n for a in arrays):
        raise ValueError(f"per-sample arrays differ in length: {[len(a) for a in arrays]}")
    return arrays


def on_all_samples(statistic: Statistic, arrays: Sequence[np.ndarray]) -> float:
    """The statistic on all samples at once (one resample that draws each sample once)."""
    return float(np.asarray(statistic(*(np.asarray(a)[None] for a in arrays))).reshape(-1)[0])


def resample_indices(n: int, resamples: int, seed: int, width: int = 1
                     ) -> Iterator[np.ndarray]:
    """Rows of ``n`` indices drawn with replacement, ``resamples`` rows in all, yielded in
    blocks whose resampled values (``width`` per sample: a row of class scores has one per
    class) stay within :data:`MAX_CELLS`; the same seed gives the same rows."""
    rng = np.random.default_rng(seed)
    block = max(1, MAX_CELLS // (n * max(1, width)))
    done = 0
    while done < resamples:
        rows = min(block, resamples - done)
        yield rng.integers(0, n, size=(rows, n), dtype=np.int32 if n < 2**31 else np.int64)
        done += rows


def bootstrap_distribution(statistic: Statistic, *samples: np.ndarray,
                           resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """The statistic on each of ``resamples`` bootstrap resamples of the samples."""
    arrays = _arrays(samples)
    width = sum(int(np.prod(a.shape[1:])) for a in arrays)
    out = [np.asarray(statistic(*(a[idx] for a in arrays)), dtype=np.float64)
           for idx in resample_indices(len(arrays[0]), resamples, seed, width)]
    return np.concatenate(out)


def _percentiles(values: np.ndarray, confidence: float, centre: float | None = None,
                 within: Range = (-np.inf, np.inf)) -> tuple[float, float]:
    """The ends of the central ``confidence`` share of ``values``; with a ``centre``, moved by
    as much as moves the median of ``values`` onto it (where both are defined), and kept
    ``within`` the range of the statistic."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie between 0 and 1, got {confidence}")
    tail = (1 - confidence) / 2
    low, median, high = np.nanpercentile(values, [100 * tail, 50, 100 * (1 - tail)])
    if centre is None or not np.isfinite(centre) or not np.isfinite(median):
        return float(low), float(high)
    # The median, not the mean (the usual bias estimate): a few outlying resamples (a class
    # that lost its only positive) cannot move it, and it lies between the ends by definition.
    # Each end's distance from the median, added to the centre: the signs survive rounding,
    # so the centre lies inside to the last bit. Percentile ends are resampled values and so
    # never leave the statistic's range; shifted ones can, and cutting them back to it loses
    # no coverage (not past the centre, which rounding can put just outside: NMI 1 + 2e-16).
    return (float(max(min(within[0], centre), centre + (low - median))),
            float(min(max(within[1], centre), centre + (high - median))))


def _median_shift(values: np.ndarray, centre: float) -> float:
    """How far the median of ``values`` lies above ``centre`` (0 where either is undefined)."""
    if not np.isfinite(centre) or not np.isfinite(values).any():
        return 0.0
    return float(np.nanpercentile(values, 50)) - centre


def bootstrap_interval(statistic: Statistic, *samples: np.ndarray,
                       resamples: int = RESAMPLES, confidence: float = CONFIDENCE,
                       seed: int = 0, recentre: Range | None = None) -> Interval:
    """The percentile bootstrap interval of ``statistic`` over the samples. With
    ``recentre`` (the statistic's range), that of the bootstrap distribution shifted so that
    its median is the estimate, within that range: for statistics that resampling with
    replacement displaces, such as mutual information, which duplicated samples inflate.
    The estimate then always lies inside."""
    arrays = _arrays(samples)
    estimate = on_all_samples(statistic, arrays)
    values = bootstrap_distribution(statistic, *arrays, resamples=resamples, seed=seed)
    if recentre is None:
        low, high = _percentiles(values, confidence)
    else:
        low, high = _percentiles(values, confidence, estimate, recentre)
    return Interval(estimate, low, high, confidence, resamples)


def paired_difference(statistic: Statistic, a: Sequence[np.ndarray], b: Sequence[np.ndarray],
                      *, resamples: int = RESAMPLES, confidence: float = CONFIDENCE,
                      seed: int = 0, exchangeable: bool = True, recentre: Range | None = None
                      ) -> PairedDifference:
    """``statistic(a) - statistic(b)`` where ``a`` and ``b`` are two models' per-sample arrays
    on the same samples (row ``i`` of each is sample ``i``).

    The interval resamples the samples (the same draw for both models). With ``recentre``
    (the statistic's range) the resampled differences are shifted so that their median is
    the observed difference (see :func:`bootstrap_interval`; resampling inflates the two
    scores by different amounts), and the bootstrap p-value and ``distribution`` are those
    of the shifted differences.

    The p-value is that of a paired permutation test: under the null hypothesis that the
    models are exchangeable, each sample's two outcomes are swapped with probability 1/2;
    the p-value is the share of ``resamples`` swaps whose difference is at least as large in
    absolute value as the observed one, counting the observed assignment (so it is never 0).

    Swapping needs outcomes on one scale (0/1 hits, ranks, reciprocal ranks). Where the two
    models' values are not (raw similarity scores behind a correlation or an AUC, cluster
    ids), pass ``exchangeable=False``: the p-value is then the bootstrap one, twice the
    smaller share of resampled differences on either side of 0, counted as above.
    """
    a_arrays, b_arrays = _arrays(a), _arrays(b)
    if len(a_arrays) != len(b_arrays) or len(a_arrays[0]) != len(b_arrays[0]):
        raise ValueError("the two models' per-sample arrays must match in number and length")
    k = len(a_arrays)

    def diff(*arrays: np.ndarray) -> np.ndarray:
        return np.asarray(statistic(*arrays[:k]), dtype=np.float64) - \
            np.asarray(statistic(*arrays[k:]), dtype=np.float64)

    both = [*a_arrays, *b_arrays]
    score_a, score_b = on_all_samples(statistic, a_arrays), on_all_samples(statistic, b_arrays)
    observed = score_a - score_b
    distribution = bootstrap_distribution(diff, *both, resamples=resamples, seed=seed)
    if recentre is None:
        low, high = _percentiles(distribution, confidence)
    else:
        low, high = _percentiles(distribution, confidence, observed,
                                 (recentre[0] - recentre[1], recentre[1] - recentre[0]))
        distribution = distribution - _median_shift(distribution, observed)
    interval = Interval(observed, low, high, confidence, resamples)
    if not exchangeable:
        side = min(int(np.sum(distribution <= 0)), int(np.sum(distribution >= 0)))
        p_value = 2 * (1 + side) / (1 + resamples)
        return PairedDifference(score_a, score_b, interval, min(1.0, p_value), distribution)
    n = len(a_arrays[0])
    rng = np.random.default_rng(seed + 1)
    width = sum(int(np.prod(x.shape[1:])) for x in both)
    block = max(1, MAX_CELLS // (n * width))
    extreme, done = 0, 0
    while done < resamples:
        rows = min(block, resamples - done)
        swap = rng.random((rows, n)) < 0.5
        swapped_a = [np.where(_expand(swap, x), y[None], x[None]) for x, y in
                     zip(a_arrays, b_arrays, strict=True)]
        swapped_b = [np.where(_expand(swap, x), x[None], y[None]) for x, y in
                     zip(a_arrays, b_arrays, strict=True)]
        d = diff(*swapped_a, *swapped_b)
        # A tolerance, so that floating noise in an exactly equal difference still counts.
        extreme += int(np.sum(np.abs(d) >= abs(observed) - 1e-12))
        done += rows
    p_value = (1 + extreme) / (1 + resamples)
    return PairedDifference(score_a, score_b, interval, min(1.0, p_value), distribution)


#: Outcomes with at most this many distinct (group, value) cells are resampled exactly and at
#: once, as multinomial counts of the cells, instead of by drawing sample indices.
MAX_EXACT_CELLS = 4096


def _cells(columns: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray] | None:
    """The distinct rows of the stacked ``columns``, sorted (first column slowest), and how
    many samples each has; None when there are more than :data:`MAX_EXACT_CELLS`."""
    key = np.zeros(len(columns[0]), dtype=np.int64)
    levels = []
    for column in columns:
        values, index = np.unique(np.asarray(column, dtype=np.float64), return_inverse=True)
        if len(values) > MAX_EXACT_CELLS:
            return None
        key = key * len(values) + index.reshape(-1)
        levels.append(values)
    keys, counts = np.unique(key, return_counts=True)
    if len(keys) > MAX_EXACT_CELLS:
        return None
    cells = np.empty((len(keys), len(columns)))
    for j in range(len(columns) - 1, -1, -1):
        keys, digit = np.divmod(keys, len(levels[j]))
        cells[:, j] = levels[j][digit]
    return cells, counts


def _group_starts(group: np.ndarray) -> np.ndarray:
    """Where each group's run of cells starts (cells are sorted by group)."""
    return np.flatnonzero(np.r_[True, group[1:] != group[:-1]])


def _group_sums(counts: np.ndarray, starts: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Per row of cell ``counts``: the sum of the cells' values within each group."""
    return np.add.reduceat(np.asarray(counts, dtype=np.float64) * value, starts, axis=-1)


def _mean_of_group_means(sums: np.ndarray, support: np.ndarray) -> np.ndarray:
    """The mean over groups with samples of each group's mean."""
    present = support > 0
    means = np.where(present, sums / np.where(present, support, 1), 0.0)
    return means.sum(axis=-1) / present.sum(axis=-1)


def _group_means(counts: np.ndarray, group: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Per resample row of cell ``counts``: the mean over the groups present of each group's
    mean value (with one group, the plain mean)."""
    starts = _group_starts(group)
    return _mean_of_group_means(_group_sums(counts, starts, value),
                                _group_sums(counts, starts, np.ones_like(value)))


def group_mean_interval(values: np.ndarray, groups: np.ndarray | None = None, *,
                        resamples: int = RESAMPLES, confidence: float = CONFIDENCE,
                        seed: int = 0) -> Interval | None:
    """:func:`bootstrap_interval` of the mean over groups of each group's mean value (no
    groups: the plain mean, e.g. accuracy from 0/1 hits; groups = labels: mean per-class
    recall), drawn exactly: a resample's counts of the distinct (group, value) cells are
    multinomial. None when the values take too many distinct values for that."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or len(v) == 0:
        raise ValueError("values must be a non-empty vector of per-sample values")
    g = np.zeros(len(v)) if groups is None else np.asarray(groups)
    found = _cells([g, v])
    if found is None:
        return None
    cells, freq = found
    n = len(v)
    counts = np.random.default_rng(seed).multinomial(n, freq / n, size=resamples)
    estimate = float(_group_means(freq[None].astype(np.float64), cells[:, 0], cells[:, 1])[0])
    dist = _group_means(counts.astype(np.float64), cells[:, 0], cells[:, 1])
    low, high = _percentiles(dist, confidence)
    return Interval(estimate, low, high, confidence, resamples)


def group_mean_paired(a: np.ndarray, b: np.ndarray, groups: np.ndarray | None = None, *,
                      resamples: int = RESAMPLES, confidence: float = CONFIDENCE,
                      seed: int = 0) -> PairedDifference | None:
    """:func:`paired_difference` of the statistic of :func:`group_mean_interval` for two
    models' values on the same samples, drawn exactly: resamples as multinomial counts of
    the distinct (group, value A, value B) cells, and the permutation null as, in each cell
    where the two values differ, a Binomial(count, 1/2) number of samples left unswapped.
    None when there are too many distinct cells for that."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or len(x) == 0:
        raise ValueError("the two models' values must be non-empty vectors of one length")
    g = np.zeros(len(x)) if groups is None else np.asarray(groups)
    found = _cells([g, x, y])
    if found is None:
        return None
    cells, freq = found
    n, group, va, vb = len(x), cells[:, 0], cells[:, 1], cells[:, 2]

    def diff(counts: np.ndarray) -> np.ndarray:
        return _group_means(counts, group, va) - _group_means(counts, group, vb)

    full = freq[None].astype(np.float64)
    score_a = float(_group_means(full, group, va)[0])
    score_b = float(_group_means(full, group, vb)[0])
    observed = score_a - score_b
    rng = np.random.default_rng(seed)
    dist = diff(rng.multinomial(n, freq / n, size=resamples).astype(np.float64))
    low, high = _percentiles(dist, confidence)
    # Permutation: group supports stay; a swapped sample gives A its B value and B its A
    # value, which changes something only in cells where the two differ.
    differ = np.flatnonzero(va != vb)
    starts = _group_starts(group)
    support = _group_sums(full, starts, np.ones_like(va))[0]
    kept = np.random.default_rng(seed + 1).binomial(freq[differ], 0.5,
                                                    size=(resamples, len(differ)))
    gap = np.zeros((resamples, len(freq)))
    # Per cell, A's sum minus B's: kept samples give va - vb each, swapped ones vb - va.
    gap[:, differ] = (2 * kept - freq[differ]) * (va - vb)[differ]
    null = _mean_of_group_means(np.add.reduceat(gap, starts, axis=-1), support)
    extreme = int(np.sum(np.abs(null) >= abs(observed) - 1e-12))
    p_value = min(1.0, (1 + extreme) / (1 + resamples))
    return PairedDifference(score_a, score_b, Interval(observed, low, high, confidence,
                                                       resamples), p_value, dist)


def _expand(mask: np.ndarray, like: np.ndarray) -> np.ndarray:
    """``mask`` [rows, n] broadcast over the trailing axes of per-sample values ``like``."""
    return mask.reshape(mask.shape + (1,) * (like.ndim - 1))


def holm(p_values: Sequence[float], alpha: float = 0.05) -> list[bool]:
    """Which hypotheses Holm's step-down procedure rejects at family-wise level ``alpha``
    (in the order given)."""
    order = np.argsort(np.asarray(p_values, dtype=np.float64), kind="stable")
    m = len(order)
    rejected = [False] * m
    for rank, i in enumerate(order):
        if p_values[i] > alpha / (m - rank):
            break
        rejected[i] = True
    return rejected


def mean(values: np.ndarray) -> np.ndarray:
    """The mean over the last axis (accuracy from 0/1 outcomes, recall@k from hits)."""
    return np.asarray(values, dtype=np.float64).mean(axis=-1)


def _rank_rows(x: np.ndarray) -> np.ndarray:
    """Average ranks along the last axis (ties share the mean of their ranks), as
    scipy.stats.rankdata gives them."""
    order = np.argsort(x, axis=-1, kind="stable")
    sorted_x = np.take_along_axis(x, order, axis=-1)
    n = x.shape[-1]
    ranks = np.empty_like(x, dtype=np.float64)
    for row in range(x.shape[0]):
        s = sorted_x[row]
        starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
        ends = np.r_[starts[1:], n]
        avg = (starts + ends + 1) / 2.0  # 1-based mean rank of each run of ties
        ranks[row, order[row]] = np.repeat(avg, ends - starts)
    return ranks


def pearson(pred: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Pearson's r between two score vectors, per resample row (NaN for a constant row)."""
    x = np.asarray(pred, dtype=np.float64)
    y = np.asarray(gold, dtype=np.float64)
    x = x - x.mean(axis=-1, keepdims=True)
    y = y - y.mean(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (x * y).sum(axis=-1) / np.sqrt((x * x).sum(axis=-1) * (y * y).sum(axis=-1))


def spearman(pred: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Spearman's rho between two score vectors, per resample row."""
    x = np.atleast_2d(np.asarray(pred, dtype=np.float64))
    y = np.atleast_2d(np.asarray(gold, dtype=np.float64))
    return pearson(_rank_rows(x), _rank_rows(y))
