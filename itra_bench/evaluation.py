"""The Python API's evaluation: :func:`evaluate` runs what ``itra-bench run`` runs, on a model
spec or on a model object, and returns :class:`Results`.

Torch is imported when :func:`evaluate` runs, not when this module is imported. Kept one
module (a little over 400 lines): the settings it checks, the run and the scores it returns
are the one public entry point, read together.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from itra_bench.cli_types import Number, non_negative_int, positive_int
from itra_bench.errors import UserError
from itra_bench.model_api import TEXT_POOLERS
from itra_bench.paths import expand_path
from itra_bench.precision import precision_name
from itra_bench.run_flags import RUN_FLAGS
from itra_bench.run_settings import KEYWORDS, protocol_options
from itra_bench.vocabulary import RENAMED_CONFIG_KEYS

if TYPE_CHECKING:
    from typing import Unpack

    from rich.console import Console

    from itra_bench.distributed import World
    from itra_bench.registry import Registry
    from itra_bench.run_outcomes import Outcome


class RunSettings(TypedDict, total=False):
    """The settings :func:`evaluate` takes as keywords: ``itra-bench run``'s flags, with
    ``_`` for ``-``. Any left out has the command line's default, except ``output``."""

    #: ``auto`` (CUDA when available), ``cpu``, ``cuda[:N]`` or ``mps``.
    device: str
    #: ``fp32``, ``amp_bf16`` or ``amp_fp16`` (CUDA only).
    precision: str
    batch_size: int
    #: DataLoader worker processes.
    workers: int
    #: Seeds the run and the bootstrap resampling.
    seed: int
    #: The folder dataset paths are under.
    data_root: str | os.PathLike[str]
    #: The results folder (kept, and its results reused on a rerun); None or left out: a
    #: temporary folder, removed when evaluate returns.
    output: str | os.PathLike[str] | None
    #: The feature cache folder; None: no cache.
    cache_dir: str | os.PathLike[str] | None
    #: Recompute results that exist in ``output``.
    overwrite: bool
    #: Skip and count undecodable images instead of stopping.
    skip_corrupt: bool
    #: Run the tasks whose data is present, skipping the others.
    skip_missing: bool
    #: Model specs only: a local weights file for the model.
    pretrained: str | os.PathLike[str] | None
    #: Model specs only: evaluate random weights on purpose.
    random_init: bool
    #: Model specs only: ``cls`` or ``mean`` token pooling of transformer text encoders
    #: (``--text-pooler``; ``pooler``, its old name, is taken too).
    text_pooler: str | None
    #: Model specs only: where pretrained tags are looked up.
    weights_cache: str | os.PathLike[str] | None
    #: Images per resumable chunk of the feature cache.
    cache_chunk_rows: int | None
    #: Bootstrap resamples of each main score's 95 % interval (0: none).
    resamples: int
    #: ELEVATER tasks: ``zeroshot``, ``linear_probe`` or ``finetune``.
    mode: str
    #: Training images per class for linear_probe/finetune (-1: the full training set).
    shots: int | Sequence[int]
    #: Few-shot sampling seeds.
    seeds: int | Sequence[int]
    #: False: skip the hyper-parameter search (then give ``lr`` and ``l2``).
    tuning: bool
    lr: float
    l2: float
    #: Zero-shot: ``none`` or ``wordnet`` (append each class's WordNet definition).
    knowledge: str
    #: MS MARCO: evaluate on this many passages (quick runs).
    max_passages: int
    #: Further options for tasks that take them (``--task-option KEY=VALUE``).
    task_options: Mapping[str, Any]


#: The settings that are task options (:func:`itra_bench.run_settings.protocol_options`).
_PROTOCOL = ("mode", "shots", "seeds", "tuning", "lr", "l2", "knowledge", "max_passages")
#: Settings that say how to build a model from its spec: meaningless for a model object.
_SPEC_ONLY = ("pretrained", "random_init", "text_pooler", "weights_cache")
_PATHS = ("data_root", "cache_dir", "pretrained", "weights_cache")
#: The numeric settings, by the rules of their flags (the shared ones as declared there).
_NUMBERS: dict[str, Number] = {**{key: RUN_FLAGS[key].type for key in ("batch_size", "workers",
                                                                       "seed")},
                               "resamples": non_negative_int, "cache_chunk_rows": positive_int}
_FLAGS = ("overwrite", "skip_corrupt", "skip_missing", "random_init")


