"""Hook specifications: what a plugin can contribute to itra-bench.

A plugin is any module or object with functions named like the hooks below and decorated
with ``itra_bench.hookimpl``. Make it discoverable by declaring it in your package's
``pyproject.toml``::

    [project.entry-points.itra_bench]
    my_plugin = "my_package.itra_plugin"

After ``pip install``, ``itra-bench list plugins`` shows it. A module that is not installed
can be loaded with ``--plugin my_module`` or ``ITRA_BENCH_PLUGINS=my_module``.

Every name a plugin contributes (model scheme, loss, task, suite, command, result summary,
outcome statistic, metric) must be unique across all installed plugins: a clash is an error that
names both plugins. ``--disable-plugin NAME`` removes all that the plugin ``NAME`` adds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from itra_bench.commands import Command
    from itra_bench.losses import LossSpec
    from itra_bench.metric_names import Metric
    from itra_bench.model import ModelBuilder
    from itra_bench.outcome_statistics import OutcomeStatistic
    from itra_bench.summaries import ResultSummary
    from itra_bench.task import Task, TaskResult
    from itra_bench.yaml_tasks import TaskFileProtocol

hookspec = pluggy.HookspecMarker("itra_bench")


@hookspec
def itra_bench_model_builders() -> Iterable[ModelBuilder]:
    """Return the model families this plugin provides.

    Each :class:`itra_bench.model.ModelBuilder` owns a *scheme*: the spec ``scheme:rest``
    (or a bare ``scheme``) is handed to its ``build(rest, options)``, which returns an
    :class:`itra_bench.model.EncoderModel` on the CPU. A builder must never download: weights
    come from local paths, and a model with no weights must raise
    :class:`itra_bench.errors.UserError` unless ``options.random_init`` is set.

    Every command loads every plugin, ``list`` and ``--help`` included: give ``build`` as
    ``itra_bench.lazy_import.LazyFactory("my_package.models", "build")`` (or import torch and
    the model library inside ``build``) so that loading the plugin imports nothing heavy.
    ``lazy=True`` lets a run whose features are all cached skip the build (see
    :class:`itra_bench.model_api.ModelBuilder` for when it is safe), and a text encoder that
    pads each batch to its longest text sets ``dynamic_text_length = True`` on the model.
    """


@hookspec
def itra_bench_losses() -> Iterable[LossSpec]:
    """Return the training objectives this plugin provides.

    Each :class:`itra_bench.losses.LossSpec` names a loss and a factory:
    ``factory(student_dim=Ds, teacher_dim=Dt, prototypes=K, **options)`` returns an
    ``nn.Module`` whose ``forward(student, teacher, logit_scale)`` returns a scalar loss (or a
    dict of named scalar terms). Losses that declare ``needs=("prototypes",)`` also receive
    ``student_prototypes=`` and ``teacher_prototypes=``. ``options`` are the user's
    ``--loss-options``, checked against the factory's named parameters. ``LossSpec``'s
    docstring is the full contract.

    ``factory`` may be the class itself or ``itra_bench.lazy_import.LazyFactory("module",
    "Class")``, which imports the module only when a loss is built. This hook runs for every
    command (``itra-bench list`` and ``--help`` too), so a plugin whose loss module imports
    torch should pass a ``LazyFactory`` and import nothing heavy at module level.
    """


@hookspec
def itra_bench_tasks() -> Iterable[Task]:
    """Return the evaluation tasks this plugin provides.

    A :class:`itra_bench.task.Task` is a small declarative object: its name, suites,
    required modalities, expected data layout, metrics and main score, and a
    ``run(model, ctx)`` that usually calls one of the shared protocols in
    ``itra_bench.protocols``. Tasks are listed cheaply: do no I/O here.
    """


@hookspec
def itra_bench_task_file_protocols() -> Mapping[str, TaskFileProtocol]:
    """Return ``{name: task type or factory}`` for task files (``--tasks my_task.yaml``).

    A task file names its task type by such a name in its key ``task_type:`` (``protocol:``,
    the key's old name, arrives renamed); for a name listed here, the value builds the task:

    - a task type, a dataclass subclass of :class:`itra_bench.Task` whose ``__init__`` fields
      are the file's keys (declared with :func:`itra_bench.file_key` and
      :func:`itra_bench.not_from_file`; :func:`itra_bench.key_rows` lists them): the file is
      checked against the fields and the task built from its values;
    - or a factory: ``factory(doc, path)`` receives the parsed YAML mapping and the file's
      path and returns the task (:func:`itra_bench.read_keys` checks the mapping against
      dataclasses), raising :class:`itra_bench.errors.UserError` that names the file and the
      key on bad input.

    This lets users point a task type at their own files in the same format. A plugin usually
    builds its own built-in tasks from YAML cards through the same task type.
    """


@hookspec
def itra_bench_task_prefixes() -> Mapping[str, Callable[[str], Task]]:
    """Return ``{prefix: factory}`` for tasks named directly in ``--tasks`` as
    ``PREFIX:REST``, with no task file (``wds:/data/wds_cars``: a clip-benchmark webdataset
    folder).

    ``factory(rest)`` receives what follows ``PREFIX:`` and returns the task, raising
    :class:`itra_bench.errors.UserError` that names what is wrong on bad input. A prefix is
    a word of lowercase letters and digits; two plugins offering one prefix clash.
    """


@hookspec
def itra_bench_task_files() -> Iterable[str | Path]:
    """Return paths of YAML task files this plugin ships (e.g. with ``importlib.resources``).

    Each file is read exactly like ``--tasks my_task.yaml``: its ``task_type`` is a built-in
    one (``zeroshot``, ``linear_probe``, ``knn``, ``clustering``, ``retrieval``) or one that a
    plugin declares through :func:`itra_bench_task_file_protocols` (``elevater`` for an
    ELEVATER dataset card, ``sts``, ``coco``, ...), so a plugin adds datasets as data files,
    without writing task classes. The tasks are registered under their ``name``, in their
    ``suites``, like tasks returned by :func:`itra_bench_tasks`.
    """


@hookspec
def itra_bench_suites() -> Mapping[str, Iterable[str]]:
    """Return extra named suites: ``{suite_name: [task names]}``.

    Suites named in a task's own ``suites`` field are collected automatically; this hook is
    for suites that gather tasks of several plugins.
    """


@hookspec
def itra_bench_commands() -> Iterable[Command]:
    """Return subcommands this plugin adds to ``itra-bench`` (see
    :class:`itra_bench.commands.Command`). A name that a built-in command or another plugin
    already uses is an error naming both."""


@hookspec
def itra_bench_result_summaries() -> Iterable[ResultSummary]:
    """Return views of a results folder that this plugin adds to ``itra-bench results`` and
    ``itra-bench report`` (ELEVATER's per-mode summary of its datasets comes this way).

    A :class:`itra_bench.summaries.ResultSummary` has a unique ``name``, a ``title`` and a
    ``summarize(root)`` that reads the results under ``root`` and returns a
    :class:`itra_bench.summaries.Summary` (or None when no result concerns it): tables
    (:class:`itra_bench.summaries.SummaryTable`), which ``results`` prints and which make the
    view's section of the HTML report, and ``{file name: text}`` files that ``results``
    writes beside the leaderboard. ``summarize`` runs in commands that may not load torch:
    give it as ``itra_bench.lazy_import.LazyFactory("my_package.summary", "summarize")``.
    """


@hookspec
def itra_bench_outcome_statistics() -> Iterable[OutcomeStatistic]:
    """Return metrics this plugin recomputes from per-sample outcomes, for their bootstrap
    intervals and paired comparisons.

    An :class:`itra_bench.outcome_statistics.OutcomeStatistic` names an outcome kind of
    :mod:`itra_bench.sample_outcomes` (``multilabel``, ``binary_scores``, ...), a metric
    (``11point_mAP``) and the vectorised statistic that computes the metric of every
    resample at once; its docstring is the full contract. A task whose main score is such a
    metric stores outcomes of that kind; with the plugin disabled, the metric gets no
    interval and cannot be compared. A metric the kind recomputes itself keeps its built-in
    statistic.
    """


@hookspec
def itra_bench_metrics() -> Iterable[Metric]:
    """Return the metrics this plugin's tasks report, beyond those of the shared protocols.

    Each :class:`itra_bench.metric_names.Metric` (``itra_bench.Metric``) gives a name, or a
    pattern such as ``recall@{k}``, what it measures, whether higher is better, and the
    per-sample outcome kinds that recompute it. A result is checked when it is written: a
    metric that no loaded plugin declares is the bug of its task's plugin. The metrics of
    :mod:`itra_bench.protocols` (``acc1``, ``nmi``, ``spearman``, ...) are itra-bench's own
    (:data:`itra_bench.metric_names.HOST_METRICS`): a task reporting them declares nothing,
    and a plugin declaring one of them, or a name another plugin declares, is a clash.
    """


@hookspec
def itra_bench_result_written(task: Task, model_name: str, result: TaskResult, path: str,
                              record: dict[str, Any]) -> None:
    """Observe a result just written to the results store (e.g. to push it to a tracker).

    ``record`` is the JSON document stored at ``path``. Return value is ignored.
    """
