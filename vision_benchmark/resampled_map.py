"""ELEVATER's 11-point mAP of many sets of samples at once (the bootstrap resamples of a
multilabel result), equal to :func:`itra_bench.vision_benchmark.metrics.elevater_metric`
``("11point_mAP", ...)`` of each set.

Calling the metric once per resample sorts every class column in a Python loop: 1,000
resamples of VOC 2007's test set (4,952 images x 20 classes) take about 20 s of CPU. Here
each class is one sort of all resamples together, and the precision-recall curve is read at
the positive samples only.

The curve, thresholds and comparisons are the reference's (see
:mod:`itra_bench.vision_benchmark.metrics`). At a positive sample of score ``v`` the curve's
point is precision ``H / N`` and recall ``H / P``, where ``H`` counts the positives scoring
at least ``v``, ``N`` all samples scoring at least ``v`` and ``P`` all positives: the point
where the run of samples tied at ``v`` ends. The best precision at a recall of at least
``t`` is always reached at such a point (between two positives, precision only falls), the
term at recall 0 is always 1 (the appended point), and classes without a positive in a set
are left out of its mean.
"""

from __future__ import annotations

import numpy as np

#: ELEVATER's recall thresholds (floats as numpy computes them: 0.29999999999999993, ...).
THRESHOLDS = np.linspace(1, 0, 11)
#: Resamples handled at once: bounds the class-major key block to about 32 MB.
_CHUNK_CELLS = 4_000_000
_LITTLE = np.dtype(np.int64).byteorder == "=" and np.little_endian
#: Resamples transposed at once (small blocks stay in cache: about 10x faster than one).
_TRANSPOSE_ROWS = 2


def _class_major_keys(scores: np.ndarray, labels: np.ndarray, dense: bool) -> np.ndarray:
    """``[C, rows, n]`` integer keys that sort as the scores, the label in the lowest bit;
    equal scores have equal ``key >> 1``. ``scores`` and ``labels`` are ``[rows, n, C]``."""
    rows, n, classes = scores.shape
    if dense:
        # Finite scores of any sign: their dense rank among this block's values.
        ranks = np.unique(scores, return_inverse=True)[1].reshape(scores.shape)
    keys = np.empty((classes, rows, n), dtype=np.int64)
    for a in range(0, rows, _TRANSPOSE_ROWS):
        b = min(rows, a + _TRANSPOSE_ROWS)
        if dense:
            block = ranks[a:b].astype(np.int64)
        else:
            # Non-negative doubles below 2 sort as their bit patterns, which leave the top
            # bit free: the label takes the lowest. + 0.0 turns -0.0 into 0.0, its equal.
            block = (scores[a:b] + 0.0).view(np.int64)
        block <<= 1
        block |= labels[a:b] > 0
        keys[:, a:b] = block.transpose(2, 0, 1)
    return keys


def _average_precision(keys: np.ndarray) -> np.ndarray:
    """11-point interpolated AP of one class in each row of ``[rows, n]`` keys (see
    :func:`_class_major_keys`; sorted here, in place): ``[rows]``, NaN where a row has no
    positive."""
    rows, n = keys.shape
    keys.sort(axis=-1)
    # The positives, ascending in score within each row: the lowest byte holds the label
    # bit (numpy's int64 are little-endian on every platform it builds wheels for).
    low_byte = keys.view(np.uint8)[:, ::8] if _LITTLE else keys
    flat = np.flatnonzero(low_byte & 1)
    row, pos = np.divmod(flat, n)
    total = np.bincount(row, minlength=rows)
    ap = np.full(rows, np.nan)
    if row.size == 0:
        return ap
    first_of_row = np.cumsum(total) - total
    # Where the run of equal scores holding each positive starts: its key without the label.
    tied = keys.reshape(-1)[flat] & ~1
    lo = np.empty(row.size, dtype=np.int64)
    for r in np.flatnonzero(total):
        at = slice(first_of_row[r], first_of_row[r] + total[r])
        lo[at] = np.searchsorted(keys[r], tied[at])
    # Positives below the run of v: the index, within its row, of the first positive tied
    # with it (positives sort after the negatives of their run: equal keys but the label).
    group = np.ones(row.size, dtype=bool)
    group[1:] = (row[1:] != row[:-1]) | (lo[1:] != lo[:-1])
    below = np.maximum.accumulate(np.where(group, np.arange(row.size), 0)) - first_of_row[row]
    hits = (total[row] - below).astype(np.float64)
    precision = hits / (n - lo).astype(np.float64)
    recall = hits / total[row].astype(np.float64)
    # Recall falls as the score rises, so the points with recall >= t are a row's first
    # positives: the interpolated precision is the maximum over that prefix.
    have = np.flatnonzero(total)
    precision = np.r_[precision, 0.0]  # reduceat may point one past the end
    at = np.empty((have.size, THRESHOLDS.size))
    for k, t in enumerate(THRESHOLDS):
        count = np.bincount(row, weights=recall >= t, minlength=rows).astype(np.int64)[have]
        bounds = np.stack([first_of_row[have], first_of_row[have] + count], axis=1).reshape(-1)
        at[:, k] = np.maximum.reduceat(precision, bounds)[::2]
        if t <= 0:
            at[:, k] = np.maximum(at[:, k], 1.0)  # the appended point (recall 0, precision 1)
    ap[have] = at.mean(axis=-1)
    return ap


def resampled_eleven_point_map(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """ELEVATER's 11-point mAP of each row: ``scores`` and ``labels`` are ``[rows, n, C]`` (row
    ``r`` holds the ``n`` samples of one resample; labels 0/1), the result is ``[rows]``. A
    row with no positive in any class scores 0, as ELEVATER does."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.ndim != 3 or labels.shape != scores.shape:
        raise ValueError(f"scores and labels must both be [rows, samples, classes], got "
                         f"{scores.shape} and {labels.shape}")
    rows, n, classes = scores.shape
    if scores.size == 0:
        raise ValueError("cannot compute a metric on zero samples")
    low, high = scores.min(), scores.max()  # NaN when any score is
    if not (np.isfinite(low) and np.isfinite(high)):
        # The reference orders NaN its own way and never ties two infinities (their
        # difference is NaN); rare enough to score row by row.
        from itra_bench.vision_benchmark.metrics import elevater_metric

        return np.array([elevater_metric("11point_mAP", scores[r], labels[r])
                         for r in range(rows)], dtype=np.float64)
    dense = not (low >= 0 and high < 2)
    out = np.empty(rows, dtype=np.float64)
    step = max(1, _CHUNK_CELLS // (n * classes))
    for start in range(0, rows, step):
        chunk = slice(start, start + step)
        keys = _class_major_keys(scores[chunk], labels[chunk], dense)
        per_class = np.stack([_average_precision(keys[c]) for c in range(classes)], axis=-1)
        present = ~np.isnan(per_class)
        count = present.sum(axis=-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[chunk] = np.where(count > 0, np.nansum(per_class, axis=-1) / count, 0.0)
    return out
