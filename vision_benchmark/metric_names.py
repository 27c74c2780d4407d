"""The names of ELEVATER's metrics (torch-free: cards name them, and cards are read while
tasks are listed; :mod:`itra_bench.vision_benchmark.metrics` re-exports them)."""

from __future__ import annotations

#: The metric names ELEVATER's dataset configs use, in our spelling (ELEVATER writes
#: ``mean-per-class`` for ``mean_per_class``; both are accepted). Cards name these.
ELEVATER_METRICS: tuple[str, ...] = ("accuracy", "mean_per_class", "11point_mAP", "roc_auc")

#: The name each ELEVATER metric has in itra-bench results, where one name means one
#: definition across all tasks. ELEVATER's ``accuracy`` is top-1 accuracy (argmax, ties to the
#: lower class index), the generic tasks' ``acc1``. Its ``mean_per_class`` is *not* the generic
#: ``mean_per_class_recall``: it drops the score columns of classes without a test sample
#: before the argmax, so the two differ whenever such a column wins; hence its own name.
RESULT_NAMES: dict[str, str] = {
    "accuracy": "acc1",
    "mean_per_class": "mean_per_class_recall_present",
    "11point_mAP": "11point_mAP",
    "roc_auc": "roc_auc",
}

#: Other spellings accepted wherever an ELEVATER metric is named: ELEVATER's own
#: ``mean-per-class`` and the result names.
METRIC_ALIASES: dict[str, str] = {
    "mean-per-class": "mean_per_class",
    **{result: name for name, result in RESULT_NAMES.items() if result != name},
}


def canonical_metric(name: str) -> str:
    """ELEVATER's name of a metric given by any accepted spelling (unknown names unchanged)."""
    return METRIC_ALIASES.get(name, name)
