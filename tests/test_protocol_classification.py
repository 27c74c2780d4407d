"""classification_metrics and zero-shot classification against clip-benchmark and sklearn."""

from __future__ import annotations

import builtins
import warnings
import zlib

import clip_benchmark.metrics.zeroshot_classification as cb_zeroshot
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from clip_benchmark.metrics.zeroshot_classification import zero_shot_classifier
from sklearn.metrics import balanced_accuracy_score

from itra_bench.protocols.classification_metrics import (
    classification_metrics,
    stable_descending_rank,
)
from itra_bench.protocols.zeroshot import (
    build_zeroshot_classifier,
    fill_template,
    zeroshot_classification,
    zeroshot_scores,
)

DIM = 12


@pytest.fixture
def accuracy(monkeypatch: pytest.MonkeyPatch):
    """clip-benchmark's top-k ``accuracy``, run unchanged.

    clip-benchmark 1.6.2 calls ``float()`` on a one-element 1-d array, which NumPy 2 rejects;
    a module-level ``float`` that accepts it lets its own code run.
    """
    monkeypatch.setattr(
        cb_zeroshot, "float", lambda v: builtins.float(np.asarray(v).item()), raising=False
    )
    return cb_zeroshot.accuracy


def _prompt_embedding(prompt: str) -> torch.Tensor:
    """A fixed random, unnormalised embedding per prompt string."""
    generator = torch.Generator().manual_seed(zlib.crc32(prompt.encode()))
    return torch.randn(DIM, generator=generator) * 3


class _FakeTokenizer:
    """Turns each prompt into one integer id (its CRC), the way clip-benchmark expects."""

    def __init__(self) -> None:
        self.vocab: dict[int, str] = {}

    def __call__(self, texts: list[str]) -> torch.Tensor:
        ids = []
        for text in texts:
            ident = zlib.crc32(text.encode())
            self.vocab[ident] = text
            ids.append(ident)
        return torch.tensor(ids)


class _FakeModel:
    def __init__(self, tokenizer: _FakeTokenizer) -> None:
        self.tokenizer = tokenizer

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.stack([_prompt_embedding(self.tokenizer.vocab[int(i)]) for i in ids])


def _encode_texts(texts: list[str]) -> torch.Tensor:
    return torch.stack([_prompt_embedding(t) for t in texts])


CLASSNAMES = ["cat", "dog", "car", "tree", "boat", "plane", "bird"]
TEMPLATES = ["a photo of a {c}.", "a drawing of a {c}.", "{c}", "itap of my {c}!"]


def _clip_benchmark_classifier(templates) -> torch.Tensor:
    tokenizer = _FakeTokenizer()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # autocast on CPU without amp
        return zero_shot_classifier(
            _FakeModel(tokenizer), tokenizer, CLASSNAMES, templates, "cpu", amp=False
        )


def test_classifier_matches_clip_benchmark() -> None:
    theirs = _clip_benchmark_classifier(TEMPLATES)  # [D, C]
    ours = build_zeroshot_classifier(_encode_texts, CLASSNAMES, TEMPLATES)
    assert ours.shape == (len(CLASSNAMES), DIM)
    torch.testing.assert_close(ours, theirs.T, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ours.norm(dim=1), torch.ones(len(CLASSNAMES)))


def test_class_specific_prompts_match_clip_benchmark() -> None:
    prompts = {c: [f"a {c}", f"the {c} " * (i + 1)][: 1 + i % 2] for i, c in enumerate(CLASSNAMES)}
    theirs = _clip_benchmark_classifier(prompts)
    ours = build_zeroshot_classifier(_encode_texts, CLASSNAMES, prompts)
    torch.testing.assert_close(ours, theirs.T, rtol=1e-6, atol=1e-6)


def test_classifier_encodes_all_prompts_in_one_call() -> None:
    calls = []

    def encode(texts: list[str]) -> torch.Tensor:
        calls.append(list(texts))
        return _encode_texts(texts)

    build_zeroshot_classifier(encode, CLASSNAMES, TEMPLATES)
    assert len(calls) == 1
    assert calls[0][: len(TEMPLATES)] == [t.format(c="cat") for t in TEMPLATES]
    assert len(calls[0]) == len(CLASSNAMES) * len(TEMPLATES)


