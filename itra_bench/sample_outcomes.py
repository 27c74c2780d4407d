"""Per-sample outcomes of a result: the arrays that a resampling needs, the statistics that
recompute a metric from them, and the ``.samples.npz`` file kept beside each result JSON.

A task returns its outcomes as ``TaskResult(..., samples=SampleOutcomes(kind, arrays))``.
The *kind* says what the arrays hold and which metrics they reproduce:

==================  ===========================================  ===============================
kind                arrays (one row per evaluation sample)       metrics it recomputes
==================  ===========================================  ===============================
``means``           any ``name -> [n] float``: the metric        ``name``: the mean of its array
                    ``name`` is the mean of its array            (accuracy from 0/1, VQA
                                                                 accuracy, reciprocal rank)
``classification``  ``rank [n]`` (0-based rank of the true       ``acc1``, ``acc5``,
                    class), ``label [n]``                        ``mean_per_class_recall*``
``retrieval``       ``image_rank [captions]``,                   ``image_retrieval_recall@k``,
                    ``text_rank [images]``,                      ``text_retrieval_recall@k``,
                    ``caption_image [captions]``, ``ks``         ``mean_recall``
``correlation``     ``pred [n]``, ``gold [n]``                   ``spearman``, ``pearson``
``binary_scores``   ``score [n]``, ``label [n]`` (0/1)           ``roc_auc``
``multilabel``      ``scores [n, C]``, ``labels [n, C]``         ``11point_mAP`` (ELEVATER's)
``clustering``      ``cluster [n]``, ``label [n]``               ``nmi``, ``ami`` (scikit-learn)
==================  ===========================================  ===============================

The resampled unit is a sample, except for ``retrieval``, where it is an image with all its
captions (a caption's outcome depends on its image). Ranks and predictions are held fixed:
an interval says how much the score would move on another draw of test samples from the
same distribution, not how much it would move after retraining.

Before a result is stored, the runner recomputes its main score from the outcomes and
refuses a task whose outcomes disagree with what it reported.
"""

from __future__ import annotations

import hashlib
import io
import lzma
import math
import struct
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from itra_bench.atomic_io import atomic_write
from itra_bench.bootstrap import (
    CONFIDENCE,
    MAX_CELLS,
    RESAMPLES,
    Interval,
    PairedDifference,
    Range,
    Statistic,
    bootstrap_interval,
    group_mean_interval,
    group_mean_paired,
    mean,
    on_all_samples,
    paired_difference,
    pearson,
    spearman,
)
from itra_bench.errors import UserError
from itra_bench.paths import is_file_name

#: Relative tolerance between a reported metric and its recomputation from the outcomes.
TOLERANCE = 1e-9


class OutcomeMismatchError(UserError):
    """Two results cannot be compared sample by sample, or a samples file is unusable."""


@dataclass
class SampleOutcomes:
    """What each evaluation sample contributed to a result (see the module's table)."""

    kind: str
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown sample-outcome kind {self.kind!r}; one of {sorted(KINDS)}")
        self.arrays = {k: as_array(v) for k, v in self.arrays.items()}
        missing = [a for a in KINDS[self.kind].required if a not in self.arrays]
        if missing:
            raise ValueError(f"{self.kind} outcomes need the arrays {', '.join(missing)}")
        if not self.arrays:
            raise ValueError(f"{self.kind} outcomes need at least one array")

    @property
    def units(self) -> int:
        """How many resampling units there are (samples; images for retrieval)."""
        return len(KINDS[self.kind].units(self.arrays)[0])

    def statistic(self, metric: str) -> tuple[list[np.ndarray], Statistic] | None:
        """Per-unit arrays and the vectorised statistic that gives ``metric`` from them, or
        None when this kind does not define ``metric``."""
        kind = KINDS[self.kind]
        stat = kind.statistic(metric, self.arrays)
        return None if stat is None else (kind.units(self.arrays), stat)

    def value(self, metric: str) -> float | None:
        """``metric`` recomputed on all samples (None when the kind does not define it)."""
        found = self.statistic(metric)
        if found is None:
            return None
        units, stat = found
        return on_all_samples(stat, units)


