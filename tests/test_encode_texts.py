"""``encode_texts`` encodes each distinct text once: duplicates (COCO's repeated captions,
prompts shared by classes) get the rows of their first occurrence."""

from __future__ import annotations

import io

import torch
from itra_test_plugin import PixelModel
from rich.console import Console

from itra_bench.context import RunContext
from itra_bench.encoding import encode_texts
from itra_bench.feature_cache import FeatureCache


class CountingModel(PixelModel):
    """PixelModel that records every text it encodes."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        self.seen += texts
        return super().encode_text(texts)


def context(cache: FeatureCache | None = None) -> RunContext:
    return RunContext(batch_size=2, cache=cache, workers=0,
                      console=Console(file=io.StringIO(), width=400))


def test_each_distinct_text_is_encoded_once_and_rows_follow_the_input():
    texts = ["a dog", "a cat", "a dog", "an emu", "a cat", "a dog"]
    model = CountingModel()
    features = encode_texts(model, texts, context())
    assert sorted(model.seen) == ["a cat", "a dog", "an emu"]
    assert features.shape[0] == len(texts)
    reference = PixelModel().encode_text(texts)
    assert torch.equal(features, reference)


def test_lists_with_the_same_distinct_texts_share_one_cache_entry(tmp_path):
    cache = FeatureCache(tmp_path)
    first = CountingModel()
    a = encode_texts(first, ["x", "y", "x"], context(cache))
    second = CountingModel()
    b = encode_texts(second, ["x", "y"], context(cache))
    assert second.seen == []  # served from the first call's entry
    assert torch.equal(a[[0, 1]], b)


def test_no_texts():
    assert encode_texts(CountingModel(), [], context()).shape[0] == 0


class LengthSortedModel(CountingModel):
    """CountingModel whose text encoder runs each batch at its own length, recording the
    batches it is given."""

    dynamic_text_length = True

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[str]] = []

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        self.batches.append(list(texts))
        return super().encode_text(texts)


def test_dynamic_length_models_get_length_sorted_batches_and_rows_in_input_order(tmp_path):
    texts = ["bb", "a", "dddd", "ccc", "eeeee", "a", "ffffff", "g"]
    model = LengthSortedModel()
    cache = FeatureCache(tmp_path)
    features = encode_texts(model, texts, context(cache))
    # Distinct texts, longest first, in batches of 2 (ties keep their input order).
    assert model.batches == [["ffffff", "eeeee"], ["dddd", "ccc"], ["bb", "a"], ["g"]]
    assert torch.equal(features, PixelModel().encode_text(texts))
    # Entries of sorted batches are kept apart from those of input-order batches.
    plain = CountingModel()
    encode_texts(plain, texts, context(cache))
    assert sorted(plain.seen) == sorted(set(texts))
    again = LengthSortedModel()
    assert torch.equal(encode_texts(again, texts, context(cache)), features)
    assert again.batches == []
