"""TAP-C zero-shot VQA: official VQA accuracy (hand-computed from the official definition),
question rewrite rules, and `itra-bench run` on a tiny VQA v2-format dataset (questions +
annotations JSON, COCO-named JPEGs)."""

from __future__ import annotations

import json

import pytest
import torch
from itra_test_plugin import PixelModel
from PIL import Image

from itra_bench.results import iter_records
from itra_bench.tasks.tapc.plugin import candidate_pools
from itra_bench.tasks.tapc.vqa_accuracy import (
    normalize_prediction,
    process_punctuation,
    vqa_accuracy,
    vqa_accuracy_metrics,
)
from itra_bench.tasks.tapc.vqa_statements import statement_for
from itra_bench.tasks.tapc.vqav2 import COCO_IMAGE_PATTERN

PLUGIN = "itra_bench.tasks.tapc.plugin"

# --------------------------------------------------------------------------------------
# Official accuracy, computed by hand: mean over the 10 leave-one-annotator-out subsets of
# min(#matches among the other 9 / 3, 1).


def test_accuracy_two_of_ten_match_by_hand():
    answers = ["dog", "dog"] + ["cat"] * 8
    # Leaving out one of the 2 "dog" annotators (2 subsets): 1 match left -> min(1/3, 1) = 1/3.
    # Leaving out one of the 8 "cat" annotators (8 subsets): 2 matches -> min(2/3, 1) = 2/3.
    # mean = (2 * 1/3 + 8 * 2/3) / 10 = (2/3 + 16/3) / 10 = 6 / 10 = 0.6
    assert vqa_accuracy("dog", answers) == pytest.approx(0.6)


@pytest.mark.parametrize(("matches", "expected"), [
    (0, 0.0),   # every subset: 0 matches -> 0
    (1, 0.3),   # 1 subset with 0 (1 * 0) + 9 subsets with 1/3 (9 * 1/3 = 3) -> 3 / 10
    (3, 0.9),   # 3 subsets with 2/3 (3 * 2/3 = 2) + 7 subsets with 1 (7) -> 9 / 10
    (4, 1.0),   # 4 subsets with min(3/3, 1) = 1 + 6 subsets with min(4/3, 1) = 1 -> 1
    (10, 1.0),
])
def test_accuracy_by_number_of_matching_annotators(matches, expected):
    answers = ["2"] * matches + ["5"] * (10 - matches)
    assert vqa_accuracy("2", answers) == pytest.approx(expected)


@pytest.mark.parametrize(("prediction", "gt", "expected"), [
    ("Two", "2", "2"),              # number words -> digits, lower-cased
    ("the dog", "dog", "dog"),      # articles dropped
    ("A Dog", "dog", "dog"),
    ("yes.", "yes", "yes"),         # a period not followed by a digit is removed
    ("1.5", "1.5", "1.5"),          # ... one followed by a digit is kept
    ("t-shirt", "t shirt", "t shirt"),  # punctuation not touching a space -> a space
    ("3,000", "3000", "3000"),      # digit,digit in the text: punctuation deleted
    ("dont", "don't", "don't"),     # apostrophe-less contractions restored
    ("None", "0", "0"),
    ("  red\n", "red", "red"),
])
def test_prediction_normalisation(prediction, gt, expected):
    assert normalize_prediction(prediction) == expected
    assert vqa_accuracy(prediction, [gt] * 10) == 1.0


