"""Wikipedia sections triplets (Dor et al. 2018): is the anchor sentence closer to a sentence of
its own section than to one of another section of the same article?

Accuracy = share of triplets with cos(anchor, positive) > cos(anchor, negative), strictly, as
sentence-transformers' ``TripletEvaluator`` (``cosine_accuracy``) computes it
(:func:`itra_bench.protocols.similarity.triplet_accuracy`).

Data: ``test.csv`` of sentence-transformers' ``wikipedia-sections-triplets.zip``
(sbert.net/datasets), read as sentence-transformers' ``training_wikipedia_sections.py`` example
and ITRA read it: ``csv.DictReader(delimiter=',', quoting=QUOTE_MINIMAL)``, a header, anchor,
positive and negative in the columns ``Sentence1``, ``Sentence2``, ``Sentence3``. Default
layout: ``DATA_ROOT/wikipedia-sections/test.csv``.

Task file (``protocol: triplets``), for other triplet files in the same CSV format::

    name: my-triplets
    protocol: triplets
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
from itra_bench.tasks import load_cards
from itra_bench.yaml_tasks import check_fields

if TYPE_CHECKING:
    from itra_bench.model import EncoderModel

PROTOCOL = "triplets"
BUILTIN = ("wikisections",)

_SCHEMA = {
    "name": (str, True, None),
    "protocol": (str, True, None),
    "description": (str, False, ""),
    "suites": (list, False, []),
    "file": (str, True, None),
    "anchor_column": (str, False, "Sentence1"),
    "positive_column": (str, False, "Sentence2"),
    "negative_column": (str, False, "Sentence3"),
    "delimiter": (str, False, ","),
    "max_triplets": (int, False, None),
}


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


@dataclass
class TripletTask(Task):
    """Triplet accuracy (cosine) of sentence embeddings."""

    name: str = ""
    file: str = ""
    anchor_column: str = "Sentence1"
    positive_column: str = "Sentence2"
    negative_column: str = "Sentence3"
    delimiter: str = ","
    max_triplets: int | None = None
    suites: tuple[str, ...] = ()
    description: str = ""
    modalities: frozenset[str] = field(default_factory=lambda: frozenset({TEXT}))
    protocol: str = PROTOCOL
    main_score: str = "accuracy"
    layout: str = ""

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
        return TaskResult({"accuracy": scores.accuracy}, self.main_score, n, details,
                          samples=scores.samples)


def triplet_task_from_file(doc: dict[str, Any], path: Path) -> TripletTask:
    """Build a triplet task from a task file or card (``protocol: triplets``)."""
    values = check_fields(doc, _SCHEMA, path, f"protocol {PROTOCOL}")
    if len(values["delimiter"]) != 1:
        raise UserError(f"{path}: key 'delimiter' must be one character, got "
                        f"{values['delimiter']!r}")
    if values["max_triplets"] is not None and values["max_triplets"] <= 0:
        raise UserError(f"{path}: key 'max_triplets' must be a positive number")
    return TripletTask(name=values["name"], file=values["file"],
                       anchor_column=values["anchor_column"],
                       positive_column=values["positive_column"],
                       negative_column=values["negative_column"],
                       delimiter=values["delimiter"], max_triplets=values["max_triplets"],
                       suites=tuple(values["suites"]), description=values["description"])


@hookimpl
def itra_bench_tasks() -> list[Task]:
    return load_cards(BUILTIN, {PROTOCOL: triplet_task_from_file})


@hookimpl
def itra_bench_task_file_protocols() -> dict[str, Any]:
    return {PROTOCOL: triplet_task_from_file}