@dataclass(frozen=True)
class TaskScore:
    """One model's outcome on one task variant: its main score, the score's 95 % bootstrap
    interval (when the task records per-sample outcomes), every metric, and its result file.
    Scores are fractions (0.83, not 83 %)."""

    model: str
    task: str
    variant: str
    #: ``done`` (computed now), ``exists`` (read from ``output``) or ``skipped: <why>``.
    status: str
    main_score: str = ""
    value: float | None = None
    interval: tuple[float, float] | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    #: The result JSON; None when no ``output`` folder was given (nothing is kept).
    path: Path | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """The score as plain, JSON-ready values (the path as a string)."""
        return {"model": self.model, "task": self.task, "variant": self.variant,
                "status": self.status, "main_score": self.main_score, "value": self.value,
                "interval": None if self.interval is None else list(self.interval),
                "metrics": dict(self.metrics),
                "path": None if self.path is None else str(self.path),
                "seconds": self.seconds}


@dataclass(frozen=True)
class Results(Sequence[TaskScore]):
    """What :func:`evaluate` returns: one :class:`TaskScore` per (model, task, variant), in
    the order they ran. Iterate over it, index it, look one score up with :meth:`score`, or
    turn it into plain data with :meth:`rows` or :meth:`as_dict`."""

    scores: tuple[TaskScore, ...] = ()

    def __len__(self) -> int:
        return len(self.scores)

    def __iter__(self) -> Iterator[TaskScore]:
        return iter(self.scores)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return Results(self.scores[index])
        return self.scores[index]

    @property
    def models(self) -> list[str]:
        """The models evaluated, in order."""
        return list(dict.fromkeys(s.model for s in self.scores))

    def find(self, task: str, variant: str | None = None,
             model: str | None = None) -> TaskScore:
        """The one score of ``task`` (and ``variant`` and ``model`` where given, needed when
        there are several); none or several is a :class:`UserError` listing what there is."""
        found = [s for s in self.scores if s.task == task
                 and variant in (None, s.variant) and model in (None, s.model)]
        if len(found) == 1:
            return found[0]
        asked = ", ".join(f"{k}={v!r}" for k, v in (("task", task), ("variant", variant),
                                                    ("model", model)) if v is not None)
        there = "; ".join(f"{s.model} {s.task} ({s.variant or s.status})"
                          for s in self.scores) or "nothing"
        if not found:
            raise UserError(f"no score for {asked}; the results hold: {there}")
        raise UserError(f"{len(found)} scores match {asked}: name the variant and/or model "
                        f"(the results hold: {there})")

    def score(self, task: str, variant: str | None = None,
              model: str | None = None) -> float | None:
        """The main score of ``task`` (see :meth:`find`); None for a skipped task."""
        return self.find(task, variant, model).value

    def rows(self) -> list[dict[str, Any]]:
        """One plain dict per score (:meth:`TaskScore.as_dict`), e.g. for
        ``pandas.DataFrame(results.rows())``."""
        return [s.as_dict() for s in self.scores]

    def as_dict(self) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
        """``{model: {task: {variant: score}}}``, each score a plain dict without the names
        that key it."""
        out: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
        for s in self.scores:
            row = s.as_dict()
            for key in ("model", "task", "variant"):
                del row[key]
            out.setdefault(s.model, {}).setdefault(s.task, {})[s.variant] = row
        return out

    def print(self, console: Console | None = None, fmt: str = "table") -> None:
        """Print each model's summary as ``itra-bench run`` does (main scores x 100 with
        their intervals), to ``console`` (default: standard output) in ``fmt`` (``table``,
        ``markdown``, ``csv`` or ``json``)."""
        from rich.console import Console

        from itra_bench.run_outcomes import print_outcomes

        console = console or Console()
        for model in self.models:
            print_outcomes([_outcome(s) for s in self.scores if s.model == model], model,
                           console, fmt)


def _outcome(score: TaskScore) -> Outcome:
    """``score`` as the runner's :class:`~itra_bench.run_outcomes.Outcome` (for its summary)."""
    from itra_bench.run_outcomes import Outcome

    low, high = score.interval or (None, None)
    return Outcome(score.task, score.variant, score.status, score.main_score, score.value,
                   score.seconds, str(score.path or ""), low, high, dict(score.metrics))


