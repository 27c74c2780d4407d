"""The vocabulary: one word per concept across command lines, task files, result files and
docs, and the words it replaced, which are still read where they were written.

:data:`VOCABULARY` is the table (the docs' Vocabulary page shows it); the renamed
words are in :data:`RENAMED_METRICS`, :data:`RENAMED_INTERVAL_ENDS`,
:data:`RENAMED_CONFIG_KEYS` and :data:`RENAMED_TASK_FILE_KEYS`, which every reader of result
files and task files goes through (:func:`current_record`, :func:`current_outcome_arrays`,
:func:`current_task_file`). Metric names themselves are declared in
:mod:`itra_bench.metric_names`.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from itra_bench.errors import UserError


@dataclass(frozen=True)
class Word:
    """One concept, the one word for it, the old words still read, and where the word is
    used (each as Markdown, as the docs' table shows it)."""

    concept: str
    word: str
    old: tuple[str, ...] = ()
    where: str = ""

    def markdown_row(self) -> str:
        """The word's row of the docs' Vocabulary table (docs/results/vocabulary.md)."""
        return f"| {self.concept} | {self.word} | {', '.join(self.old) or '-'} | {self.where} |"


#: The ends of a confidence interval, wherever one is written: in result files
#: (``main_score_interval``), in ``results`` tables (``TASK/low``, ``TASK/high``) and in
#: ``compare`` tables. Result files have stored ``low`` and ``high`` since their first schema,
#: and they are the record that lasts: keeping their word leaves every stored result as it
#: is. Each place an interval appears already says which interval it is (the field
#: ``main_score_interval``, the leaderboard's interval columns beside each task, compare's
#: B - A), so a ``ci_`` prefix only repeated it; ``ci_low`` and ``ci_high``, the words of
#: the tables before, are read as these (:data:`RENAMED_INTERVAL_ENDS`).
INTERVAL_ENDS: tuple[str, str] = ("low", "high")

#: The vocabulary (the docs' Vocabulary table, row for row).
VOCABULARY: tuple[Word, ...] = (
    Word("what names a model", "model spec (`openclip:ViT-B-32@laion2b_s34b_b79k`, "
         "`hf:FOLDER`, a checkpoint path)", (),
         "`--model`, `--teacher`, `--image-tower`, `--text-tower`, results' `model.name`"),
    Word("a model spec's prefix", "scheme (`openclip` in `openclip:ViT-B-32`)",
         ("`--image-model-builder`, `--text-model-builder` (itra-train)",),
         "`itra-bench list models`, messages, `ModelBuilder.scheme`"),
    Word("an evaluation procedure", "protocol (`zeroshot`, `linear_probe`, `knn`, "
         "`clustering`, `retrieval`, ...)", (), "results' `protocol`, `itra_bench.protocols`"),
    Word("what reads a task file into a task", "task type (the key `task_type:`)",
         ("`protocol:`",), "task files, dataset cards"),
    Word("top-1 accuracy", "`acc1`", ("`accuracy` (ELEVATER, SNLI-VE, Wikipedia sections)",),
         "results' metrics, samples files"),
    Word("mean per-class recall", "`mean_per_class_recall` (ELEVATER's: "
         "`mean_per_class_recall_present`)",
         ("`mean_per_class_accuracy` (SNLI-VE)", "`mean_per_class` (ELEVATER)"),
         "results' metrics"),
    Word("the ends of a 95 % interval", "`low`, `high`", ("`ci_low`, `ci_high`",),
         "results' `main_score_interval`, `results` and `compare` tables"),
    Word("token pooling of transformer text encoders", "`--text-pooler`, stored as "
         "`text_pooler`", ("`--pooler`", "`pooler`"),
         "`itra-bench run`, `itra-train`, results' `config`, `ModelOptions`, `evaluate()`"),
)

_SNLI_VE = MappingProxyType({
    "accuracy": "acc1", "mean_per_class_accuracy": "mean_per_class_recall",
    "dev_accuracy": "dev_acc1", "text_premise_accuracy": "text_premise_acc1",
    "dev_text_premise_accuracy": "dev_text_premise_acc1",
    **{f"accuracy_{c}": f"recall_{c}" for c in ("entailment", "neutral", "contradiction")}})
_ELEVATER = {"accuracy": "acc1", "mean_per_class": "mean_per_class_recall_present"}

#: Metric names of older result files, by the protocol of the results that wrote them: old
#: name -> today's. Per protocol, since a word may have been renamed in one benchmark only.
RENAMED_METRICS: Mapping[str, Mapping[str, str]] = MappingProxyType({
    # ELEVATER also writes each main metric on unrounded probabilities, as NAME_unrounded.
    "elevater": MappingProxyType({**_ELEVATER, **{f"{old}_unrounded": f"{new}_unrounded"
                                                  for old, new in _ELEVATER.items()}}),
    "snli_ve_zeroshot": _SNLI_VE,
    "snli_ve_transfer": _SNLI_VE,
    # The share of triplets whose positive is closer than the negative: top-1 over two.
    "triplets": MappingProxyType({"accuracy": "acc1"}),
})
#: Interval ends as the tables of ``results`` and ``compare`` named them before (see
#: :data:`INTERVAL_ENDS`).
RENAMED_INTERVAL_ENDS: Mapping[str, str] = MappingProxyType(
    {"ci_low": INTERVAL_ENDS[0], "ci_high": INTERVAL_ENDS[1]})
#: Keys of a result's ``config`` (``itra-bench run``'s settings) renamed.
RENAMED_CONFIG_KEYS: Mapping[str, str] = MappingProxyType({"pooler": "text_pooler"})
#: Keys of task files renamed: ``protocol`` named the task type before 'protocol' came to
#: mean an evaluation procedure only.
RENAMED_TASK_FILE_KEYS: Mapping[str, str] = MappingProxyType({"protocol": "task_type"})


def current_metric(protocol: str | None, name: str) -> str:
    """Today's name of the metric ``name`` read from a result of ``protocol``."""
    return RENAMED_METRICS.get(protocol or "", {}).get(name, name)


def current_record(record: dict[str, Any]) -> dict[str, Any]:
    """A result document read from a file, with today's words for the renamed ones (its
    metrics and main score, its config's keys); changed in place, and returned."""
    renamed = RENAMED_METRICS.get(record.get("protocol") or "")
    if renamed:
        metrics = record.get("metrics")
        if isinstance(metrics, dict):
            record["metrics"] = {renamed.get(k, k): v for k, v in metrics.items()}
        main = record.get("main_score")
        if isinstance(main, str):
            record["main_score"] = renamed.get(main, main)
    config = record.get("config")
    if isinstance(config, dict) and any(old in config for old in RENAMED_CONFIG_KEYS):
        record["config"] = {RENAMED_CONFIG_KEYS.get(k, k): v for k, v in config.items()
                            if not (k in RENAMED_CONFIG_KEYS
                                    and RENAMED_CONFIG_KEYS[k] in config)}
    return record


def current_outcome_arrays(protocol: str | None, kind: str, arrays: dict[str, Any]
                           ) -> dict[str, Any]:
    """The arrays of a samples file of a result of ``protocol`` under today's names: a
    ``means`` array is named after the metric it recomputes."""
    renamed = RENAMED_METRICS.get(protocol or "")
    if kind != "means" or not renamed:
        return arrays
    return {renamed.get(k, k): v for k, v in arrays.items()}


def current_task_file(doc: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """The mapping of the task file ``path`` with today's keys; an old key is noted once
    (:func:`note_renamed`), an old and a new key for one thing are refused."""
    old = [k for k in RENAMED_TASK_FILE_KEYS if k in doc]
    if not old:
        return doc
    for key in old:
        new = RENAMED_TASK_FILE_KEYS[key]
        if new in doc:
            raise UserError(f"{path}: give `{new}:` alone (`{key}:` is its old name, and "
                            "both are set)")
        note_renamed(f"{path}: the key `{key}:` is deprecated; write `{new}:` (it means "
                     "the same)")
    return {RENAMED_TASK_FILE_KEYS.get(k, k): v for k, v in doc.items()}


class RenamedWordWarning(FutureWarning):
    """A file or a command line uses an old word of :data:`VOCABULARY` (which still works)."""


#: Where notes go inside :func:`noted_renames`: the callback, and the notes given already.
_NOTES: ContextVar[tuple[Callable[[str], None], set[str]] | None] = ContextVar(
    "itra_bench_rename_notes", default=None)


def note_renamed(text: str) -> None:
    """Say once that an old word was read: to the callback of the enclosing
    :func:`noted_renames`, else as a :class:`RenamedWordWarning` (which Python shows once
    per message)."""
    notes = _NOTES.get()
    if notes is None:
        warnings.warn(text, RenamedWordWarning, stacklevel=3)
        return
    note, given = notes
    if text not in given:
        given.add(text)
        note(text)


@contextlib.contextmanager
def noted_renames(note: Callable[[str], None]) -> Iterator[None]:
    """Inside the block, each note of an old word read (:func:`note_renamed`) calls
    ``note(text)`` once per text (a command prints them as its notes)."""
    token = _NOTES.set((note, set()))
    try:
        yield
    finally:
        _NOTES.reset(token)
