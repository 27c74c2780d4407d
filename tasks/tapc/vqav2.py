"""VQA v2 as released (visualqa.org; read by the GT-Vision-Lab/VQA API): questions JSON,
annotations JSON and MS COCO images.

- ``v2_OpenEnded_mscoco_<split>_questions.json``:
  ``{"questions": [{"image_id", "question", "question_id"}, ...]}``
- ``v2_mscoco_<split>_annotations.json``: ``{"annotations": [{"question_id", "image_id",
  "question_type", "answer_type" (yes/no | number | other), "multiple_choice_answer",
  "answers": [{"answer", "answer_confidence", "answer_id"} x 10]}, ...]}``
- images ``<split>/COCO_<split>_<image_id as 12 digits>.jpg`` (e.g. ``val2014/``).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from itra_bench.datasets.image_source import ImageFiles
from itra_bench.datasets.text_files import read_json
from itra_bench.errors import MissingDataError, UserError

#: The COCO file name of an image, as a ``str.format`` pattern over ``image_id``.
COCO_IMAGE_PATTERN = "COCO_{split}_{image_id:012d}.jpg"


@dataclass(frozen=True)
class VQAQuestion:
    """One question with its annotation (``answers``: the annotators' raw answers)."""

    question_id: int
    image_id: int
    question: str
    question_type: str
    answer_type: str
    multiple_choice_answer: str
    answers: tuple[str, ...]


def _load_json(path: Path, top_key: str, what: str) -> list[dict[str, Any]]:
    if not path.is_file():
        raise MissingDataError(f"VQA {what} file not found: {path}")
    doc = read_json(path, f"the VQA v2 {what} JSON (is the download complete?)")
    if not isinstance(doc, dict) or not isinstance(doc.get(top_key), list):
        raise UserError(f"{path}: expected a JSON object with a list under {top_key!r} "
                        f"(the VQA v2 {what} format)")
    return doc[top_key]


def _field(entry: Any, key: str, typ: type | tuple[type, ...], path: Path, index: int,
           top_key: str) -> Any:
    if not isinstance(entry, dict) or key not in entry:
        raise UserError(f"{path}: {top_key}[{index}] has no {key!r} field")
    value = entry[key]
    if not isinstance(value, typ) or isinstance(value, bool):
        raise UserError(f"{path}: {top_key}[{index}].{key} has the wrong type "
                        f"({type(value).__name__}: {value!r})")
    return value


def read_annotations(path: Path) -> dict[int, dict[str, Any]]:
    """Annotations of a split keyed by question id, with every field the task uses checked."""
    entries = _load_json(path, "annotations", "annotations")
    out: dict[int, dict[str, Any]] = {}
    for i, entry in enumerate(entries):
        qid = _field(entry, "question_id", int, path, i, "annotations")
        if qid in out:
            raise UserError(f"{path}: annotations[{i}] repeats question_id {qid}; each "
                            "question needs one annotation")
        for key in ("question_type", "answer_type", "multiple_choice_answer"):
            _field(entry, key, str, path, i, "annotations")
        answers = _field(entry, "answers", list, path, i, "annotations")
        if not answers:
            raise UserError(f"{path}: annotations[{i}] (question {qid}) has no answers")
        for j, ans in enumerate(answers):
            if not isinstance(ans, dict) or not isinstance(ans.get("answer"), str):
                raise UserError(f"{path}: annotations[{i}].answers[{j}] (question {qid}) "
                                "needs a string 'answer'")
        out[qid] = entry
    return out


def read_split(questions_path: Path, annotations_path: Path) -> list[VQAQuestion]:
    """The questions of a split joined with their annotations, in the questions file's order."""
    annotations = read_annotations(annotations_path)
    entries = _load_json(questions_path, "questions", "questions")
    questions: list[VQAQuestion] = []
    seen: set[int] = set()
    for i, entry in enumerate(entries):
        qid = _field(entry, "question_id", int, questions_path, i, "questions")
        if qid in seen:
            raise UserError(f"{questions_path}: questions[{i}] repeats question_id {qid}; "
                            "each question must be listed once")
        seen.add(qid)
        image_id = _field(entry, "image_id", int, questions_path, i, "questions")
        text = _field(entry, "question", str, questions_path, i, "questions")
        ann = annotations.get(qid)
        if ann is None:
            raise UserError(f"{questions_path}: questions[{i}] (question {qid}) has no "
                            f"annotation in {annotations_path}; use the files of one split")
        questions.append(VQAQuestion(
            question_id=qid, image_id=image_id, question=text,
            question_type=ann["question_type"], answer_type=ann["answer_type"],
            multiple_choice_answer=ann["multiple_choice_answer"],
            answers=tuple(a["answer"] for a in ann["answers"])))
    if not questions:
        raise UserError(f"{questions_path} has no questions")
    return questions


def answer_counts(annotations: Mapping[int, dict[str, Any]]) -> Counter[str]:
    """How often each ``multiple_choice_answer`` occurs among annotations
    (from :func:`read_annotations`)."""
    return Counter(a["multiple_choice_answer"] for a in annotations.values())


def answers_by_question_type(annotations: Mapping[int, dict[str, Any]]
                             ) -> dict[str, Counter[str]]:
    """Per ``question_type`` (a question prefix such as ``what color is the``), the counts of
    its ``multiple_choice_answer``s."""
    out: dict[str, Counter[str]] = {}
    for a in annotations.values():
        out.setdefault(a["question_type"], Counter())[a["multiple_choice_answer"]] += 1
    return out


class VQAImages(ImageFiles):
    """The distinct images the questions ask about, named by ``pattern`` in ``folder``.

    ``row_of[image_id]`` is the image's index here.
    """

    def __init__(self, folder: Path, pattern: str, image_ids: Iterable[int]) -> None:
        self.folder = Path(folder).absolute()
        if not self.folder.is_dir():
            raise MissingDataError(f"VQA image folder not found: {self.folder}")
        self.row_of: dict[int, int] = {}
        self.paths: list[Path] = []
        digest = hashlib.sha256(f"{self.folder}\0{pattern}\0".encode())
        for image_id in image_ids:
            if image_id in self.row_of:
                continue
            self.row_of[image_id] = len(self.paths)
            path = self.folder / pattern.format(image_id=image_id)
            self.paths.append(path)
            try:
                st = path.stat()
                digest.update(f"{path.name}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
            except OSError:
                # Reported with its name when it is decoded; it still shapes the identity.
                digest.update(f"{path.name}\0missing\0".encode())
        self.identity = f"vqa-images:{digest.hexdigest()[:20]}"