def evaluate(model: Any, tasks: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *,
             name: str | None = None, registry: Registry | None = None,
             plugins: Sequence[str] = (), console: Console | None = None,
             show_progress: bool = True, world: World | None = None,
             **settings: Unpack[RunSettings]) -> Results:
    """Evaluate ``model`` on ``tasks`` as ``itra-bench run`` does, and return the scores.

    ``model``: a model spec string, as ``itra-bench run --model`` takes (``openclip:ARCH@W``,
    a checkpoint path, ``demo``, ...); or a model object: an :class:`EncoderModel`, or any
    object (a ``torch.nn.Module``, say) with ``encode_image(images [B, 3, H, W])`` and/or
    ``encode_text(list of str)`` returning features ``[B, D]``, and for images an
    ``image_transform`` (PIL image to ``[3, H, W]`` tensor). Its ``fingerprint`` keys the
    feature cache; a module without one gets an id of its class and current weights, so
    evaluating it again after training recomputes; any other object must set one. A model
    object is evaluated in eval mode on ``device``, then given back in its training mode, on
    its device, under its name. A list of models evaluates each in turn.

    ``tasks``: task names, suite names, task ``.yaml`` files (one, or a list).

    ``name``: what a model object is called in results (default: its ``name``, else its
    class). ``registry``: the plugins to use (default: every installed one, plus the
    modules in ``plugins``). ``console``, ``show_progress``: where messages and progress bars
    go. ``world``: the distributed job under torchrun (each rank calls evaluate alike).

    ``settings``: :class:`RunSettings`, e.g. ``device="cpu"``, ``data_root="~/data"``,
    ``mode="linear_probe"``, ``shots=[5]``. Without ``output``, results are written to a
    temporary folder removed on return (their :attr:`TaskScore.path` is None); give
    ``output`` to keep the result files and reuse them on a rerun, as ``itra-bench run``
    does. Features are cached in ``cache_dir`` (the command line's default) either way.

    Bad input (an unknown setting or task, missing data) raises :class:`UserError`.
    """
    from itra_bench.registry import activated, current_registry, load_registry

    specs = list(model) if isinstance(model, list | tuple) else [model]
    if not specs:
        raise UserError("evaluate(): no model given")
    if name is not None and len(specs) > 1:
        raise UserError("evaluate(): `name` names one model object; with several models, "
                        "set each one's `name` attribute instead")
    task_names = _task_names(tasks)
    fields, output = _run_fields(settings)
    if registry is None:
        registry = load_registry(plugins) if plugins else current_registry()
    elif plugins:
        raise UserError("evaluate(): give `registry` or `plugins`, not both (a registry has "
                        "its plugins loaded already)")
    scores: list[TaskScore] = []
    with _results_folder(output, world) as (folder, kept), activated(registry):
        for item in specs:
            label, outcomes = _evaluate_one(item, task_names, fields, folder, name, registry,
                                            console, show_progress, world)
            scores += [_score(label, o, kept) for o in outcomes]
    return Results(tuple(scores))


def _evaluate_one(model: Any, tasks: list[str], fields: dict[str, Any], output: str,
                  name: str | None, registry: Registry, console: Console | None,
                  show_progress: bool, world: World | None) -> tuple[str, list[Outcome]]:
    """Run one model; returns what results call it and its outcomes."""
    from itra_bench.runner import RunConfig, run

    if isinstance(model, str | os.PathLike):
        config = RunConfig(model=os.fspath(model), tasks=tasks, output=output,
                           **fields)
        return config.model, run(config, registry, console, show_progress=show_progress,
                                 world=world)
    from itra_bench.in_memory_model import as_encoder_model, evaluated_as

    given = [key for key in _SPEC_ONLY if fields.get(key) not in (None, False)]
    if given:
        raise UserError(f"evaluate(): {', '.join(given)} say(s) how to build a model from its "
                        "spec; a model object is evaluated as it is. Drop them, or pass the "
                        "model as a spec string.")
    encoder = as_encoder_model(model)
    label = name or _own_name(model)
    with evaluated_as(encoder, label) as prepared:
        config = RunConfig(model=label, tasks=tasks, output=output, **fields)
        return label, run(config, registry, console, show_progress=show_progress,
                          model=prepared, world=world)


def _own_name(model: Any) -> str:
    """A model object's ``name`` unless it is EncoderModel's placeholder, else its class."""
    own = getattr(model, "name", None)
    return own if isinstance(own, str) and own and own != "model" else type(model).__name__


