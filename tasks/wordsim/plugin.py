"""Word similarity: RG65, SimLex-999 and WordSim353 with the model's text encoder.

Each word is embedded on its own (through the card's ``template``, ``"{}"`` by default: the
bare word), each pair is scored by cosine similarity, and the main score is the Spearman
correlation with the human scores (:mod:`itra_bench.protocols.similarity`); Pearson beside it.

The reader takes the files as published and the common copies of them:

- ``EN-RG-65.txt`` (wordvectors.org, word-embeddings-benchmarks): ``word1<TAB>word2<TAB>score``;
- ``SimLex-999.txt`` (SimLex-999.zip): tab-separated, a header
  ``word1 word2 POS SimLex999 conc(w1) ...``; the score is the ``SimLex999`` column;
- ``combined.csv`` of wordsim353.zip: ``Word 1,Word 2,Human (mean)`` header, comma-separated
  (``combined.tab``: the same with tabs);
- gensim's test copies (``gensim/test/test_data/wordsim353.tsv``, ``simlex999.txt``): ``#``
  comment lines, then ``word1<TAB>word2<TAB>score``;
- ITRA's ``rg65.csv``, ``simlex999.csv``, ``wordsim353.csv``: ``word1;word2;score``, no header.

The separator is detected from the first data line (tab, then ``;``, then ``,``, else
whitespace) unless the card sets one. A first data line whose score is not a number is the
header. A named ``score_column`` is looked up in the header; a file without a header uses the
third column. Comment lines (``#``) and blank lines are counted; lines that cannot be used
(too few fields, a score that is not a number, an empty word) are skipped, counted and shown
in the result's details with their line numbers, never dropped silently.

Task file (``task_type: wordsim``)::

    name: simlex-gensim
    task_type: wordsim
    file: /path/to/gensim/test/test_data/simlex999.txt   # or relative to --data-root
    score_column: 2            # 0-based index, or a header name such as SimLex999
    separator: auto            # auto | "\\t" | ";" | "," | " "
    template: "{}"             # each word is put in the template's {} slot
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

PROTOCOL = "wordsim"
#: This benchmark's YAML cards: its built-in tasks.
CARDS_DIR = Path(__file__).parent / "cards"
SEPARATORS = ("auto", "\t", ";", ",", " ")
#: Unusable lines shown in the details (all are counted).
MAX_EXAMPLES = 5

@dataclass
class WordPairs:
    """The usable word pairs of a file, and what was not used."""

    words1: list[str] = field(default_factory=list)
    words2: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    header: list[str] | None = None
    separator: str = ""
    comment_lines: int = 0
    blank_lines: int = 0
    skipped: list[str] = field(default_factory=list)


def _detect_separator(line: str) -> str:
    for sep in ("\t", ";", ","):
        if sep in line:
            return sep
    return " "


def _split(line: str, separator: str) -> list[str]:
    parts = line.split() if separator == " " else line.split(separator)
    return [p.strip() for p in parts]


def _is_number(text: str) -> bool:
    """A finite number: float() also takes "nan" and "inf", which would make the
    correlation nan."""
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def read_word_pairs(path: Path, separator: str = "auto", score_column: int | str = 2,
                    encoding: str = "utf-8") -> WordPairs:
    """Read ``word1, word2, score`` rows (words in the first two columns) from ``path``."""
    lines = read_text(path, encoding, fix="set `encoding:` in the task file to the file's "
                      "encoding (e.g. encoding: latin-1), or save the file as UTF-8"
                      ).splitlines()
    out = WordPairs()
    score_index = score_column if isinstance(score_column, int) else None
    first_data = True
    for lineno, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            out.blank_lines += 1
            continue
        if line.startswith("#"):
            out.comment_lines += 1
            continue
        if first_data:
            out.separator = _detect_separator(line) if separator == "auto" else separator
        fields = _split(line, out.separator)
        if first_data:
            first_data = False
            if isinstance(score_column, str):
                if score_column in fields:
                    out.header = fields
                    score_index = fields.index(score_column)
                    continue
                # No header naming the column: a 3-column copy (gensim's, ITRA's).
                score_index = 2
            if len(fields) > score_index and not _is_number(fields[score_index]):
                if isinstance(score_column, str):
                    raise UserError(f"{path}:{lineno}: header {fields} has no column "
                                    f"{score_column!r}; set `score_column:` to one of them "
                                    "or to a 0-based index")
                out.header = fields
                continue
        assert score_index is not None
        need = score_index + 1
        if len(fields) < need:
            reason = f"{len(fields)} field(s), expected at least {need}"
        elif not _is_number(fields[score_index]):
            reason = f"score {fields[score_index]!r} is not a number"
        elif not fields[0] or not fields[1]:
            reason = "empty word"
        else:
            out.words1.append(fields[0])
            out.words2.append(fields[1])
            out.scores.append(float(fields[score_index]))
            continue
        out.skipped.append(f"{path}:{lineno}: {reason}: {raw!r}")
    if len(out.scores) < 2:
        example = f", e.g. {out.skipped[0]}" if out.skipped else ""
        raise UserError(f"{path}: {len(out.scores)} usable word pair(s) ({len(out.skipped)} "
                        f"unusable line(s){example}); expected word1, word2, score per line: "
                        "check `separator:` and `score_column:`")
    return out


@dataclass(kw_only=True)
class WordSimTask(Task):
    """Spearman of the cosine similarity of word embeddings against human scores."""

    # Task's fields, with this type's values.
    modalities: frozenset[str] = field(default_factory=lambda: frozenset({TEXT}))
    protocol: str = PROTOCOL
    main_score: str = "spearman"
    #: Given, it replaces the layout the other fields describe.
    layout: str = ""
    file: str = file_key(help="the word-pair file, relative to --data-root")
    separator: str = file_key("auto", help="auto (detected), or a tab, ';', ',' or ' '")
    score_column: int | str = file_key(2, help="the score's column: a 0-based index (2 or "
                                       "more), or a header name such as SimLex999")
    template: str = file_key("{}", help="each word is put in the template's {} slot")
    encoding: str = file_key("utf-8", help="the file's text encoding")

    def __post_init__(self) -> None:
        self.suites = tuple(self.suites)
        if not self.layout:
            column = (f"the {self.score_column!r} column of the header (the third column "
                      "when there is no header)" if isinstance(self.score_column, str)
                      else f"column {self.score_column} (0-based)")
            sep = ("tab, ';', ',' or whitespace (detected)" if self.separator == "auto"
                   else repr(self.separator))
            self.layout = (f"{self.file}: one word pair a line, word1 and word2 in the first "
                           f"two columns, score in {column}; separator {sep}; '#' comment "
                           "lines and a header allowed")

    def required_paths(self, data_root: Path, options: Mapping[str, Any]) -> list[Path]:
        return [data_root / self.file]

    def run(self, model: EncoderModel, ctx: RunContext) -> TaskResult:
        import torch

        from itra_bench.encoding import encode_texts
        from itra_bench.protocols.similarity import correlation, paired_cosine, unique_texts

        path = ctx.data_root / self.file
        pairs = read_word_pairs(path, self.separator, self.score_column, self.encoding)
        n = len(pairs.scores)
        texts = [self.template.replace("{}", w) for w in (*pairs.words1, *pairs.words2)]
        distinct, index = unique_texts(texts)
        features = encode_texts(model, distinct, ctx, f"encode {self.name} words")[index]
        cos = paired_cosine(features[:n], features[n:])
        c = correlation(cos, torch.tensor(pairs.scores, dtype=torch.float64))
        if pairs.skipped:
            ctx.console.print(f"[yellow]warning[/] {self.name}: {len(pairs.skipped)} unusable "
                              f"line(s) skipped, e.g. {pairs.skipped[0]}")
        details = {
            "file": str(path),
            "template": self.template,
            "header": pairs.header,
            "separator": pairs.separator,
            "comment_lines": pairs.comment_lines,
            "blank_lines": pairs.blank_lines,
            "skipped_lines": len(pairs.skipped),
            "skipped_examples": pairs.skipped[:MAX_EXAMPLES],
            "distinct_words": len(distinct),
        }
        # The outcomes are the n usable pairs, in file order: the pairs the correlation used.
        return TaskResult({"spearman": c.spearman, "pearson": c.pearson}, self.main_score, n,
                          details, samples=c.samples)


def wordsim_task_from_file(doc: dict[str, Any], path: Path) -> WordSimTask:
    """Build a word-similarity task from a task file or card (``task_type: wordsim``)."""
    values = read_keys(WordSimTask, doc, path, f"task type {PROTOCOL}")
    if values["separator"] not in SEPARATORS:
        raise UserError(f"{path}: key 'separator' must be one of "
                        f"{', '.join(map(repr, SEPARATORS))}, got {values['separator']!r}")
    if "{}" not in values["template"]:
        raise UserError(f"{path}: template {values['template']!r} has no '{{}}' slot for the "
                        "word")
    check_encoding(values["encoding"], f"{path}: key 'encoding'")
    if isinstance(values["score_column"], int) and values["score_column"] < 2:
        raise UserError(f"{path}: key 'score_column' must be a 0-based index of 2 or more "
                        "(the words are columns 0 and 1) or a header name")
    return WordSimTask(**values)


@hookimpl
def itra_bench_tasks() -> list[Task]:
    return load_cards(CARDS_DIR, {PROTOCOL: wordsim_task_from_file})


@hookimpl
def itra_bench_task_file_protocols() -> dict[str, Any]:
    return {PROTOCOL: wordsim_task_from_file}
