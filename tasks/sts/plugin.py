"""Semantic textual similarity: STS12-16, STS Benchmark and SICK-R, read as SentEval reads them.

Each sentence pair is scored by the cosine similarity of its two embeddings, and the scores are
correlated with the human ones (:mod:`itra_bench.protocols.similarity`). Main score:
``spearman`` over all pairs of the task pooled, the number SimCSE's SentEval reports as
``all`` for STS12-16 (for STS-B and SICK-R it is the test file's Spearman, as SimCSE reports).
SentEval's ``wmean`` and ``mean`` over the files come beside it.

Data layout under ``--data-root``: SentEval's ``data/downstream`` folder, as its
``data/get_transfer_data.bash`` leaves it (paths from SentEval's ``senteval/engine.py``):
``STS/STS12-en-test`` ... ``STS/STS16-en-test``, ``STS/STSBenchmark/sts-test.csv`` and
``SICK/SICK_{train,trial,test_annotated}.txt``. Like SentEval, sentences are split on
whitespace and joined with single spaces before encoding (SimCSE's batcher), and STS pairs
whose gold line is empty are skipped (counted in the result's details).

SICK-R has two definitions in use, one card each; a result names its own in
``details["definition"]``: ``sickr`` scores the SemEval-2014 test split (4,927 pairs of
``SICK_test_annotated.txt``), as SentEval and SimCSE do; ``sickr-mteb`` scores all 9,927
SemEval-2014 pairs (train, trial and test pooled), as MTEB's SICK-R does.

Cards: ``tasks/sts/cards/{sts12,...,sts16,stsb,sickr,sickr-mteb}.yaml``. A task file with
``task_type: sts`` evaluates other files in the same formats::

    name: my-sts
    task_type: sts
    format: stsbenchmark       # senteval | stsbenchmark | sick
    root: STS/STSBenchmark     # folder, relative to --data-root
    files: [sts-dev.csv]       # senteval: the <name> of STS.input.<name>.txt
    encoding: utf-8            # the files' text encoding (default utf-8)
    definition: ""             # which pairs the score covers, copied to the result
    semeval_set: [TEST]        # sick only: keep rows whose SemEval_set column is listed
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from itra_bench import hookimpl
from itra_bench.context import RunContext
from itra_bench.datasets.text_files import check_encoding, read_text
from itra_bench.errors import UserError
from itra_bench.model_api import TEXT
from itra_bench.task import Task, TaskResult
from itra_bench.task_fields import file_key, read_keys
from itra_bench.tasks import load_cards

if TYPE_CHECKING:
    from itra_bench.model import EncoderModel

PROTOCOL = "sts"
#: This benchmark's YAML cards: its built-in tasks.
CARDS_DIR = Path(__file__).parent / "cards"
FORMATS = ("senteval", "stsbenchmark", "sick")


@dataclass
class ScoredPairs:
    """The scored sentence pairs of one file; ``unscored`` pairs (empty gold line) are not in
    the lists."""

    name: str
    sentences1: list[str]
    sentences2: list[str]
    scores: list[float]
    unscored: int = 0
    other_sets: int = 0  # SICK rows left out by the SemEval_set filter


def _normalise(sentence: str) -> str:
    # SentEval splits sentences on whitespace and SimCSE's batcher joins the words with one
    # space: encoders see the same strings here.
    return " ".join(sentence.split())


def _score(raw: str, path: Path, lineno: int, column: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    # float() also takes "nan" and "inf", which would turn the correlation into nan.
    if not math.isfinite(value):
        raise UserError(f"{path}:{lineno}: {column} {raw!r} is not a number; fix or remove "
                        "the line")
    return value


def _lines(path: Path, encoding: str) -> list[str]:
    fix = ("set `encoding:` in the task file to the files' encoding (e.g. encoding: latin-1), "
           "or save the file as UTF-8")
    return read_text(path, encoding, fix=fix).splitlines()


def read_senteval_sts(folder: Path, name: str, encoding: str = "utf-8") -> ScoredPairs:
    """One SemEval STS file pair: ``STS.input.<name>.txt`` (sentence1 TAB sentence2) and
    ``STS.gs.<name>.txt`` (one gold score a line; an empty line leaves the pair unscored)."""
    inputs = folder / f"STS.input.{name}.txt"
    gold = folder / f"STS.gs.{name}.txt"
    in_lines = _lines(inputs, encoding)
    gs_lines = _lines(gold, encoding)
    if len(in_lines) != len(gs_lines):
        raise UserError(f"{inputs} has {len(in_lines)} lines but {gold} has {len(gs_lines)}: "
                        "the gold file needs one line (a score, or empty) per sentence pair")
    pairs = ScoredPairs(name, [], [], [])
    for lineno, (line, raw) in enumerate(zip(in_lines, gs_lines, strict=True), start=1):
        fields = line.split("\t")
        if len(fields) != 2:
            raise UserError(f"{inputs}:{lineno}: expected 2 tab-separated sentences, found "
                            f"{len(fields)} fields")
        if not raw.strip():
            pairs.unscored += 1
            continue
        pairs.scores.append(_score(raw, gold, lineno, "gold score"))
        pairs.sentences1.append(_normalise(fields[0]))
        pairs.sentences2.append(_normalise(fields[1]))
    return pairs


def read_stsbenchmark(path: Path, encoding: str = "utf-8") -> ScoredPairs:
    """STS Benchmark's csv as SentEval reads it: tab-separated, no header, no quoting;
    genre, file, year, id, score, sentence1, sentence2 (later columns ignored)."""
    pairs = ScoredPairs(path.name, [], [], [])
    for lineno, line in enumerate(_lines(path, encoding), start=1):
        if not line.strip():
            continue
        fields = line.strip().split("\t")
        if len(fields) < 7:
            raise UserError(f"{path}:{lineno}: expected at least 7 tab-separated columns "
                            "(genre, file, year, id, score, sentence1, sentence2), found "
                            f"{len(fields)}")
        pairs.scores.append(_score(fields[4], path, lineno, "score (column 5)"))
        pairs.sentences1.append(_normalise(fields[5]))
        pairs.sentences2.append(_normalise(fields[6]))
    return pairs


SICK_COLUMNS = ("sentence_A", "sentence_B", "relatedness_score")


def read_sick(path: Path, encoding: str = "utf-8", semeval_set: tuple[str, ...] | None = None
              ) -> ScoredPairs:
    """A SICK file, tab-separated with a header line: SemEval-2014's ``SICK_train.txt``,
    ``SICK_trial.txt``, ``SICK_test_annotated.txt`` (pair_ID, sentence_A, sentence_B,
    relatedness_score, entailment_judgment) or the full release's ``SICK.txt`` (12 columns,
    relatedness_score fifth, SemEval_set last).

    Columns are found by their names in the header; a file without one is read by position
    (sentences in columns 2 and 3, the score in column 4), as SentEval reads SICK.
    ``semeval_set`` keeps only rows whose ``SemEval_set`` (TRAIN, TRIAL, TEST) is listed;
    the rows it leaves out are counted in ``other_sets``.
    """
    pairs = ScoredPairs(path.name, [], [], [])
    a, b, score, set_column = 1, 2, 3, None
    for lineno, line in enumerate(_lines(path, encoding), start=1):
        if not line.strip():
            continue
        fields = line.strip().split("\t")
        if lineno == 1 and ("relatedness_score" in fields
                            or len(fields) >= 4 and not _is_number(fields[3])):
            # The header (SentEval skips the first line).
            if "relatedness_score" in fields:
                missing = [c for c in SICK_COLUMNS if c not in fields]
                if missing:
                    raise UserError(f"{path}:1: the header has no column(s) {missing}; SICK "
                                    f"files name {', '.join(SICK_COLUMNS)}")
                a, b, score = (fields.index(c) for c in SICK_COLUMNS)
            if "SemEval_set" in fields:
                set_column = fields.index("SemEval_set")
            continue
        if semeval_set is not None and set_column is None:
            raise UserError(f"{path}: `semeval_set:` needs a SemEval_set column named in the "
                            "header (the full release's SICK.txt has one); this file has "
                            "none. Remove the key to use every row")
        need = max(a, b, score, -1 if set_column is None else set_column) + 1
        if len(fields) < need:
            raise UserError(f"{path}:{lineno}: expected at least {need} tab-separated "
                            f"columns (sentence_A in column {a + 1}, sentence_B in {b + 1}, "
                            f"relatedness_score in {score + 1}), found {len(fields)}")
        if semeval_set is not None and set_column is not None \
                and fields[set_column] not in semeval_set:
            pairs.other_sets += 1
            continue
        pairs.scores.append(_score(fields[score], path, lineno,
                                   f"relatedness_score (column {score + 1})"))
        pairs.sentences1.append(_normalise(fields[a]))
        pairs.sentences2.append(_normalise(fields[b]))
    return pairs


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@dataclass(kw_only=True)
class STSTask(Task):
    """Cosine similarity of sentence pairs against human scores, over one or more files."""

    # Task's fields, with this type's values.
    modalities: frozenset[str] = field(default_factory=lambda: frozenset({TEXT}))
    protocol: str = PROTOCOL
    main_score: str = "spearman"
    #: Given, it replaces the layout the format describes.
    layout: str = ""
    format: str = file_key(help="the files' format: senteval | stsbenchmark | sick")
    root: str = file_key(help="the folder of the files, relative to --data-root")
    files: tuple[str, ...] = file_key(help="the files, in order (senteval: the <name> of "
                                      "STS.input.<name>.txt)")
    encoding: str = file_key("utf-8", help="the files' text encoding")
    definition: str = file_key("", help="which pairs the score covers, copied to the result")
    semeval_set: tuple[str, ...] | None = file_key(
        None, help="sick only: keep the rows whose SemEval_set column is listed (TRAIN, "
        "TRIAL, TEST; default: every row)")

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"format {self.format!r}: choose one of {FORMATS}")
        self.files = tuple(self.files)
        self.suites = tuple(self.suites)
        if not self.layout:
            self.layout = self._layout()

    def _layout(self) -> str:
        if self.format == "senteval":
            return (f"{self.root}/STS.input.<name>.txt and {self.root}/STS.gs.<name>.txt for "
                    f"<name> in {', '.join(self.files)} (SentEval's data/downstream layout: "
                    "input = sentence1<TAB>sentence2 per line; gold = one score per line, an "
                    "empty line = unscored pair, skipped)")
        what = ("STS Benchmark as SentEval reads it: tab-separated, no header; genre, file, "
                "year, id, score, sentence1, sentence2"
                if self.format == "stsbenchmark" else
                "SICK as SentEval reads it: tab-separated with a header; pair_ID, sentence_A, "
                "sentence_B, relatedness_score, entailment_judgment")
        return f"{', '.join(f'{self.root}/{f}' for f in self.files)} ({what})"

    def required_paths(self, data_root: Path, options: Mapping[str, Any]) -> list[Path]:
        folder = data_root / self.root
        if self.format == "senteval":
            return [folder / f"STS.{kind}.{name}.txt" for name in self.files
                    for kind in ("input", "gs")]
        return [folder / f for f in self.files]

    def load(self, data_root: Path) -> list[ScoredPairs]:
        """The scored pairs of every file, in the card's order."""
        folder = data_root / self.root
        if self.format == "senteval":
            return [read_senteval_sts(folder, name, self.encoding) for name in self.files]
        if self.format == "stsbenchmark":
            return [read_stsbenchmark(folder / f, self.encoding) for f in self.files]
        return [read_sick(folder / f, self.encoding, self.semeval_set) for f in self.files]

    def run(self, model: EncoderModel, ctx: RunContext) -> TaskResult:
        import torch

        from itra_bench.encoding import encode_texts
        from itra_bench.protocols.similarity import (
            correlation,
            paired_cosine,
            sts_correlations,
            unique_texts,
        )

        files = self.load(ctx.data_root)
        for p in files:
            if len(p.scores) < 2:
                file = f"STS.gs.{p.name}.txt" if self.format == "senteval" else p.name
                raise UserError(f"{ctx.data_root / self.root / file}: {len(p.scores)} scored "
                                "pair(s); a correlation needs at least 2")
        texts = [t for p in files for t in (*p.sentences1, *p.sentences2)]
        distinct, index = unique_texts(texts)
        features = encode_texts(model, distinct, ctx, f"encode {self.name} sentences")[index]
        system, gold, per_file = [], [], {}
        start = 0
        for p in files:
            n = len(p.scores)
            first = features[start:start + n]
            second = features[start + n:start + 2 * n]
            start += 2 * n
            cos = paired_cosine(first, second)
            scores = torch.tensor(p.scores, dtype=torch.float64)
            c = correlation(cos, scores)
            system.append(cos)
            gold.append(scores)
            per_file[p.name] = {"spearman": c.spearman, "pearson": c.pearson, "num_pairs": n,
                                "unscored_pairs": p.unscored}
            if self.semeval_set is not None:
                per_file[p.name]["rows_of_other_semeval_sets"] = p.other_sets
        metrics = sts_correlations(system, gold)
        details: dict[str, Any] = {"definition": self.definition} if self.definition else {}
        details |= {
            "per_file": per_file,
            "unscored_pairs": sum(p.unscored for p in files),
            "aggregation": "spearman/pearson: all pairs pooled (SimCSE's 'all'); _wmean: "
                           "per-file correlations weighted by pairs (SentEval's 'wmean'); "
                           "_mean: unweighted (SentEval's 'mean')",
        }
        return TaskResult(metrics, self.main_score, sum(len(p.scores) for p in files), details)


def sts_task_from_file(doc: dict[str, Any], path: Path) -> STSTask:
    """Build an STS task from a task file or card (``task_type: sts``)."""
    values = read_keys(STSTask, doc, path, f"task type {PROTOCOL}")
    if values["format"] not in FORMATS:
        raise UserError(f"{path}: key 'format' must be one of {', '.join(FORMATS)}, got "
                        f"{values['format']!r}")
    if not values["files"]:
        raise UserError(f"{path}: key 'files' must list at least one file")
    check_encoding(values["encoding"], f"{path}: key 'encoding'")
    if values["semeval_set"] is not None:
        if values["format"] != "sick":
            raise UserError(f"{path}: key 'semeval_set' applies to format sick only")
        if not values["semeval_set"]:
            raise UserError(f"{path}: key 'semeval_set' must list at least one of TRAIN, "
                            "TRIAL, TEST (or be left out: every row)")
    return STSTask(**values)


@hookimpl
def itra_bench_tasks() -> list[Task]:
    return load_cards(CARDS_DIR, {PROTOCOL: sts_task_from_file})


@hookimpl
def itra_bench_task_file_protocols() -> dict[str, Any]:
    return {PROTOCOL: sts_task_from_file}