def _task_names(tasks: Any) -> list[str]:
    """``tasks`` as the list ``--tasks`` would give."""
    items = [tasks] if isinstance(tasks, str | os.PathLike) else tasks
    try:
        names = [os.fspath(t) for t in items]
    except TypeError:
        names = None
    if not names:
        raise UserError(f"evaluate(): tasks must be a task name, suite name or task file, or a "
                        f"list of them; got {tasks!r}")
    return names


def _run_fields(settings: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The RunConfig fields ``settings`` give (checked by the rules of the command line's
    flags), and the output folder (None: none given)."""
    known = set(RunSettings.__annotations__)
    # The settings are the keys of a result's config: their renamed words are the same.
    for old, new in RENAMED_CONFIG_KEYS.items():
        if old in settings:
            if new in settings:
                raise UserError(f"evaluate(): give {new} alone ({old} is its old name)")
            warnings.warn(f"evaluate({old}=...) is deprecated; use {new}=",
                          DeprecationWarning, stacklevel=3)
            settings = {(new if k == old else k): v for k, v in settings.items()}
    for key in settings:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UserError(f"evaluate(): unknown setting {key!r}.{hint} The settings are "
                            f"{', '.join(sorted(known))} (see itra_bench.RunSettings).")
    fields: dict[str, Any] = {}
    for key, value in settings.items():
        if key in _PROTOCOL or key in ("task_options", "output"):
            continue
        problem = None
        if key in _NUMBERS:
            if not (value is None and key == "cache_chunk_rows"):
                problem = _NUMBERS[key].problem(value)
        elif key in _FLAGS:
            if not isinstance(value, bool):
                problem = f"must be True or False, got {value!r}"
        elif key == "precision":
            try:
                value = precision_name(value if isinstance(value, str) else repr(value))
            except ValueError as exc:
                raise UserError(f"evaluate(): {exc}") from None
        elif key == "device" and not isinstance(value, str):
            problem = f"must be a device name such as 'cpu' or 'cuda:0', got {value!r}"
        elif key == "text_pooler" and value is not None and value not in TEXT_POOLERS:
            problem = (f"must be {', '.join(map(repr, TEXT_POOLERS))} or None, "
                       f"got {value!r}")
        elif key in _PATHS:
            value = _path_setting(key, value)
        if problem is not None:
            raise UserError(f"evaluate(): {key} {problem}")
        fields[key] = value
    extra = settings.get("task_options") or {}
    if not isinstance(extra, Mapping):
        raise UserError("evaluate(): task_options must be a mapping of option names to values, "
                        f"got {type(extra).__name__}")
    fields["task_options"] = protocol_options(
        **{key: settings[key] for key in _PROTOCOL if key in settings}, extra=extra,
        spelling=KEYWORDS)
    return fields, _path_setting("output", settings.get("output"))


def _path_setting(key: str, value: Any) -> str | None:
    """A path setting as the command line passes it on (``~`` and ``$VAR`` expanded); None
    stays None where the setting allows it."""
    if value is None and key != "data_root":
        return None
    if not isinstance(value, str | os.PathLike):
        raise UserError(f"evaluate(): {key} must be a path (str or pathlib.Path), got "
                        f"{value!r}")
    return expand_path(os.fspath(value))


@contextlib.contextmanager
def _results_folder(output: str | None, world: World | None
                    ) -> Iterator[tuple[str, bool]]:
    """The results folder and whether it is kept: ``output``, or a temporary folder removed
    afterwards."""
    if output is not None:
        yield output, True
        return
    if world is not None and world.size > 1:
        raise UserError("evaluate(): under a distributed job give `output`, a results folder "
                        "every rank sees (each rank would make its own temporary folder)")
    folder = tempfile.mkdtemp(prefix="itra-results-")
    try:
        yield folder, False
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _score(model: str, outcome: Outcome, kept: bool) -> TaskScore:
    """The public view of one runner outcome."""
    interval = None if outcome.low is None or outcome.high is None else \
        (outcome.low, outcome.high)
    return TaskScore(model=model, task=outcome.task, variant=outcome.variant,
                     status=outcome.status, main_score=outcome.main_score, value=outcome.value,
                     interval=interval, metrics=dict(outcome.metrics),
                     path=Path(outcome.path) if kept and outcome.path else None,
                     seconds=outcome.seconds)
