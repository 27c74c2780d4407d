"""VQA accuracy as the official VQA evaluation defines it (GT-Vision-Lab/VQA, ``vqaEval.py``).

Answer normalisation
    A predicted answer has newlines and tabs replaced by spaces and is stripped, then goes
    through :func:`process_punctuation` and :func:`process_digit_article`. The annotators'
    answers of a question go through :func:`process_punctuation` only, and only when they are
    not all identical (the official code does exactly this; VQA v2's released answers are
    already lower-cased and mostly normalised, so this rarely matters).

Per-question accuracy
    With the question's n (10 in VQA v2) annotator answers, for each of the n subsets that
    leave one annotator out, ``min(#answers in the subset equal to the prediction / 3, 1)``;
    the accuracy is the mean over the n subsets. A prediction that 3 or more annotators gave
    is (almost) fully right: with m matches out of 10 the value is 0, 0.3, 0.6, 0.9, 1 for
    m = 0, 1, 2, 3, >= 4.

Overall and per answer type
    The mean of the per-question accuracies over all questions, and over the questions of
    each ``answer_type`` (``yes/no``, ``number``, ``other``). The official tool reports these
    x100 rounded to 2 decimals; here they are fractions in [0, 1], unrounded. The metrics
    carry the per-question accuracies (per-sample outcomes of kind ``means``, array
    ``vqa_acc``), which recompute ``vqa_acc``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    # Task modules import this one while `itra-bench --help` lists them: no numpy at import.
    from itra_bench.sample_outcomes import Metrics

#: The official contractions map (keys are spellings without apostrophes).
CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "couldn'tve": "couldn't've", "couldnt've": "couldn't've",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't",
    "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've",
    "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're",
    "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've",
    "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll",
    "youre": "you're", "youve": "you've",
}
#: Number words the official tool turns into digits ("none" counts as 0).
NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
                "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = ("a", "an", "the")
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<",
               "@", "`", ",", "?", "!")
# The official pattern is "(?!<=\d)(\.)(?!\d)": its first group is a lookahead (a typo for a
# lookbehind) that always holds, so the effect is "a period not followed by a digit".
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
# The official call passes re.UNICODE (32) positionally, i.e. as sub()'s ``count``: at most
# 32 periods are removed. Kept for identical results.
_PERIOD_STRIP_COUNT = 32


def process_punctuation(text: str) -> str:
    """The official ``processPunctuation``.

    Each punctuation mark is deleted when it touches a space somewhere in the text (or the
    text has a digit-comma-digit group), else replaced by a space; periods not followed by
    a digit are deleted. Apostrophes and colons are kept.
    """
    out = text
    for p in PUNCTUATION:
        if (p + " " in text or " " + p in text) or _COMMA_STRIP.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out, count=_PERIOD_STRIP_COUNT)


def process_digit_article(text: str) -> str:
    """The official ``processDigitArticle``: lower-case, number words 'none'..'ten' to digits,
    articles dropped, apostrophe-less contractions restored, whitespace collapsed."""
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in ARTICLES]
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def normalize_prediction(answer: str) -> str:
    """A predicted answer as the official evaluation compares it."""
    answer = answer.replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(answer))


def vqa_accuracy(prediction: str, gt_answers: Sequence[str]) -> float:
    """Official accuracy of one predicted answer against a question's annotator answers.

    The mean over the leave-one-annotator-out subsets of ``min(matches / 3, 1)`` (see the
    module docstring for the normalisation on each side).
    """
    if not gt_answers:
        raise ValueError("a question needs at least one annotator answer")
    pred = normalize_prediction(prediction)
    gts = list(gt_answers)
    if len(set(gts)) > 1:
        gts = [process_punctuation(a) for a in gts]
    matches = [a == pred for a in gts]
    total = sum(matches)
    # Leaving annotator i out removes their vote when it matched.
    per_subset = [min(1.0, (total - m) / 3) for m in matches]
    return sum(per_subset) / len(per_subset)


def answer_type_key(answer_type: str) -> str:
    """Metric-name suffix of an answer type: ``yes/no`` -> ``yes_no``."""
    return re.sub(r"[^0-9a-zA-Z]+", "_", answer_type).strip("_").lower()


def vqa_accuracy_metrics(accuracies: Sequence[float], answer_types: Sequence[str]
                         ) -> Metrics:
    """``vqa_acc`` (mean per-question accuracy) and ``vqa_acc_<type>`` per answer type,
    carrying the per-question accuracies.

    ``accuracies[i]`` is the :func:`vqa_accuracy` of question i, ``answer_types[i]`` its
    annotated answer type (``yes/no`` becomes ``vqa_acc_yes_no``).
    """
    if len(accuracies) != len(answer_types):
        raise ValueError("one answer type per accuracy is needed")
    if not accuracies:
        raise ValueError("no questions to score")
    metrics = {"vqa_acc": sum(accuracies) / len(accuracies)}
    by_type: dict[str, list[float]] = {}
    for acc, kind in zip(accuracies, answer_types, strict=True):
        by_type.setdefault(answer_type_key(kind), []).append(acc)
    for kind, values in sorted(by_type.items()):
        metrics[f"vqa_acc_{kind}"] = sum(values) / len(values)
    import numpy as np

    from itra_bench.sample_outcomes import Metrics, SampleOutcomes

    return Metrics(metrics, SampleOutcomes(
        "means", {"vqa_acc": np.asarray(accuracies, dtype=np.float64)}))
