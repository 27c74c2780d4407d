"""Per-sample outcomes of a result: the arrays that a resampling needs, the checks, intervals
and paired comparisons computed from them, and the ``.samples.npz`` file kept beside each
result JSON. Each kind's statistics, which recompute its metrics, are in
:mod:`itra_bench.outcome_kinds`.

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
``multilabel``      ``scores [n, C]``, ``labels [n, C]``         what plugins provide (ELEVATER:
                                                                 ``11point_mAP``)
``clustering``      ``cluster [n]``, ``label [n]``               ``nmi``, ``ami`` (scikit-learn)
==================  ===========================================  ===============================

Plugins teach a kind further metrics through the ``itra_bench_outcome_statistics`` hook
(:class:`itra_bench.outcome_statistics.OutcomeStatistic`), looked up in
:func:`itra_bench.registry.current_registry`; with the plugin disabled, such a metric is not
recomputed: it gets no interval and cannot be compared.

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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from itra_bench.atomic_io import atomic_write
from itra_bench.bootstrap import (
    CONFIDENCE,
    RESAMPLES,
    Interval,
    PairedDifference,
    Range,
    Statistic,
    bootstrap_interval,
    group_mean_interval,
    group_mean_paired,
    on_all_samples,
    paired_difference,
)
from itra_bench.errors import UserError
from itra_bench.outcome_kinds import KINDS, plugin_statistic
from itra_bench.paths import is_file_name
from itra_bench.vocabulary import current_outcome_arrays

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

    def _definition(self, metric: str) -> tuple[Statistic, Range | None] | None:
        """The statistic of ``metric`` and its range when its intervals are recentred: the
        kind's own, else a loaded plugin's; None when neither defines ``metric``."""
        kind = KINDS[self.kind]
        stat = kind.statistic(metric, self.arrays)
        if stat is not None:
            return stat, kind.recentred.get(metric)
        provided = plugin_statistic(self.kind, metric)
        return None if provided is None else (provided.statistic, provided.recentred)

    def statistic(self, metric: str) -> tuple[list[np.ndarray], Statistic] | None:
        """Per-unit arrays and the vectorised statistic that gives ``metric`` from them, or
        None when neither this kind nor a loaded plugin defines ``metric``."""
        found = self._definition(metric)
        return None if found is None else (KINDS[self.kind].units(self.arrays), found[0])

    def recentred(self, metric: str) -> Range | None:
        """The range of ``metric`` when resampling displaces its bootstrap distribution (its
        intervals are then recentred on the score), else None."""
        found = self._definition(metric)
        return None if found is None else found[1]

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


def _undefined(kind: str, metric: str) -> str:
    """Why outcomes of ``kind`` cannot recompute ``metric``."""
    return (f"{kind} outcomes do not define the metric {metric!r}, and no loaded plugin "
            "recomputes it from them (was the plugin that provides it disabled?)")


# -- checks, intervals, comparisons --------------------------------------------------------

def check_outcomes(outcomes: SampleOutcomes, metrics: Mapping[str, float], metric: str) -> None:
    """Raise ValueError when the outcomes do not recompute ``metrics[metric]``."""
    value = outcomes.value(metric)
    if value is None:
        raise ValueError(_undefined(outcomes.kind, metric))
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
                              seed=seed, recentre=outcomes.recentred(metric))


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
        raise OutcomeMismatchError(_undefined(a.kind, metric))
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
                             recentre=a.recentred(metric))


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
    """The outcomes stored beside the result at ``result_path``, their arrays under today's
    names (an older file's ``means`` array is named after a renamed metric: see
    :func:`itra_bench.vocabulary.current_outcome_arrays`); raises
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
        kind = str(npz["kind"])
        protocol = record.get("protocol")
        return SampleOutcomes(kind, current_outcome_arrays(
            protocol if isinstance(protocol, str) else None, kind, arrays))
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