class Metrics(dict[str, float]):
    """Metric name -> value, as the shared protocols return them, carrying the per-sample
    ``samples`` they were computed from. A :class:`~itra_bench.task.TaskResult` made from
    such a dict records those outcomes without the task doing anything more."""

    def __init__(self, values: Mapping[str, float], samples: SampleOutcomes | None = None
                 ) -> None:
        super().__init__(values)
        self.samples = samples


def as_array(value: object) -> np.ndarray:
    """``value`` as a NumPy array; a torch tensor is detached and moved to the CPU (without
    importing torch here)."""
    detach = getattr(value, "detach", None)
    return np.asarray(detach().cpu().numpy() if detach is not None else value)


@dataclass(frozen=True)
class _Kind:
    required: tuple[str, ...]
    #: Arrays that describe the data rather than the model: equal for two comparable results.
    data: tuple[str, ...]
    units: Callable[[Mapping[str, np.ndarray]], list[np.ndarray]]
    statistic: Callable[[str, Mapping[str, np.ndarray]], Statistic | None]
    #: Whether two models' outcomes of one sample are on one scale, so that a permutation
    #: test may swap them (hits and ranks are; raw scores and cluster ids are not).
    exchangeable: bool = True
    #: Metrics whose bootstrap distribution resampling with replacement displaces from the
    #: score, with their range: their intervals are recentred on the score within it (see
    #: :func:`itra_bench.bootstrap.bootstrap_interval`). A duplicated sample agrees with its
    #: copy, which adds mutual information (NMI, AMI), and ranks a positive right beside a
    #: positive (11-point mAP); means, recalls, correlations and AUC are not displaced.
    recentred: Mapping[str, Range] = field(default_factory=dict)
    #: Where the metric is a mean of per-unit values (accuracy, VQA accuracy, reciprocal
    #: rank), or a mean over classes of per-class means (mean per-class recall): the values
    #: and the classes (None for a plain mean). Such metrics are resampled exactly and at
    #: once (:func:`itra_bench.bootstrap.group_mean_interval`).
    group_means: Callable[[str, Mapping[str, np.ndarray]],
                          tuple[np.ndarray, np.ndarray | None] | None] = \
        lambda metric, arrays: None


# -- means ---------------------------------------------------------------------------------

def _means_statistic(metric: str, arrays: Mapping[str, np.ndarray]) -> Statistic | None:
    if metric not in arrays:
        return None
    names = sorted(arrays)
    column = names.index(metric)
    return lambda *units: mean(units[column])


def _means_values(metric: str, arrays: Mapping[str, np.ndarray]
                  ) -> tuple[np.ndarray, None] | None:
    values = arrays.get(metric)
    return None if values is None or values.ndim != 1 else (values, None)


# -- classification ------------------------------------------------------------------------

def _classification_metric(metric: str) -> int | None:
    """``k`` for ``acc<k>``, 0 for ``mean_per_class_recall*``, None for other metrics."""
    if metric.startswith("acc") and metric[3:].isdigit():
        return int(metric[3:])
    return 0 if metric.startswith("mean_per_class_recall") else None


def _classification_values(metric: str, arrays: Mapping[str, np.ndarray]
                           ) -> tuple[np.ndarray, np.ndarray | None] | None:
    k = _classification_metric(metric)
    if k is None:
        return None
    rank = np.asarray(arrays["rank"])
    return (rank < k, None) if k else (rank == 0, np.asarray(arrays["label"]))