def test_multilabel_answers_that_disagree():
    # 6 say yes, 4 say no: every leave-one-out subset keeps >= 5 yes and >= 3 no, so both
    # answers are fully right: yes -> 10 * 1 / 10; no -> 4 * min(3/3, 1) + 6 * min(4/3, 1).
    answers = ["yes"] * 6 + ["no"] * 4
    assert vqa_accuracy("yes", answers) == 1.0
    assert vqa_accuracy("no", answers) == 1.0
    # Disagreeing answers get the punctuation step: "red." counts as "red" -> 3 matches: 0.9.
    assert vqa_accuracy("red", ["red.", "red", "red"] + ["blue"] * 7) == pytest.approx(0.9)
    # Identical answers are compared as given (the official code skips the step then).
    assert process_punctuation("red.") == "red"
    assert vqa_accuracy("red", ["red."] * 10) == 0.0
    # Three-way split: 2 x "2", 5 x "3", 3 x "4"; predicting "4": 3 subsets without one of
    # the "4"s -> 2/3 each, 7 subsets with all three -> 1: (3 * 2/3 + 7) / 10 = 0.9.
    assert vqa_accuracy("four", ["2"] * 2 + ["3"] * 5 + ["4"] * 3) == pytest.approx(0.9)


def test_accuracy_metrics_overall_and_per_type():
    metrics = vqa_accuracy_metrics([1.0, 0.3, 0.6, 0.9, 0.0],
                                   ["yes/no", "yes/no", "number", "other", "other"])
    assert metrics == pytest.approx({"vqa_acc": 2.8 / 5, "vqa_acc_yes_no": 0.65,
                                     "vqa_acc_number": 0.6, "vqa_acc_other": 0.45})


# --------------------------------------------------------------------------------------
# Rewrite rules


@pytest.mark.parametrize(("question", "rule", "filled"), [
    ("Is the man smiling?", "polar",
     {"yes": "the man is smiling.", "no": "the man is not smiling."}),
    ("Does the man have a hat?", "polar",
     {"yes": "the man have a hat.", "no": "the man does not have a hat."}),
    ("Is this a cat?", "polar", {"yes": "this is a cat.", "no": "this is not a cat."}),
    ("Is this dog happy?", "polar", {"no": "this dog is not happy."}),
    ("Can you see the ocean?", "polar", {"yes": "you can see the ocean."}),
    ("Is the color of the car red?", "polar", {"yes": "the color of the car is red."}),
    ("Are there any dogs?", "polar-there", {"no": "there are not any dogs."}),
    ("How many dogs are there?", "how-many-there", {"2": "there are 2 dogs."}),
    ("How many dogs are there in the park?", "how-many-there",
     {"3": "there are 3 dogs in the park."}),
    ("How many people are in the photo?", "how-many", {"4": "there are 4 people in the photo."}),
    ("how many birds", "how-many", {"1": "there are 1 birds."}),
    ("What color is the car?", "color", {"red": "the color of the car is red."}),
    ("What color are the man's shoes?", "color",
     {"black": "the color of the man's shoes is black."}),
    ("What color shirt is the man wearing?", "color-noun",
     {"blue": "the man is wearing a blue shirt."}),
    ("What kind of dog is this?", "kind-of", {"poodle": "a photo of a poodle dog."}),
    ("What type of food is on the plate?", "kind-of", {"pizza": "a photo of a pizza food."}),
    ("What sport is being played?", "what-noun", {"tennis": "the sport is tennis."}),
    ("What time is it?", "what-noun", {"noon": "the time is noon."}),
    ("What is the man holding?", "what-is-doing", {"bat": "the man is holding bat."}),
    ("What is on the table?", "what-is", {"cake": "cake is on the table."}),
    ("What is this?", "what-is", {"kite": "this is kite."}),
    ("What is the name of the dog?", "what-is", {"max": "the name of the dog is max."}),
    ("Where is the cat?", "where", {"kitchen": "the cat is in kitchen."}),
    ("Who is holding the umbrella?", "who", {"woman": "woman is holding the umbrella."}),
    ("Is it day or night?", "generic", {"day": "question: is it day or night? answer: day."}),
    ("Why is the man running?", "generic",
     {"late": "question: why is the man running? answer: late."}),
    ("Which {brace} is it?", "generic",
     {"x": "question: which (brace) is it? answer: x."}),
])
def test_rewrite_rules(question, rule, filled):
    statement = statement_for(question)
    assert statement.rule == rule
    for answer, text in filled.items():
        assert statement.fill(answer) == text


