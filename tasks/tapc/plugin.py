"""TAP-C zero-shot VQA (suite ``tapc``): CLIP answers VQA v2 questions by image-text matching.

After TAP-C (Song et al., 2022, "CLIP Models are Few-shot Learners: Empirical Studies on VQA
and Visual Entailment"), zero-shot:

1. each question becomes a statement with an answer slot
   (:mod:`itra_bench.tasks.tapc.vqa_statements`: documented rules instead of TAP-C's T5
   generator);
2. the candidate answers come from the TRAINING annotations: the ``top_k`` most frequent
   ``multiple_choice_answer``s (ties broken alphabetically), restricted by answer type:
   yes/no questions score only ``yes`` and ``no`` (the affirmative and the negated
   statement), number questions only the numeric candidates, other questions every other
   candidate. With ``question_type_k`` > 0 a question scores only the (at most) that many
   most frequent training answers of its VQA ``question_type`` (e.g. ``what color is the``)
   within its pool, which cuts the cost by orders of magnitude;
3. the image is embedded once, every filled statement is embedded (batched, cached), and the
   answer is the candidate whose statement has the highest cosine similarity with the image
   (the more frequent candidate on ties);
4. the answers are scored with the official VQA accuracy
   (:mod:`itra_bench.tasks.tapc.vqa_accuracy`), overall and per answer type.

The answer type that picks a question's pool is, by default (``answer_types: annotations``),
the annotated ``answer_type`` as in TAP-C's per-type evaluation; this reveals the annotators'
answer type to the model. ``answer_types: rules`` infers it from the question alone (polar
question -> yes/no, "how many" -> number, else other). The per-type metrics always group by
the annotated type, as the official evaluation does.

The predictions are written in the official results format (``[{"question_id", "answer"}]``)
to the run's output folder.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from itra_bench import hookimpl
from itra_bench.atomic_io import atomic_write_json
from itra_bench.context import RunContext
from itra_bench.errors import UserError
from itra_bench.metric_names import Metric
from itra_bench.model_api import IMAGE, TEXT
from itra_bench.task import Task, TaskResult
from itra_bench.task_fields import build, file_key, not_from_file, read_keys
from itra_bench.tasks import load_cards
from itra_bench.tasks.tapc.vqa_accuracy import vqa_accuracy, vqa_accuracy_metrics
from itra_bench.tasks.tapc.vqa_statements import Statement, statement_for
from itra_bench.tasks.tapc.vqav2 import (
    VQAImages,
    VQAQuestion,
    answer_counts,
    answers_by_question_type,
    read_annotations,
    read_split,
)

if TYPE_CHECKING:
    import torch

    from itra_bench.model import EncoderModel

PROTOCOL = "tapc-vqa"
#: This benchmark's YAML cards: its built-in tasks.
CARDS_DIR = Path(__file__).parent / "cards"
ANSWER_TYPE_SOURCES = ("annotations", "rules")
YES_NO, NUMBER, OTHER = "yes/no", "number", "other"
#: A numeric candidate: digits, optionally with a decimal part ("2", "10", "1.5").
_NUMERIC = re.compile(r"\d+(\.\d+)?")
#: Filled statements embedded per encode_texts call: bounds memory, and each chunk is one
#: feature-cache entry, so an interrupted run resumes from the last finished chunk.
STATEMENTS_PER_CHUNK = 20_000

@dataclass
class VQAFiles:
    """Where a VQA v2-format split lives; relative paths are under ``--data-root``."""

    questions: str = file_key(help="the questions JSON (v2_OpenEnded_mscoco_*_questions.json)")
    annotations: str = file_key(help="the annotations JSON of the evaluated split")
    train_annotations: str = file_key(help="the training annotations JSON (the candidate "
                                      "vocabulary comes from it alone)")
    images: str = file_key(help="the folder of the images")
    image_pattern: str = file_key(help="an image's file name, with an {image_id} field "
                                  "(COCO_val2014_{image_id:012d}.jpg)")

    @property
    def layout(self) -> str:
        example = self.image_pattern.format(image_id=42)
        return (f"{self.questions} ({{\"questions\": [{{image_id, question, question_id}}]}}), "
                f"{self.annotations} and {self.train_annotations} (VQA v2 annotations: "
                "{\"annotations\": [{question_id, image_id, question_type, answer_type, "
                "multiple_choice_answer, answers: [10 x {answer, answer_confidence, "
                f"answer_id}}]}}]}}), images {self.images}/{example} (image id 42)")

    def path(self, data_root: Path, name: str) -> Path:
        return Path(data_root) / getattr(self, name)

    def required_paths(self, data_root: Path) -> list[Path]:
        return [self.path(data_root, k)
                for k in ("questions", "annotations", "train_annotations", "images")]


def candidate_pools(counts: Counter[str], top_k: int) -> dict[str, list[str]]:
    """Candidate answers per answer type from training answer counts.

    The vocabulary is the ``top_k`` most frequent answers (count descending, then
    alphabetically); ``yes/no`` is always ``[yes, no]``, ``number`` the numeric vocabulary
    answers, ``other`` the vocabulary without yes and no.
    """
    vocab = [a for a, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]]
    return {YES_NO: ["yes", "no"],
            NUMBER: [a for a in vocab if _NUMERIC.fullmatch(a)],
            OTHER: [a for a in vocab if a not in ("yes", "no")]}


def inferred_answer_type(statement: Statement) -> str:
    """The answer type the rewrite rules imply: polar -> yes/no, how many -> number."""
    if statement.rule.startswith("polar"):
        return YES_NO
    if statement.rule.startswith("how-many"):
        return NUMBER
    return OTHER


@dataclass
class TapcVQATask(Task):
    """Zero-shot VQA by scoring slotted statements against the image (TAP-C)."""

    data: VQAFiles | None = not_from_file(None)
    top_k: int = file_key(1000, help="the candidate vocabulary: the most frequent training "
                          "answers")
    question_type_k: int = file_key(0, help="0: every candidate of the answer type's pool; N: "
                                    "the N most frequent of the question's question_type")
    answer_types: str = file_key("annotations", help="what picks the candidate pool: "
                                 "annotations (the annotated answer_type) or rules (the "
                                 "question's text)")
    protocol: str = PROTOCOL
    main_score: str = "vqa_acc"
    modalities: frozenset[str] = field(default_factory=lambda: frozenset({IMAGE, TEXT}))

    def __post_init__(self) -> None:
        if self.data is None:
            raise ValueError("TapcVQATask needs its data files")
        if self.answer_types not in ANSWER_TYPE_SOURCES:
            raise ValueError(f"answer_types must be one of {ANSWER_TYPE_SOURCES}")
        self.layout = self.data.layout

    def required_paths(self, data_root: Path, options: Mapping[str, Any]) -> list[Path]:
        assert self.data is not None
        return self.data.required_paths(data_root)

    def candidates(self, questions: list[VQAQuestion], statements: list[Statement],
                   train_annotations: Path) -> tuple[list[list[str]], dict[str, int]]:
        """Each question's candidate answers, and the size of each answer type's pool."""
        train = read_annotations(train_annotations)
        pools = candidate_pools(answer_counts(train), self.top_k)
        if not pools[OTHER]:
            raise UserError(f"{train_annotations}: no candidate answers besides yes/no; the "
                            "training annotations must name other multiple_choice_answers")
        # A tiny vocabulary may hold no number: number questions then score the whole pool.
        pools[NUMBER] = pools[NUMBER] or pools[OTHER]
        by_qtype: dict[str, list[str]] = {}
        if self.question_type_k > 0:
            pool_sets = {k: set(v) for k, v in pools.items()}
            for qtype, counts in answers_by_question_type(train).items():
                by_qtype[qtype] = [a for a, _ in sorted(counts.items(),
                                                        key=lambda kv: (-kv[1], kv[0]))]
        out: list[list[str]] = []
        for q, st in zip(questions, statements, strict=True):
            kind = q.answer_type if self.answer_types == "annotations" else \
                inferred_answer_type(st)
            pool = pools.get(kind, pools[OTHER])
            if self.question_type_k > 0 and kind != YES_NO and q.question_type in by_qtype:
                narrowed = [a for a in by_qtype[q.question_type] if a in pool_sets.get(
                    kind, pool_sets[OTHER])][:self.question_type_k]
                pool = narrowed or pool
            out.append(pool)
        return out, {k: len(v) for k, v in pools.items()}

    def run(self, model: EncoderModel, ctx: RunContext) -> TaskResult:
        import torch.nn.functional as F

        from itra_bench.encoding import encode_images

        assert self.data is not None
        root = ctx.data_root
        questions = read_split(self.data.path(root, "questions"),
                               self.data.path(root, "annotations"))
        statements = [statement_for(q.question) for q in questions]
        candidates, pool_sizes = self.candidates(
            questions, statements, self.data.path(root, "train_annotations"))

        images = VQAImages(self.data.path(root, "images"), self.data.image_pattern,
                           (q.image_id for q in questions))
        encoded = encode_images(model, images, ctx, split="vqa images")
        feature_row = {int(src): row for row, src in enumerate(encoded.indices.tolist())}
        image_features = F.normalize(encoded.features, dim=-1)
        # Questions about images skipped as corrupt (--skip-corrupt) are left out.
        keep = [i for i, q in enumerate(questions) if images.row_of[q.image_id] in feature_row]

        predictions = self._answer(model, ctx, [questions[i] for i in keep],
                                   [statements[i] for i in keep],
                                   [candidates[i] for i in keep], image_features,
                                   [feature_row[images.row_of[questions[i].image_id]]
                                    for i in keep])
        kept = [questions[i] for i in keep]
        accuracies = [vqa_accuracy(p, q.answers) for p, q in zip(predictions, kept, strict=True)]
        metrics = vqa_accuracy_metrics(accuracies, [q.answer_type for q in kept])

        results_path = ctx.output_dir / f"{self.name}_results.json"
        atomic_write_json(results_path, [{"question_id": q.question_id, "answer": p}
                                         for q, p in zip(kept, predictions, strict=True)])
        details: dict[str, Any] = {
            "predictions": str(results_path),
            "num_images": len(encoded.indices),
            "questions_per_answer_type": dict(Counter(q.answer_type for q in kept)),
            "candidate_pool_sizes": pool_sizes,
            "mean_candidates_per_question": sum(len(candidates[i]) for i in keep) / len(keep)
            if keep else 0.0,
            "rewrite_rules_used": dict(Counter(statements[i].rule for i in keep)),
            "top_k": self.top_k, "question_type_k": self.question_type_k,
            "answer_types": self.answer_types,
        }
        if encoded.skipped:
            details["skipped_corrupt"] = encoded.skipped
            details["questions_skipped"] = len(questions) - len(keep)
        return TaskResult(metrics, self.main_score, len(kept), details)

    def _answer(self, model: EncoderModel, ctx: RunContext, questions: list[VQAQuestion],
                statements: list[Statement], candidates: list[list[str]],
                image_features: torch.Tensor, rows: list[int]) -> list[str]:
        """The best-scoring candidate of each question (cosine of image and statement)."""
        import torch
        import torch.nn.functional as F

        from itra_bench.encoding import encode_texts

        chunks: list[tuple[int, int]] = []
        start = total = 0
        for i, cands in enumerate(candidates):
            total += len(cands)
            if total >= STATEMENTS_PER_CHUNK:
                chunks.append((start, i + 1))
                start, total = i + 1, 0
        if start < len(candidates):
            chunks.append((start, len(candidates)))

        answers: list[str] = []
        for c, (lo, hi) in enumerate(chunks):
            index: dict[str, int] = {}
            per_question: list[list[int]] = []
            for st, cands in zip(statements[lo:hi], candidates[lo:hi], strict=True):
                per_question.append([index.setdefault(st.fill(a), len(index)) for a in cands])
            label = "encode statements" + (f" {c + 1}/{len(chunks)}" if len(chunks) > 1 else "")
            text_features = F.normalize(encode_texts(model, list(index), ctx, label), dim=-1)
            for k, ids in enumerate(per_question):
                scores = text_features[ids] @ image_features[rows[lo + k]]
                # argmax keeps the first maximum: the more frequent candidate wins ties.
                answers.append(candidates[lo + k][int(torch.argmax(scores))])
        return answers


def task_from_doc(doc: dict[str, Any], path: Path) -> TapcVQATask:
    """Build the task from a task file / card (``task_type: tapc-vqa``)."""
    # The task file holds the keys of the task and of its files, the files first.
    values = read_keys((Task, VQAFiles, TapcVQATask), doc, path, f"task type {PROTOCOL}")
    if values["task_type"] != PROTOCOL:
        raise UserError(f"{path}: task_type must be {PROTOCOL!r}")
    if values["top_k"] < 1:
        raise UserError(f"{path}: key 'top_k' must be at least 1")
    if values["question_type_k"] < 0:
        raise UserError(f"{path}: key 'question_type_k' must be 0 (off) or more")
    if values["answer_types"] not in ANSWER_TYPE_SOURCES:
        raise UserError(f"{path}: key 'answer_types' must be one of "
                        f"{', '.join(ANSWER_TYPE_SOURCES)}")
    try:
        values["image_pattern"].format(image_id=1)
    # format() raises any of these for a field the pattern cannot fill from an integer id.
    except (KeyError, IndexError, ValueError, TypeError, AttributeError) as exc:
        raise UserError(f"{path}: key 'image_pattern' must be a file name with an "
                        "'{image_id}' field, e.g. COCO_val2014_{image_id:012d}.jpg") from exc
    return build(TapcVQATask, values, data=build(VQAFiles, values))


@hookimpl
def itra_bench_tasks() -> list[Task]:
    return load_cards(CARDS_DIR, {PROTOCOL: task_from_doc})


@hookimpl
def itra_bench_task_file_protocols() -> dict[str, Any]:
    return {PROTOCOL: task_from_doc}


@hookimpl
def itra_bench_metrics() -> list[Metric]:
    return [Metric("vqa_acc", "VQA accuracy: min(1, matching annotator answers / 3), averaged "
                   "over the leave-one-annotator-out subsets, then over questions",
                   outcome_kinds=("means",)),
            Metric("vqa_acc_{answer_type}", "vqa_acc over the questions of one answer type "
                   "(yes_no, number, other)")]
