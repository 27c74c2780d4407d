"""Wikipedia sections triplets (Dor et al. 2018): is the anchor sentence closer to a sentence of
its own section than to one of another section of the same article?

``acc1`` = share of triplets with cos(anchor, positive) > cos(anchor, negative), strictly: top-1
accuracy over the two candidates, a tie counted wrong, as sentence-transformers'
``TripletEvaluator`` (``cosine_accuracy``) computes it
(:func:`itra_bench.protocols.similarity.triplet_accuracy`). Results written before it was
named ``acc1`` called it ``accuracy``; they are read as ``acc1``
(:data:`itra_bench.vocabulary.RENAMED_METRICS`).

Data: ``test.csv`` of sentence-transformers' ``wikipedia-sections-triplets.zip``
(sbert.net/datasets), read as sentence-transformers' ``training_wikipedia_sections.py`` example
and ITRA read it: ``csv.DictReader(delimiter=',', quoting=QUOTE_MINIMAL)``, a header, anchor,
positive and negative in the columns ``Sentence1``, ``Sentence2``, ``Sentence3``. Default
layout: ``DATA_ROOT/wikipedia-sections/test.csv``.

Task file (``task_type: triplets``), for other triplet files in the same CSV format::

    name: my-triplets
    task_type: triplets
    file: wikipedia-sections/validation.csv
    anchor_column: Sentence1
    positive_column: Sentence2
    negative_column: Sentence3
    delimiter: ","
    max_triplets: 1000          # optional: the first N triplets only
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from itra_bench import hookimpl
from itra_bench.context import RunContext
from itra_bench.errors import UserError
from itra_bench.model_api import TEXT
from itra_bench.task import Task, TaskResult
from itra_bench.task_fields import file_key, read_keys
from itra_bench.tasks import load_cards

if TYPE_CHECKING:
    from itra_bench.model import EncoderModel

PROTOCOL = "triplets"
#: This benchmark's YAML cards: its built-in tasks.
CARDS_DIR = Path(__file__).parent / "cards"


@dataclass
class Triplets:
    """Anchor, positive and negative sentences, one triplet per index."""

    anchors: list[str] = field(default_factory=list)
    positives: list[str] = field(default_factory=list)
    negatives: list[str] = field(default_factory=list)


def read_triplets(path: Path, columns: tuple[str, str, str], delimiter: str = ",",
                  max_triplets: int | None = None) -> Triplets:
    """The triplets of a CSV file with a header, from the named (anchor, positive, negative)
    columns; at most ``max_triplets`` (all when None)."""
    out = Triplets()
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter, quoting=csv.QUOTE_MINIMAL)
        header = reader.fieldnames or []
        missing = [c for c in columns if c not in header]
        if missing:
            raise UserError(f"{path}: header {header} lacks column(s) {missing}; set "
                            "anchor_column / positive_column / negative_column (and "
                            "delimiter) in the task file")
        try:
            for row in reader:
                if max_triplets is not None and len(out.anchors) >= max_triplets:
                    break
                values = [row[c] for c in columns]
                if any(v is None for v in values):
                    raise UserError(f"{path}:{reader.line_num}: the row has fewer fields than "
                                    f"the header ({len(header)}); quote sentences that hold "
                                    f"{delimiter!r}")
                out.anchors.append(values[0])
                out.positives.append(values[1])
                out.negatives.append(values[2])
        except csv.Error as exc:
            raise UserError(f"{path}:{reader.line_num}: not valid CSV ({exc})") from None
    if not out.anchors:
        raise UserError(f"{path}: no triplets after the header")
    return out


@dataclass(kw_only=True)
class TripletTask(Task):
    """Triplet accuracy (cosine) of sentence embeddings."""

    # Task's fields, with this type's values.
    modalities: frozenset[str] = field(default_factory=lambda: frozenset({TEXT}))
    protocol: str = PROTOCOL
    main_score: str = "acc1"
    #: Given, it replaces the layout the other fields describe.
    layout: str = ""
    file: str = file_key(help="the CSV file of triplets (with a header), relative to "
                         "--data-root")
    anchor_column: str = file_key("Sentence1", help="the column of anchor sentences")
    positive_column: str = file_key("Sentence2", help="the column of positive sentences")
    negative_column: str = file_key("Sentence3", help="the column of negative sentences")
    delimiter: str = file_key(",", help="the CSV delimiter (one character)")
    max_triplets: int | None = file_key(None, help="score the first N triplets only "
                                        "(default: all)")

    def __post_init__(self) -> None:
        self.suites = tuple(self.suites)
        if not self.layout:
            self.layout = (f"{self.file}: CSV ({self.delimiter!r}-separated, double-quoted "
                           f"where needed) with a header; anchor, positive and negative "
                           f"sentences in columns {self.anchor_column}, {self.positive_column}, "
                           f"{self.negative_column} (test.csv of sentence-transformers' "
                           "wikipedia-sections-triplets.zip)")

    def required_paths(self, data_root: Path, options: Mapping[str, Any]) -> list[Path]:
        return [data_root / self.file]

    def run(self, model: EncoderModel, ctx: RunContext) -> TaskResult:
        from itra_bench.encoding import encode_texts
        from itra_bench.protocols.similarity import triplet_accuracy, unique_texts

        path = ctx.data_root / self.file
        columns = (self.anchor_column, self.positive_column, self.negative_column)
        t = read_triplets(path, columns, self.delimiter, self.max_triplets)
        n = len(t.anchors)
        distinct, index = unique_texts([*t.anchors, *t.positives, *t.negatives])
        features = encode_texts(model, distinct, ctx, f"encode {self.name} sentences")[index]
        scores = triplet_accuracy(features[:n], features[n:2 * n], features[2 * n:])
        details = {"file": str(path), "correct": scores.correct, "ties": scores.ties,
                   "max_triplets": self.max_triplets, "distinct_sentences": len(distinct)}
        return TaskResult({"acc1": scores.accuracy}, self.main_score, n, details,
                          samples=scores.samples)


def triplet_task_from_file(doc: dict[str, Any], path: Path) -> TripletTask:
    """Build a triplet task from a task file or card (``task_type: triplets``)."""
    values = read_keys(TripletTask, doc, path, f"task type {PROTOCOL}")
    if len(values["delimiter"]) != 1:
        raise UserError(f"{path}: key 'delimiter' must be one character, got "
                        f"{values['delimiter']!r}")
    if values["max_triplets"] is not None and values["max_triplets"] <= 0:
        raise UserError(f"{path}: key 'max_triplets' must be a positive number")
    return TripletTask(**values)


@hookimpl
def itra_bench_tasks() -> list[Task]:
    return load_cards(CARDS_DIR, {PROTOCOL: triplet_task_from_file})


@hookimpl
def itra_bench_task_file_protocols() -> dict[str, Any]:
    return {PROTOCOL: triplet_task_from_file}
