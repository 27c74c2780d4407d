"""The metric registry: every metric name a task may report, with what it measures, whether
higher is better and which per-sample outcome kinds recompute it.

The host declares the metrics of its shared protocols (:data:`HOST_METRICS`); a plugin
declares the metrics its own tasks report through the ``itra_bench_metrics`` hook. A result
is checked against the registry when it is written (:func:`check_reported`): a metric that
no loaded plugin declares is its task's plugin's bug. Kept free of numpy and torch: every
command loads the plugins' declarations.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from itra_bench.errors import PluginBugError, PluginClashError
from itra_bench.vocabulary import INTERVAL_ENDS

if TYPE_CHECKING:
    from itra_bench.plugin_tables import Provided
    from itra_bench.registry import Registry

#: What a ``{placeholder}`` of a metric pattern stands for: letters, digits and ``_``.
_PLACEHOLDER = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")
_NAME = re.compile(r"[A-Za-z0-9_@.{}-]+")


@dataclass(frozen=True)
class Metric:
    """One metric name that tasks report, or a pattern of names.

    ``name``: the name (``acc1``), or a pattern whose ``{placeholders}`` stand for letters,
    digits and ``_`` (``image_retrieval_recall@{k}`` names ``image_retrieval_recall@1``,
    ``...@5``, ...). ``description``: what it measures, in a line. ``higher_is_better``:
    True for a score, False for an error or a loss, None for a setting a task reports beside
    its scores (the chosen L2 strength of a linear probe). ``outcome_kinds``: the kinds of
    per-sample outcomes (:mod:`itra_bench.sample_outcomes`) that recompute it, which give it
    an interval and paired comparisons when it is a main score; empty when none does.
    """

    name: str
    description: str
    higher_is_better: bool | None = True
    outcome_kinds: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ValueError(f"metric name {self.name!r}: use letters, digits and _ @ . - "
                             "(and {placeholders} in a pattern)")
        if self.name in INTERVAL_ENDS:
            raise ValueError(f"metric name {self.name!r} is taken: results tables name a "
                             f"score's interval ends {' and '.join(INTERVAL_ENDS)}")
        if self.higher_is_better not in (True, False, None):
            raise ValueError(f"metric {self.name!r}: higher_is_better must be True, False or "
                             f"None, got {self.higher_is_better!r}")
        object.__setattr__(self, "outcome_kinds", tuple(self.outcome_kinds))

    @property
    def is_pattern(self) -> bool:
        """Whether :attr:`name` is a pattern with placeholders."""
        return _PLACEHOLDER.search(self.name) is not None

    def matches(self, metric: str) -> bool:
        """Whether the reported metric name ``metric`` is this one (or one of this pattern's)."""
        return metric == self.name or (self.is_pattern and
                                       _pattern(self.name).fullmatch(metric) is not None)


@functools.cache
def _pattern(name: str) -> re.Pattern[str]:
    parts = _PLACEHOLDER.split(name)
    return re.compile("[A-Za-z0-9_]+".join(re.escape(p) for p in parts))


#: The metrics of the host's shared protocols (:mod:`itra_bench.protocols`), which any
#: task may report.
HOST_METRICS: tuple[Metric, ...] = (
    Metric("acc1", "top-1 accuracy: the share of samples whose true class (or candidate) "
           "ranks first; ties rank the lower class index first, and a triplet whose "
           "negative is as close as its positive counts wrong",
           outcome_kinds=("classification", "means")),
    Metric("acc5", "top-5 accuracy: the share of samples whose true class ranks in the first "
           "five", outcome_kinds=("classification",)),
    Metric("mean_per_class_recall", "the top-1 recall of each class present in the test "
           "labels, averaged over those classes (balanced accuracy)",
           outcome_kinds=("classification",)),
    Metric("val_acc1", "linear probe: top-1 accuracy on the validation split of the chosen "
           "L2 strength"),
    Metric("l2", "linear probe: the L2 regularisation strength chosen on the validation "
           "split", higher_is_better=None),
    Metric("nmi", "clustering: normalized mutual information of k-means clusters and labels",
           outcome_kinds=("clustering",)),
    Metric("ami", "clustering: adjusted mutual information of k-means clusters and labels",
           outcome_kinds=("clustering",)),
    Metric("image_retrieval_recall@{k}", "retrieval: the share of captions whose image ranks "
           "in the first k", outcome_kinds=("retrieval",)),
    Metric("text_retrieval_recall@{k}", "retrieval: the share of images with a caption ranked "
           "in the first k", outcome_kinds=("retrieval",)),
    Metric("mean_recall", "retrieval: the mean of the image and text retrieval recalls",
           outcome_kinds=("retrieval",)),
    Metric("spearman", "Spearman rank correlation of cosine similarities with gold scores "
           "(all pairs pooled)", outcome_kinds=("correlation",)),
    Metric("pearson", "Pearson correlation of cosine similarities with gold scores (all "
           "pairs pooled)", outcome_kinds=("correlation",)),
    Metric("spearman_wmean", "Spearman correlation per file, averaged weighted by pairs"),
    Metric("pearson_wmean", "Pearson correlation per file, averaged weighted by pairs"),
    Metric("spearman_mean", "Spearman correlation per file, averaged"),
    Metric("pearson_mean", "Pearson correlation per file, averaged"),
)

#: Who declares :data:`HOST_METRICS`, in messages.
HOST = "itra-bench itself (itra_bench.metric_names.HOST_METRICS)"


def refuse_host_names(table: Mapping[str, Provided[Any]]) -> None:
    """Refuse a plugin's declaration of a metric that the host declares already."""
    host = {m.name for m in HOST_METRICS}
    for name, provided in table.items():
        if name in host:
            raise PluginClashError(
                f"metric {name!r} is declared by two: {HOST} and plugin "
                f"{provided.plugin.name!r} (distribution {provided.plugin.distribution}, "
                f"module {provided.plugin.module}). A plugin declares only its own metrics; "
                f"drop {name!r} from its itra_bench_metrics(), or block it with "
                f"`--disable-plugin {provided.plugin.name}`.")


def declared_metrics(registry: Registry | None = None) -> list[tuple[Metric, str]]:
    """Every declared metric and who declares it (the host, or a plugin's description):
    the host's first, then the plugins' of ``registry`` (default: the
    :func:`itra_bench.registry.current_registry`)."""
    if registry is None:
        from itra_bench.registry import current_registry

        registry = current_registry()
    return [*((m, HOST) for m in HOST_METRICS),
            *((p.item, p.plugin.describe()) for p in registry.metrics.values())]


def find_metric(name: str, registry: Registry | None = None) -> Metric | None:
    """The declaration of the reported metric ``name`` (None when nothing declares it): an
    exact name first, then a pattern; two plugins' patterns matching it is a clash."""
    for metric in HOST_METRICS:
        if metric.matches(name):
            return metric
    found = _plugin_matches(name, registry)
    return found[0][0] if found else None


def _plugin_matches(name: str, registry: Registry | None) -> list[tuple[Metric, str]]:
    everything = [(m, who) for m, who in declared_metrics(registry) if who != HOST]
    exact = [(m, who) for m, who in everything if m.name == name]
    if exact:
        return exact
    found = [(m, who) for m, who in everything if m.matches(name)]
    if len(found) > 1:
        (a, who_a), (b, who_b) = found[:2]
        raise PluginClashError(f"metric {name!r} matches two declared patterns: {a.name!r} of "
                               f"{who_a} and {b.name!r} of {who_b}; uninstall one, or block "
                               "one with `--disable-plugin NAME`.")
    return found


def higher_is_better(name: str, registry: Registry | None = None) -> bool | None:
    """Whether a higher value of the metric ``name`` is better (None: not a score, or not
    declared by any loaded plugin)."""
    metric = find_metric(name, registry)
    return None if metric is None else metric.higher_is_better


def undeclared(names: Iterable[str], registry: Registry | None = None) -> list[str]:
    """The metric names among ``names`` that nothing loaded declares."""
    names = list(names)
    rest = [n for n in names if not any(m.matches(n) for m in HOST_METRICS)]
    return [n for n in rest if find_metric(n, registry) is None]


def check_reported(record: Mapping[str, Any], registry: Registry | None = None) -> None:
    """Refuse a result about to be written whose task reports a metric that no loaded plugin
    declares: a :class:`~itra_bench.errors.PluginBugError` naming the task's plugin."""
    metrics = record.get("metrics")
    if not isinstance(metrics, Mapping):
        return
    missing = undeclared(metrics, registry)
    if not missing:
        return
    provider = (record.get("providers") or {}).get("task") or {}
    plugin = provider.get("plugin")
    whose = (f"plugin {plugin!r} ({provider.get('distribution', '?')} "
             f"{provider.get('version', '')}".rstrip() + ")") if plugin else "its plugin"
    listed = ", ".join(repr(n) for n in missing)
    raise PluginBugError(
        f"plugin bug: task {record.get('task')!r} of {whose} reports the metric(s) {listed}, "
        "which no loaded plugin declares. A plugin declares each metric its tasks report in "
        "its itra_bench_metrics() hook (itra_bench.Metric: name, description, "
        "higher_is_better, outcome_kinds), unless itra-bench declares it for its shared "
        "protocols (itra_bench.metric_names.HOST_METRICS); report it to the plugin's "
        "authors.")
