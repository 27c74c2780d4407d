"""The names of ELEVATER's metrics (torch-free: cards name them, and cards are read while
tasks are listed; :mod:`itra_bench.vision_benchmark.metrics` re-exports them), and the
metrics its results report, as the plugin declares them (:data:`DECLARED`)."""

from __future__ import annotations

from itra_bench.metric_names import Metric
from itra_bench.vocabulary import RENAMED_METRICS

#: The metric names ELEVATER's dataset configs use, in our spelling (ELEVATER writes
#: ``mean-per-class`` for ``mean_per_class``; both are accepted). Cards name these.
ELEVATER_METRICS: tuple[str, ...] = ("accuracy", "mean_per_class", "11point_mAP", "roc_auc")

#: The name each ELEVATER metric has in itra-bench results, where one name means one
#: definition across all tasks. ELEVATER's ``accuracy`` is top-1 accuracy (argmax, ties to the
#: lower class index), the generic tasks' ``acc1``. Its ``mean_per_class`` is *not* the generic
#: ``mean_per_class_recall``: it drops the score columns of classes without a test sample
#: before the argmax, so the two differ whenever such a column wins; hence its own name.
#: Results of older itra-benches used ELEVATER's names: the vocabulary's table of renamed
#: metrics is this one, read backwards.
RESULT_NAMES: dict[str, str] = {name: RENAMED_METRICS["elevater"].get(name, name)
                                for name in ELEVATER_METRICS}

#: Other spellings accepted wherever an ELEVATER metric is named: ELEVATER's own
#: ``mean-per-class`` and the result names.
METRIC_ALIASES: dict[str, str] = {
    "mean-per-class": "mean_per_class",
    **{result: name for name, result in RESULT_NAMES.items() if result != name},
}

#: What ELEVATER appends to a metric's result name for its value on the unrounded
#: probabilities (the plain name is the value on the probabilities as submitted).
UNROUNDED = "_unrounded"

#: The metrics ELEVATER's results report beyond the shared ``acc1`` (the plugin's
#: ``itra_bench_metrics``).
DECLARED: tuple[Metric, ...] = (
    Metric(RESULT_NAMES["mean_per_class"], "ELEVATER's mean per-class recall: the argmax over "
           "the classes that have a test sample only, then the recall of each class averaged",
           outcome_kinds=("classification",)),
    Metric(RESULT_NAMES["11point_mAP"], "ELEVATER's 11-point interpolated mean average "
           "precision over the classes that have a positive test sample",
           outcome_kinds=("multilabel",)),
    Metric(RESULT_NAMES["roc_auc"], "area under the ROC curve of the positive class's "
           "probability (two classes)", outcome_kinds=("binary_scores",)),
    *(Metric(RESULT_NAMES[name] + UNROUNDED, f"{RESULT_NAMES[name]} on the unrounded "
             "probabilities (the plain name: on the 6 decimals a prediction file stores)")
      for name in ELEVATER_METRICS),
)


def canonical_metric(name: str) -> str:
    """ELEVATER's name of a metric given by any accepted spelling (unknown names unchanged)."""
    return METRIC_ALIASES.get(name, name)