def test_candidate_pools_per_answer_type():
    from collections import Counter

    counts = Counter({"yes": 9, "no": 8, "2": 5, "red": 5, "1.5": 1, "zebra": 1, "blue": 2})
    pools = candidate_pools(counts, top_k=5)
    # top 5 by count, ties alphabetical: yes, no, 2, red, blue ("1.5" and "zebra" cut).
    assert pools == {"yes/no": ["yes", "no"], "number": ["2"],
                     "other": ["2", "red", "blue"]}


# --------------------------------------------------------------------------------------
# End to end on a tiny VQA v2-format dataset

# (question id, image id, question, answer type, 10 answers, answer the forced model picks,
#  accuracy by hand)
VAL = [
    (4201, 42, "Is the man smiling?", "yes/no", ["yes"] * 10, "yes", 1.0),
    # 2 of 10 say "2": (2 * 1/3 + 8 * 2/3) / 10 = 0.6
    (4202, 42, "How many dogs are there?", "number", ["2"] * 2 + ["3"] * 8, "2", 0.6),
    # 3 of 10 say "red": (3 * 2/3 + 7 * 1) / 10 = 0.9
    (7301, 73, "What color is the car?", "other",
     ["red"] * 3 + ["blue"] * 5 + ["dark red"] * 2, "red", 0.9),
    # "giraffe" is only a val answer: no candidate can be right.
    (7302, 73, "What animal is this?", "other", ["giraffe"] * 10, "dog", 0.0),
    # 1 of 10 says "yes": (1 * 0 + 9 * 1/3) / 10 = 0.3
    (9001, 90, "Is it raining?", "yes/no", ["no"] * 9 + ["yes"], "yes", 0.3),
]
# Training answers: the candidate vocabulary (no "giraffe", which only val has).
TRAIN = [("yes", "yes/no")] * 3 + [("no", "yes/no")] * 2 + [("2", "number")] * 3 + \
    [("3", "number"), ("red", "other"), ("red", "other"), ("blue", "other"), ("dog", "other"),
     ("dog", "other"), ("zebra", "other")]


def _question_type(question: str) -> str:
    return " ".join(question.lower().rstrip("?").split()[:2])


def _annotation(qid, image_id, question, answer_type, answers):
    return {"question_id": qid, "image_id": image_id, "question_type": _question_type(question),
            "answer_type": answer_type, "multiple_choice_answer": answers[0],
            "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
                        for i, a in enumerate(answers)]}


def write_vqav2(root, val=VAL, train=TRAIN):
    """VQA v2 release files under root/vqav2 (the card's layout)."""
    base = root / "vqav2"
    (base / "val2014").mkdir(parents=True)
    info = {"info": {"description": "tiny"}, "license": {}, "data_subtype": "val2014",
            "task_type": "Open-Ended", "data_type": "mscoco"}
    (base / "v2_OpenEnded_mscoco_val2014_questions.json").write_text(json.dumps({
        **info, "questions": [{"image_id": img, "question": q, "question_id": qid}
                              for qid, img, q, *_ in val]}))
    (base / "v2_mscoco_val2014_annotations.json").write_text(json.dumps({
        **info, "annotations": [_annotation(qid, img, q, t, a) for qid, img, q, t, a, *_ in val]}))
    train_questions = {"What color is it?": "other", "How many are there?": "number",
                       "Is it?": "yes/no"}
    by_type = {t: q for q, t in train_questions.items()}
    (base / "v2_mscoco_train2014_annotations.json").write_text(json.dumps({
        **info, "data_subtype": "train2014", "annotations": [
            _annotation(100 + i, 500 + i, by_type[t], t, [a] * 10)
            for i, (a, t) in enumerate(train)]}))
    colors = {42: (200, 30, 30), 73: (30, 200, 30), 90: (30, 30, 200)}
    for image_id, color in colors.items():
        name = COCO_IMAGE_PATTERN.format(split="val2014", image_id=image_id)
        Image.new("RGB", (16, 12), color).save(base / "val2014" / name, quality=95)
    return base