def _classification_statistic(metric: str, arrays: Mapping[str, np.ndarray]
                              ) -> Statistic | None:
    k = _classification_metric(metric)
    if k is None:
        return None
    if k:
        return lambda rank, label: mean(rank < k)
    num_classes = int(arrays["label"].max()) + 1

    def per_class(rank: np.ndarray, label: np.ndarray) -> np.ndarray:
        # Recall of each class present in the resample, averaged over those classes.
        rows = label.shape[0]
        offset = (np.arange(rows)[:, None] * num_classes + label).reshape(-1)
        support = np.bincount(offset, minlength=rows * num_classes).reshape(rows, -1)
        hits = np.bincount(offset, weights=(rank == 0).reshape(-1).astype(np.float64),
                           minlength=rows * num_classes).reshape(rows, -1)
        present = support > 0
        recall = np.where(present, hits / np.maximum(support, 1), 0.0)
        return recall.sum(axis=1) / present.sum(axis=1)
    return per_class


# -- retrieval -----------------------------------------------------------------------------

def _retrieval_units(arrays: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Per image: its text-retrieval hits at each k, its captions' image-retrieval hits at
    each k, and its number of captions."""
    ks = np.asarray(arrays["ks"]).reshape(-1)
    text_rank = np.asarray(arrays["text_rank"])
    image_rank = np.asarray(arrays["image_rank"])
    owner = np.asarray(arrays["caption_image"]).astype(np.int64)
    n_images = len(text_rank)
    text_hits = (text_rank[:, None] < ks[None, :]).astype(np.float64)
    caption_hits = np.stack([np.bincount(owner, weights=(image_rank < k).astype(np.float64),
                                         minlength=n_images) for k in ks], axis=1)
    captions = np.bincount(owner, minlength=n_images).astype(np.float64)
    return [text_hits, caption_hits, captions]


def _retrieval_statistic(metric: str, arrays: Mapping[str, np.ndarray]) -> Statistic | None:
    ks = [int(k) for k in np.asarray(arrays["ks"]).reshape(-1)]

    def recalls(text_hits: np.ndarray, caption_hits: np.ndarray, captions: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
        text = text_hits.mean(axis=-2)                               # [rows, K]
        image = caption_hits.sum(axis=-2) / captions.sum(axis=-1)[..., None]
        return text, image

    for i, k in enumerate(ks):
        if metric == f"text_retrieval_recall@{k}":
            return lambda *u, i=i: recalls(*u)[0][..., i]
        if metric == f"image_retrieval_recall@{k}":
            return lambda *u, i=i: recalls(*u)[1][..., i]
    if metric == "mean_recall":
        def mean_recall(*u: np.ndarray) -> np.ndarray:
            text, image = recalls(*u)
            return (text.sum(axis=-1) + image.sum(axis=-1)) / (2 * len(ks))
        return mean_recall
    return None


# -- correlation, ROC AUC, 11-point mAP, clustering ----------------------------------------

def _correlation_statistic(metric: str, arrays: Mapping[str, np.ndarray]) -> Statistic | None:
    return {"spearman": spearman, "pearson": pearson}.get(metric)


def _per_row(function: Callable[..., float]) -> Statistic:
    """A statistic that calls a plain per-sample-set metric once per resample row (for
    metrics that are not vectorised: scikit-learn's, ELEVATER's)."""
    def statistic(*arrays: np.ndarray) -> np.ndarray:
        return np.array([function(*(a[r] for a in arrays)) for r in range(arrays[0].shape[0])],
                        dtype=np.float64)
    return statistic


def _roc_auc(score: np.ndarray, label: np.ndarray) -> float:
    """Area under the ROC curve as the Mann-Whitney statistic (ties count one half), which
    is what scikit-learn's ``roc_auc_score`` computes; NaN without both labels."""
    from scipy.stats import rankdata

    positive = label.astype(bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _binary_statistic(metric: str, arrays: Mapping[str, np.ndarray]) -> Statistic | None:
    return _per_row(_roc_auc) if metric == "roc_auc" else None


def _multilabel_statistic(metric: str, arrays: Mapping[str, np.ndarray]) -> Statistic | None:
    if metric != "11point_mAP":
        return None
    # Vectorised over resamples, and bit-identical to ELEVATER's metric on each one.
    from itra_bench.vision_benchmark.resampled_map import resampled_eleven_point_map

    return resampled_eleven_point_map


def _clustering_statistic(metric: str, arrays: Mapping[str, np.ndarray]) -> Statistic | None:
    if metric == "nmi":
        return _nmi_rows
    if metric != "ami":
        return None

    def ami(cluster: np.ndarray, label: np.ndarray) -> float:
        from sklearn.metrics import adjusted_mutual_info_score

        return float(adjusted_mutual_info_score(label, cluster))
    return _per_row(ami)


def _nmi_rows(cluster: np.ndarray, label: np.ndarray) -> np.ndarray:
    """scikit-learn's ``normalized_mutual_info_score(label, cluster)`` (arithmetic mean
    normalisation, natural log) of each row, from per-row contingency tables."""
    rows, n = label.shape
    # From the arrays given: two models compared on one set of labels may number their
    # clusters differently.
    clusters, classes = int(cluster.max()) + 1, int(label.max()) + 1
    out = np.empty(rows)
    step = max(1, MAX_CELLS // (classes * clusters))
    for start in range(0, rows, step):
        lab, clu = label[start:start + step], cluster[start:start + step]
        r = lab.shape[0]
        code = ((np.arange(r)[:, None] * classes + lab) * clusters + clu).reshape(-1)
        table = np.bincount(code, minlength=r * classes * clusters).reshape(
            r, classes, clusters).astype(np.float64)
        pi, pj = table.sum(axis=2), table.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            outer = pi[:, :, None] * pj[:, None, :]
            terms = np.where(table > 0, table / n * (np.log(table) - np.log(outer)
                                                     + np.log(n)), 0.0)
            # As scikit-learn: terms below machine epsilon are zero, the sum is clipped at 0.
            terms = np.where(np.abs(terms) < np.finfo(np.float64).eps, 0.0, terms)
            mi = np.clip(terms.sum(axis=(1, 2)), 0.0, None)

            def entropy(p: np.ndarray) -> np.ndarray:
                return -np.where(p > 0, p / n * np.log(p / n), 0.0).sum(axis=1)
            nmi = mi / ((entropy(pi) + entropy(pj)) / 2)
        n_classes, n_clusters = (pi > 0).sum(axis=1), (pj > 0).sum(axis=1)
        nmi = np.where(mi == 0, 0.0, nmi)
        out[start:start + r] = np.where((n_classes == 1) & (n_clusters == 1), 1.0, nmi)
    return out


def _named(*names: str) -> Callable[[Mapping[str, np.ndarray]], list[np.ndarray]]:
    return lambda arrays: [np.asarray(arrays[n]) for n in names]


KINDS: dict[str, _Kind] = {
    "means": _Kind((), (), lambda arrays: [np.asarray(arrays[n]) for n in sorted(arrays)],
                   _means_statistic, group_means=_means_values),
    "classification": _Kind(("rank", "label"), ("label",), _named("rank", "label"),
                            _classification_statistic,
                            group_means=_classification_values),
    "retrieval": _Kind(("image_rank", "text_rank", "caption_image", "ks"),
                       ("caption_image", "ks"), _retrieval_units, _retrieval_statistic),
    "correlation": _Kind(("pred", "gold"), ("gold",), _named("pred", "gold"),
                         _correlation_statistic, exchangeable=False),
    "binary_scores": _Kind(("score", "label"), ("label",), _named("score", "label"),
                           _binary_statistic, exchangeable=False),
    "multilabel": _Kind(("scores", "labels"), ("labels",), _named("scores", "labels"),
                        _multilabel_statistic, exchangeable=False,
                        recentred={"11point_mAP": (0.0, 1.0)}),
    "clustering": _Kind(("cluster", "label"), ("label",), _named("cluster", "label"),
                        _clustering_statistic, exchangeable=False,
                        recentred={"nmi": (0.0, 1.0), "ami": (-math.inf, 1.0)}),
}


# -- checks, intervals, comparisons --------------------------------------------------------

def check_outcomes(outcomes: SampleOutcomes, metrics: Mapping[str, float], metric: str) -> None:
    """Raise ValueError when the outcomes do not recompute ``metrics[metric]``."""
    value = outcomes.value(metric)
    if value is None:
        raise ValueError(f"{outcomes.kind} outcomes do not define the metric {metric!r}")
    reported = float(metrics[metric])
    both_nan = math.isnan(value) and math.isnan(reported)
    if not (both_nan or abs(value - reported) <= TOLERANCE * max(1.0, abs(reported))):
        raise ValueError(f"the per-sample outcomes give {metric} = {value!r}, but the task "
                         f"reported {reported!r}")


def interval(outcomes: SampleOutcomes, metric: str, *, resamples: int = RESAMPLES,
             confidence: float = CONFIDENCE, seed: int = 0) -> Interval | None:
    """The bootstrap interval of ``metric`` (None when the kind lacks it): percentile, or
    recentred on the score for the metrics that resampling displaces (``recentred``)."""
    found = outcomes.statistic(metric)
    if found is None:
        return None
    grouped = KINDS[outcomes.kind].group_means(metric, outcomes.arrays)
    if grouped is not None:
        exact = group_mean_interval(*grouped, resamples=resamples, confidence=confidence,
                                    seed=seed)
        if exact is not None:
            return exact
    units, stat = found
    return bootstrap_interval(stat, *units, resamples=resamples, confidence=confidence,
                              seed=seed, recentre=KINDS[outcomes.kind].recentred.get(metric))


def compare(a: SampleOutcomes, b: SampleOutcomes, metric: str, *, resamples: int = RESAMPLES,
            confidence: float = CONFIDENCE, seed: int = 0) -> PairedDifference:
    """``metric`` of ``b`` minus that of ``a`` on the same samples, with its paired bootstrap
    interval and p-value (a paired permutation test where the kind's outcomes are on one
    scale, else the bootstrap p-value; see :func:`itra_bench.bootstrap.paired_difference`).
    ``.b`` of the result is A's score and ``.a`` B's. Raises :class:`OutcomeMismatchError`
    when the two were not computed on the same samples (their data arrays differ)."""
    if a.kind != b.kind:
        raise OutcomeMismatchError(f"the outcomes are of different kinds ({a.kind}, {b.kind})")
    for name in KINDS[a.kind].data:
        x, y = a.arrays.get(name), b.arrays.get(name)
        if x is None or y is None or x.shape != y.shape or not np.array_equal(x, y):
            raise OutcomeMismatchError(f"the two results were computed on different samples "
                                       f"(their {name!r} arrays differ)")
    if a.kind == "means" and sorted(a.arrays) != sorted(b.arrays):
        raise OutcomeMismatchError("the two results record different per-sample metrics")
    found_a, found_b = a.statistic(metric), b.statistic(metric)
    if found_a is None or found_b is None:
        raise OutcomeMismatchError(f"{a.kind} outcomes do not define the metric {metric!r}")
    (units_a, stat), (units_b, _) = found_a, found_b
    if len(units_a[0]) != len(units_b[0]):
        raise OutcomeMismatchError(f"the two results have {len(units_a[0])} and "
                                   f"{len(units_b[0])} samples")
    # Both functions give their first argument minus their second: B - A.
    grouped_a, grouped_b = (KINDS[a.kind].group_means(metric, o.arrays) for o in (a, b))
    if grouped_a is not None and grouped_b is not None:
        # The groups (labels) are data arrays, equal for both: checked above.
        exact = group_mean_paired(grouped_b[0], grouped_a[0], grouped_a[1],
                                  resamples=resamples, confidence=confidence, seed=seed)
        if exact is not None:
            return exact
    return paired_difference(stat, units_b, units_a, resamples=resamples,
                             confidence=confidence, seed=seed,
                             exchangeable=KINDS[a.kind].exchangeable,
                             recentre=KINDS[a.kind].recentred.get(metric))


# -- the samples file ----------------------------------------------------------------------

def samples_path(result_path: Path) -> Path:
    """Where the outcomes of the result at ``result_path`` are kept."""
    return result_path.with_name(result_path.stem + ".samples.npz")


def write_outcomes(path: Path, outcomes: SampleOutcomes) -> dict[str, object]:
    """Write ``outcomes`` compressed and atomically; returns the record the result JSON keeps
    (file name, SHA-256, kind, units)."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{f"a{i}": v for i, v in enumerate(outcomes.arrays.values())},
                        names=np.array(list(outcomes.arrays), dtype=str),
                        kind=np.array(outcomes.kind))
    data = buffer.getvalue()
    atomic_write(path, lambda f: f.write(data))
    return {"file": path.name, "sha256": hashlib.sha256(data).hexdigest(),
            "kind": outcomes.kind, "units": outcomes.units}


def read_outcomes(result_path: Path, record: Mapping[str, object]) -> SampleOutcomes:
    """The outcomes stored beside the result at ``result_path``; raises
    :class:`OutcomeMismatchError` naming the file when it is missing, altered or unreadable."""
    meta = record.get("samples")
    if not isinstance(meta, Mapping):
        raise OutcomeMismatchError(
            f"{result_path} has no per-sample outcomes (written by an older itra-bench, or by "
            "a task that does not record them); rerun that task with --overwrite")
    name = meta.get("file")
    if not is_file_name(name):
        # Written by hand or altered: never follow it out of the result's folder.
        raise OutcomeMismatchError(
            f"{result_path} names its per-sample outcomes {name!r}, which is not the name of "
            "a file beside it; rerun that task with --overwrite")
    path = result_path.with_name(name)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise OutcomeMismatchError(f"{path}: the per-sample outcomes of {result_path.name} "
                                   f"are unreadable ({exc.strerror}); rerun that task with "
                                   "--overwrite") from exc
    if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
        raise OutcomeMismatchError(f"{path} does not match the hash that {result_path.name} "
                                   "recorded (the file was changed or replaced); rerun that "
                                   "task with --overwrite")
    try:
        npz = _read_npz(data)
        names = [str(n) for n in npz["names"]]
        arrays = {n: npz[f"a{i}"] for i, n in enumerate(names)}
        return SampleOutcomes(str(npz["kind"]), arrays)
    except (KeyError, ValueError, TypeError, OSError, EOFError, OverflowError, RuntimeError,
            NotImplementedError, zlib.error, lzma.LZMAError, struct.error,
            zipfile.BadZipFile) as exc:
        # What zipfile, zlib and numpy raise on a damaged archive or array (RuntimeError:
        # an encrypted member; NotImplementedError: an unknown compression method).
        raise OutcomeMismatchError(f"{path} is not a samples file ({type(exc).__name__}: "
                                   f"{exc}); rerun that task with --overwrite") from exc


#: The most that deflate expands data (about 1032:1); a member claiming more is damaged.
_MAX_EXPANSION = 1100


def _read_npz(data: bytes) -> dict[str, np.ndarray]:
    """The arrays of the ``.npz`` archive ``data`` (no pickled objects), allocating no more
    than the archive can hold: each size a header claims is checked before it is read."""
    out = {}
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            if info.file_size > _MAX_EXPANSION * max(info.compress_size, 1):
                raise ValueError(f"{info.filename} claims {info.file_size} bytes")
            with archive.open(info) as member:
                raw = member.read(info.file_size + 1)
            if len(raw) != info.file_size:
                raise ValueError(f"{info.filename} holds {len(raw)} bytes, not "
                                 f"{info.file_size}")
            array = io.BytesIO(raw)
            version = np.lib.format.read_magic(array)
            shape, _, dtype = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)(array)
            size = math.prod(shape) * dtype.itemsize
            if dtype.hasobject or size != len(raw) - array.tell():
                raise ValueError(f"{info.filename}: a {dtype} array of shape {shape} in "
                                 f"{len(raw) - array.tell()} bytes")
            array.seek(0)
            out[info.filename.removesuffix(".npy")] = np.lib.format.read_array(
                array, allow_pickle=False)
    return out