def test_positional_and_named_placeholders_agree() -> None:
    positional = [t.replace("{c}", "{}") for t in TEMPLATES]
    torch.testing.assert_close(
        build_zeroshot_classifier(_encode_texts, CLASSNAMES, positional),
        build_zeroshot_classifier(_encode_texts, CLASSNAMES, TEMPLATES),
    )
    assert fill_template("a {} and {{braces}}", "dog") == "a dog and {braces}"


@pytest.mark.parametrize("template", ["a photo.", "a {classname}.", "a {0} {1}"])
def test_bad_templates_are_rejected(template: str) -> None:
    with pytest.raises(ValueError, match="template"):
        build_zeroshot_classifier(_encode_texts, CLASSNAMES, [template])


def test_zeroshot_metrics_match_clip_benchmark(accuracy) -> None:
    generator = torch.Generator().manual_seed(1)
    classifier = build_zeroshot_classifier(_encode_texts, CLASSNAMES, TEMPLATES)
    labels = torch.randint(0, len(CLASSNAMES), (300,), generator=generator)
    # Images near their class embedding, with enough noise that accuracy is far from 0 and 1.
    images = classifier[labels] * 2 + torch.randn(300, DIM, generator=generator)
    ours = zeroshot_classification(images * 5, classifier, labels)

    logits = 100.0 * F.normalize(images, dim=-1) @ classifier.T
    acc1, acc5 = accuracy(logits, labels, topk=(1, 5))
    recall = balanced_accuracy_score(labels.numpy(), logits.argmax(dim=1).numpy())
    assert 0.2 < acc1 < 0.9
    assert ours == pytest.approx({"acc1": acc1, "acc5": acc5, "mean_per_class_recall": recall})
    torch.testing.assert_close(
        zeroshot_scores(images, classifier), F.normalize(images, dim=-1) @ classifier.T
    )


def test_metrics_match_references_on_random_scores(accuracy) -> None:
    generator = torch.Generator().manual_seed(2)
    scores = torch.randn(500, 30, generator=generator)
    labels = torch.randint(0, 30, (500,), generator=generator)
    scores[torch.arange(500), labels] += 1.5
    acc1, acc5 = accuracy(scores, labels, topk=(1, 5))
    recall = balanced_accuracy_score(labels.numpy(), scores.argmax(dim=1).numpy())
    assert classification_metrics(scores, labels) == pytest.approx(
        {"acc1": acc1, "acc5": acc5, "mean_per_class_recall": recall}
    )


def test_mean_per_class_recall_ignores_classes_absent_from_labels() -> None:
    generator = torch.Generator().manual_seed(3)
    scores = torch.randn(200, 8, generator=generator)
    labels = torch.randint(0, 4, (200,), generator=generator)  # classes 4..7 never occur
    predictions = scores.argmax(dim=1).numpy()
    assert (predictions >= 4).any()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns about predicted-only classes
        expected = balanced_accuracy_score(labels.numpy(), predictions)
    assert classification_metrics(scores, labels)["mean_per_class_recall"] == pytest.approx(
        expected
    )


def test_acc5_only_with_five_classes() -> None:
    labels = torch.tensor([0, 1, 2, 3])
    assert set(classification_metrics(torch.eye(4), labels)) == {"acc1", "mean_per_class_recall"}
    assert "acc5" in classification_metrics(torch.eye(5)[:4], labels)


def test_ties_rank_lower_class_index_first() -> None:
    labels = torch.arange(8)
    metrics = classification_metrics(torch.zeros(8, 8), labels)
    assert metrics["acc1"] == 1 / 8  # only class 0 is "predicted"
    assert metrics["acc5"] == 5 / 8  # classes 0..4 are the top five
    scores = torch.tensor([[1.0, 2.0, 2.0, 0.0, 2.0]])
    ranks = [int(stable_descending_rank(scores, torch.tensor([c]))) for c in range(5)]
    assert ranks == [3, 0, 1, 4, 2]
    assert ranks == torch.sort(scores[0], descending=True, stable=True)[1].argsort().tolist()


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        classification_metrics(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="rows"):
        classification_metrics(torch.zeros(2, 3), torch.tensor([0]))
    with pytest.raises(ValueError, match="NaN"):
        classification_metrics(torch.full((2, 3), float("nan")), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="dimension"):
        zeroshot_classification(torch.zeros(2, 4), torch.zeros(3, 5), torch.tensor([0, 1]))