@pytest.fixture
def data_root(tmp_path):
    root = tmp_path / "data"
    write_vqav2(root)
    return root


def run(cli, tmp_path, data_root, *tasks, extra=()):
    return cli("run", "--model", "pixel", "--plugin", "itra_test_plugin", "--plugin", PLUGIN,
               "--tasks", *(tasks or ("tapc-vqav2-val",)), "--data-root", data_root,
               "--output", tmp_path / "out", "--cache-dir", tmp_path / "cache", "--workers",
               "0", "--no-progress", *extra)


def records(out):
    return {r["task"]: r for _, r in iter_records(out)}


def test_image_names_follow_the_coco_convention():
    assert COCO_IMAGE_PATTERN.format(split="val2014", image_id=42) == \
        "COCO_val2014_000000000042.jpg"


def test_run_reports_overall_and_per_type_accuracy(cli, tmp_path, data_root):
    res = run(cli, tmp_path, data_root)
    assert res.code == 0, res
    rec = records(tmp_path / "out")["tapc-vqav2-val"]
    assert rec["main_score"] == "vqa_acc" and rec["num_samples"] == len(VAL)
    metrics = rec["metrics"]
    assert set(metrics) == {"vqa_acc", "vqa_acc_yes_no", "vqa_acc_number", "vqa_acc_other"}
    assert all(0.0 <= v <= 1.0 for v in metrics.values())
    details = rec["details"]
    # The vocabulary is the training answers only; giraffe (val only) is never a candidate.
    assert details["candidate_pool_sizes"] == {"yes/no": 2, "number": 2, "other": 6}
    predictions = json.loads(open(details["predictions"]).read())
    assert [p["question_id"] for p in predictions] == [v[0] for v in VAL]
    train_vocab = {a for a, _ in TRAIN}
    assert all(p["answer"] in train_vocab for p in predictions)
    by_id = {p["question_id"]: p["answer"] for p in predictions}
    assert by_id[4201] in ("yes", "no") and by_id[9001] in ("yes", "no")
    assert by_id[4202] in ("2", "3")
    # Per-question accuracies recomputed from the stored answers give the same metrics.
    accs = [vqa_accuracy(by_id[qid], answers) for qid, _, _, _, answers, *_ in VAL]
    assert metrics["vqa_acc"] == pytest.approx(sum(accs) / len(accs))


def _force(monkeypatch, preferred_texts):
    """Make the pixel model prefer exactly these statements: images embed to e0, preferred
    statements to e0 (cosine 1) and every other statement to e1 (cosine 0)."""
    preferred = set(preferred_texts)

    def encode_image(self, images):
        return torch.tensor([[1.0, 0.0]]).repeat(len(images), 1)

    def encode_text(self, texts):
        return torch.tensor([[1.0, 0.0] if t in preferred else [0.0, 1.0] for t in texts])

    monkeypatch.setattr(PixelModel, "encode_image", encode_image)
    monkeypatch.setattr(PixelModel, "encode_text", encode_text)


def test_forced_choices_give_the_hand_computed_accuracy(cli, tmp_path, data_root,
                                                        monkeypatch):
    _force(monkeypatch, [statement_for(q).fill(choice) for _, _, q, _, _, choice, _ in VAL])
    res = run(cli, tmp_path, data_root)
    assert res.code == 0, res
    rec = records(tmp_path / "out")["tapc-vqav2-val"]
    predictions = json.loads(open(rec["details"]["predictions"]).read())
    assert [p["answer"] for p in predictions] == [v[5] for v in VAL]
    # yes/no: (1.0 + 0.3) / 2; number: 0.6; other: (0.9 + 0.0) / 2; overall: 2.8 / 5
    assert rec["metrics"] == pytest.approx({"vqa_acc": 0.56, "vqa_acc_yes_no": 0.65,
                                            "vqa_acc_number": 0.6, "vqa_acc_other": 0.45})


