"""The task contract: a small declarative object plus ``run(model, ctx) -> TaskResult``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from itra_bench.task_fields import file_key, not_from_file

if TYPE_CHECKING:
    from itra_bench.context import RunContext
    from itra_bench.model import EncoderModel
    from itra_bench.sample_outcomes import SampleOutcomes


@dataclass
class TaskResult:
    """What a task measured.

    metrics: flat name -> value; ``main_score`` names the one leaderboards rank by.
    num_samples: evaluated examples (after any skipped corrupt images).
    details: JSON-able extras (per-class scores, chosen hyper-parameters, skipped files).
    samples: what each evaluation sample contributed
    (:class:`itra_bench.sample_outcomes.SampleOutcomes`), from which the main score's
    confidence interval and paired comparisons between models are computed. The runner
    recomputes the main score from them and refuses outcomes that disagree with it; a task
    without them gets no interval. Metrics from the shared protocols
    (:class:`itra_bench.sample_outcomes.Metrics`) carry their outcomes, which are taken
    when ``samples`` is not given.
    """

    metrics: dict[str, float]
    main_score: str
    num_samples: int
    details: dict[str, Any] = field(default_factory=dict)
    samples: SampleOutcomes | None = None

    def __post_init__(self) -> None:
        if self.samples is None:
            self.samples = getattr(self.metrics, "samples", None)
        if self.main_score not in self.metrics:
            raise ValueError(f"main score {self.main_score!r} is not among {sorted(self.metrics)}")


@dataclass(frozen=True)
class Variant:
    """One protocol variant of a task (e.g. 5-shot linear probe, seed 1): one result file.

    ``options`` are merged over the run's task options when this variant runs.

    ``family`` groups variants that measure the same thing and may be averaged across the
    tasks of a suite (``zeroshot``, ``linear_probe-5shot``: seeds of one family are averaged
    per task first). ``""`` is the task's standard measurement; ``None`` derives the family
    from the name (``-seedN`` removed; the protocol's own name or ``default`` mean ``""``).
    Suite averages never mix families.
    """

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    family: str | None = None


def variant_family(variant: str, protocol: str, family: str | None = None) -> str:
    """The family of a variant (see :class:`Variant`); ``family`` wins when given."""
    if family is not None:
        return family
    stem = re.sub(r"-seed\d+$", "", variant)
    return "" if stem in ("default", protocol, "") else stem


#: The key of a field's metadata saying whether the field is part of what the task computes,
#: its definition (:func:`itra_bench.task_identity.task_definition`; by default it is).
DEFINITION = "definition"
#: Metadata of a field that is not: how the task is named, which task type built it.
BOOKKEEPING: Mapping[str, Any] = MappingProxyType({DEFINITION: False})


@dataclass(init=False, repr=False, eq=False, kw_only=True)
class Task:
    """Base class of evaluation tasks.

    A task type is a dataclass subclass that declares its own fields, whose ``__init__``
    fields are also the keys of its task files (:mod:`itra_bench.task_fields`), and
    implements ``run``. The fields below are common to every task. ``protocol``,
    ``modalities``, ``main_score`` and ``layout`` are no ``__init__`` arguments: a type
    redeclares them with its own defaults or sets them in ``__post_init__`` from its other
    fields. A plain class may subclass Task too, setting them as class attributes (Task
    itself has no ``__init__``); a dataclass subclass gives ``name``, ``description``,
    ``suites`` and ``aliases`` as fields (annotated), since its ``__init__`` sets them.
    ``protocol`` is the evaluation procedure the task runs (results record it); ``task_type``
    is the task type of the task file it was read from.

    ``layout`` is the human description of the files expected under ``--data-root``;
    ``required_paths`` lists them so the runner can report exactly what is missing.
    ``ctx.options`` holds the run's task options (``--mode``, ``--shots``, ...) merged with
    the options of the variant being run.
    """

    name: str = file_key("", required=True, help="the task's name: how --tasks names it, and "
                         "the folder of its results")
    #: For a task built from a task file: the task type that built it.
    task_type: str = file_key("", required=True, help="the task type: which reader builds "
                              "the task from the file (`protocol:` is its old name)",
                              metadata=BOOKKEEPING)
    description: str = file_key("", help="what the task measures, in a line")
    suites: tuple[str, ...] = file_key((), help="the suites the task is a member of")
    aliases: tuple[str, ...] = not_from_file((), metadata=BOOKKEEPING)
    protocol: str = not_from_file("", init=False)
    modalities: frozenset[str] = not_from_file(frozenset(), init=False)
    main_score: str = not_from_file("", init=False)
    layout: str = not_from_file("", init=False)

    @property
    def task_file_protocol(self) -> str:
        """The old name of :attr:`task_type`, kept for code that reads or sets it."""
        return self.task_type

    @task_file_protocol.setter
    def task_file_protocol(self, value: str) -> None:
        self.task_type = value

    def variants(self, options: Mapping[str, Any]) -> list[Variant]:
        """The variants a run with these task options measures, one result file each.

        Most tasks measure one; a task whose options multiply (shots x seeds) lists them all,
        and the runner skips those already stored.
        """
        return [Variant(self.protocol or "default")]

    def required_modalities(self, options: Mapping[str, Any]) -> frozenset[str]:
        """Encoders the model needs for this run (by default ``modalities``)."""
        return self.modalities

    def required_paths(self, data_root: Path, options: Mapping[str, Any]) -> list[Path]:
        """Files and folders that must exist before ``run`` (none for embedded data)."""
        return []

    def check_files(self, data_root: Path, options: Mapping[str, Any]) -> list[str]:
        """Problems with files that exist but disagree with what the task knows (an index
        shorter than its card says, ...), one readable line each; checked before any
        encoding and by ``itra-bench check-data``. Cheap checks only."""
        return []

    def data_identity(self, data_root: Path, options: Mapping[str, Any]) -> str:
        """An id of the data this run would read, stored in each result: a rerun whose data
        changed recomputes instead of reporting the stored result.

        By default: the path, size and modification time of every file under
        ``required_paths`` (``embedded`` when there are none). Override it when the data
        comes from elsewhere.
        """
        from itra_bench.fingerprint import files_identity

        paths = self.required_paths(data_root, options)
        if not paths:
            return "embedded"
        files: list[Path] = []
        for p in paths:
            files.extend(sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p])
        return files_identity(files, salt=self.name)

    def run(self, model: EncoderModel, ctx: RunContext) -> TaskResult:
        """Evaluate ``model`` and return its metrics."""
        raise NotImplementedError


def positive_int_option(options: Mapping[str, Any], key: str, default: int | None) -> int | None:
    """Task option ``key`` as a positive integer (``default`` when absent); anything else is a
    user error naming ``--task-option key=...``."""
    from itra_bench.errors import UserError

    raw = options.get(key, default)
    if raw is None:
        return None
    try:
        value = int(raw)
    except (TypeError, ValueError):
        value = 0
    if value <= 0:
        raise UserError(f"--task-option {key}={raw}: expected a positive integer")
    return value
