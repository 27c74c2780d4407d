"""The contract of the metrics that plugins teach the per-sample outcome kinds of
:mod:`itra_bench.sample_outcomes` to recompute (ELEVATER's 11-point mAP of ``multilabel``
outcomes comes this way). Kept free of numpy: every command loads the plugins' contributions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def statistic_key(kind: str, metric: str) -> str:
    """The name under which the statistic of ``metric`` for outcomes of ``kind`` is
    registered (``multilabel:11point_mAP``): two plugins may not both provide one."""
    return f"{kind}:{metric}"


@dataclass(frozen=True)
class OutcomeStatistic:
    """``metric`` recomputed from per-sample outcomes of ``kind``, for every bootstrap
    resample at once: what gives a result its interval and a paired comparison its p-value.

    ``statistic(*units)`` receives the kind's per-unit arrays in the order of the table in
    :mod:`itra_bench.sample_outcomes` (``scores``, ``labels`` for ``multilabel``), each with a
    leading axis of resamples (``[rows, n, ...]``), and returns the metric of each row as
    ``[rows]`` floats. On the one row of all samples it must give exactly the score the task
    reports: the runner refuses a result whose outcomes do not recompute it. Give it as
    ``itra_bench.lazy_import.LazyFactory("my_package.metrics", "my_statistic")`` so that
    loading the plugin imports nothing heavy.

    ``recentred`` is the metric's range (lowest, highest) when resampling with replacement
    displaces its bootstrap distribution from the score (a duplicated positive ranks right
    beside its copy, which raises 11-point mAP): its intervals are then recentred on the
    score (see :func:`itra_bench.bootstrap.bootstrap_interval`); None (a mean, a recall) for
    percentile intervals.

    A metric that the kind recomputes itself (``acc1`` of ``classification`` outcomes, ...)
    keeps its built-in statistic.
    """

    kind: str
    metric: str
    statistic: Callable[..., Any]
    recentred: tuple[float, float] | None = None

    @property
    def key(self) -> str:
        """The registered name, :func:`statistic_key` of the kind and metric."""
        return statistic_key(self.kind, self.metric)