def test_task_file_with_rules_and_question_type_candidates(cli, tmp_path, data_root,
                                                           monkeypatch):
    # The model likes "red" for the car and "zebra" for the animal.
    _force(monkeypatch, ["the color of the car is red.", "the animal is zebra."])
    task_file = tmp_path / "my-vqa.yaml"
    task_file.write_text(
        "name: my-vqa\nprotocol: tapc-vqa\n"
        "questions: vqav2/v2_OpenEnded_mscoco_val2014_questions.json\n"
        "annotations: vqav2/v2_mscoco_val2014_annotations.json\n"
        "train_annotations: vqav2/v2_mscoco_train2014_annotations.json\n"
        "images: vqav2/val2014\nimage_pattern: 'COCO_val2014_{image_id:012d}.jpg'\n"
        "top_k: 5\nquestion_type_k: 2\nanswer_types: rules\n")
    res = run(cli, tmp_path, data_root, str(task_file))
    assert res.code == 0, res
    rec = records(tmp_path / "out")["my-vqa"]
    details = rec["details"]
    # Training counts: 2 x3, yes x3, dog x2, no x2, red x2, then 3, blue, zebra x1; the top 5
    # (ties alphabetical) are 2, yes, dog, no, red.
    assert details["candidate_pool_sizes"] == {"yes/no": 2, "number": 1, "other": 3}
    assert details["answer_types"] == "rules" and details["question_type_k"] == 2
    # Question type "what color" saw dog, red, blue, zebra in training: its 2 candidates
    # within the pool are dog and red. "what animal" never occurs in training: the whole
    # "other" pool (2, dog, red) is scored, zebra is not in it, all score alike and the most
    # frequent candidate wins the tie.
    assert details["mean_candidates_per_question"] == pytest.approx((2 + 1 + 2 + 3 + 2) / 5)
    predictions = {p["question_id"]: p["answer"]
                   for p in json.loads(open(details["predictions"]).read())}
    assert predictions[7301] == "red"
    assert predictions[7302] == "2"
    assert predictions[4202] == "2"  # rules: "how many" -> number pool


def test_bad_input_names_file_and_field(cli, tmp_path, data_root):
    annotations = data_root / "vqav2" / "v2_mscoco_val2014_annotations.json"
    doc = json.loads(annotations.read_text())
    doc["annotations"] = doc["annotations"][1:]
    annotations.write_text(json.dumps(doc))
    res = run(cli, tmp_path, data_root)
    assert res.code == 2
    assert "question 4201" in res.err and "has no annotation" in res.err

    task_file = tmp_path / "bad.yaml"
    task_file.write_text("name: bad\nprotocol: tapc-vqa\nquestions: q.json\n")
    res = run(cli, tmp_path, data_root, str(task_file))
    assert res.code == 2 and "bad.yaml" in res.err and "'annotations'" in res.err


def test_missing_data_is_reported_with_the_layout(cli, tmp_path):
    res = run(cli, tmp_path, tmp_path / "empty")
    assert res.code == 2, res
    assert "v2_OpenEnded_mscoco_val2014_questions.json" in res.err


@pytest.mark.parametrize("pattern", ["{image_id[0]}.jpg", "{image_id.x}.jpg", "{other}.jpg",
                                     "{image_id:q}.jpg", "{0}.jpg"])
def test_bad_image_pattern_names_file_and_key(cli, tmp_path, data_root, pattern):
    task_file = tmp_path / "pattern.yaml"
    task_file.write_text(
        "name: tapc-pattern\nprotocol: tapc-vqa\nquestions: vqav2/q.json\n"
        "annotations: vqav2/a.json\ntrain_annotations: vqav2/t.json\nimages: vqav2/val2014\n"
        f"image_pattern: '{pattern}'\n")
    res = run(cli, tmp_path, data_root, str(task_file))
    assert res.code == 2, res
    assert "pattern.yaml" in res.err and "image_pattern" in res.err
    assert "Traceback" not in res.err
