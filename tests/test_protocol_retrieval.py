"""Retrieval recall@k against clip-benchmark, chunking invariance and the tie rule."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from clip_benchmark.metrics.zeroshot_retrieval import batchify, recall_at_k

from itra_bench.protocols.retrieval import retrieval_metrics, retrieval_ranks

KS = (1, 5, 10)


def _captioned_images(n_images: int = 50, per_image: int = 5, dim: int = 16, seed: int = 0):
    """Random images and noisy captions of them, captions in shuffled order."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(n_images, dim, generator=generator)
    text_to_image = torch.arange(n_images).repeat_interleave(per_image)
    text_to_image = text_to_image[torch.randperm(len(text_to_image), generator=generator)]
    texts = images[text_to_image] + 2.5 * torch.randn(len(text_to_image), dim, generator=generator)
    return images * 3, texts, text_to_image


def _clip_benchmark_recalls(images, texts, text_to_image, batch_size=16) -> dict[str, float]:
    """Recall@k exactly as clip-benchmark's zeroshot_retrieval.evaluate computes it."""
    images_emb, texts_emb = F.normalize(images, dim=-1), F.normalize(texts, dim=-1)
    scores = texts_emb @ images_emb.t()
    positive_pairs = torch.zeros_like(scores, dtype=bool)
    positive_pairs[torch.arange(len(scores)), text_to_image] = True
    metrics = {}
    for k in KS:
        metrics[f"image_retrieval_recall@{k}"] = (
            (batchify(recall_at_k, scores, positive_pairs, batch_size, "cpu", k=k) > 0)
            .float()
            .mean()
            .item()
        )
        metrics[f"text_retrieval_recall@{k}"] = (
            (batchify(recall_at_k, scores.T, positive_pairs.T, batch_size, "cpu", k=k) > 0)
            .float()
            .mean()
            .item()
        )
    return metrics


def test_recall_matches_clip_benchmark() -> None:
    images, texts, text_to_image = _captioned_images()
    theirs = _clip_benchmark_recalls(images, texts, text_to_image)
    ours = retrieval_metrics(images, texts, text_to_image, ks=KS)
    assert set(ours) == set(theirs) | {"mean_recall"}
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(value, abs=1e-6), key
    # The data must make the comparison meaningful: recalls strictly between 0 and 1.
    assert all(0 < value < 1 for value in theirs.values())
    assert ours["mean_recall"] == pytest.approx(sum(theirs.values()) / len(theirs))


@pytest.mark.parametrize("per_image", [1, 3])
def test_recall_matches_clip_benchmark_other_shapes(per_image: int) -> None:
    images, texts, text_to_image = _captioned_images(n_images=40, per_image=per_image, seed=4)
    theirs = _clip_benchmark_recalls(images, texts, text_to_image)
    ours = retrieval_metrics(images, texts, text_to_image, ks=KS, chunk_size=9)
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(value, abs=1e-6), key


def test_chunking_does_not_change_results() -> None:
    images, texts, text_to_image = _captioned_images(seed=1)
    whole = retrieval_ranks(images, texts, text_to_image, chunk_size=10_000)
    for chunk_size in (1, 7, 49):
        chunked = retrieval_ranks(images, texts, text_to_image, chunk_size=chunk_size)
        assert torch.equal(whole[0], chunked[0]) and torch.equal(whole[1], chunked[1])
    assert retrieval_metrics(images, texts, text_to_image, chunk_size=7) == retrieval_metrics(
        images, texts, text_to_image, chunk_size=10_000
    )


def test_ties_follow_stable_descending_sort_on_hand_made_case() -> None:
    e0, e1 = [1.0, 0.0], [0.0, 1.0]
    images = torch.tensor([e0, e0, e1, e0])  # images 0, 1 and 3 are identical
    texts = torch.tensor([e0, e0, e1, e0, e0, e0])
    text_to_image = torch.tensor([0, 1, 2, 2, 3, 3])
    image_ranks, text_ranks = retrieval_ranks(images, texts, text_to_image)
    # Caption 1 ties with images 0, 1, 3: image 0 comes first. Caption 3 (image 2, e1)
    # scores 1 against images 0, 1, 3, all ahead of image 2; caption 5 ties with 0, 1, 3.
    assert image_ranks.tolist() == [0, 1, 0, 3, 2, 2]
    # Image 3 scores 1 with captions 0, 1, 3, 4, 5; its best caption is 4, behind 0, 1, 3.
    assert text_ranks.tolist() == [0, 1, 0, 3]
    metrics = retrieval_metrics(images, texts, text_to_image, ks=(1, 2, 3))
    assert metrics["image_retrieval_recall@1"] == 2 / 6
    assert metrics["image_retrieval_recall@3"] == 5 / 6
    assert metrics["text_retrieval_recall@1"] == 2 / 4
    assert metrics["text_retrieval_recall@3"] == 3 / 4


def _exactly_scored_features(count: int, generator: torch.Generator) -> torch.Tensor:
    """Unit vectors with entries in {0, +-0.5, +-1}: their dot products are exact in float32
    whatever the summation order, so equal scores are bitwise equal on any chunking."""
    halves = torch.randint(0, 2, (count, 4), generator=generator).float() - 0.5
    axes = torch.eye(4)[torch.randint(0, 4, (count,), generator=generator)]
    use_axis = torch.rand(count, 1, generator=generator) < 0.3
    return torch.where(use_axis, axes, halves)


def test_ties_match_a_full_stable_sort() -> None:
    generator = torch.Generator().manual_seed(2)
    images = _exactly_scored_features(30, generator)
    text_to_image = torch.cat([torch.arange(30), torch.randint(0, 30, (40,), generator=generator)])
    texts = _exactly_scored_features(70, generator)
    scores = texts @ images.T
    assert len(torch.unique(scores)) <= 5  # scores in {-1, -0.5, 0, 0.5, 1}: ties everywhere

    # Reference: position of each positive in a full stable descending sort.
    order = torch.sort(scores, dim=1, descending=True, stable=True)[1]
    expected_image = (order == text_to_image[:, None]).float().argmax(dim=1)
    order_t = torch.sort(scores.T, dim=1, descending=True, stable=True)[1]
    is_caption = text_to_image[order_t] == torch.arange(30)[:, None]
    expected_text = is_caption.float().argmax(dim=1)

    for chunk_size in (1, 4, 1024):
        image_ranks, text_ranks = retrieval_ranks(images, texts, text_to_image, chunk_size)
        assert torch.equal(image_ranks, expected_image)
        assert torch.equal(text_ranks, expected_text)


def test_uncaptioned_image_is_an_error() -> None:
    images, texts, _ = _captioned_images(n_images=4, per_image=2)
    with pytest.raises(ValueError, match=r"1 of 4 images have no caption.*\[2\]"):
        retrieval_metrics(images, texts, torch.tensor([0, 0, 1, 1, 3, 3, 3, 3]))


def test_bad_inputs_raise() -> None:
    images, texts, text_to_image = _captioned_images(n_images=4, per_image=2)
    with pytest.raises(ValueError, match="one image index per caption"):
        retrieval_metrics(images, texts, text_to_image[:-1])
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        retrieval_metrics(images, texts, text_to_image + 1)
    with pytest.raises(ValueError, match="dimension"):
        retrieval_metrics(images, texts[:, :3], text_to_image)
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(images * float("nan"), texts, text_to_image)
    with pytest.raises(ValueError, match="ks"):
        retrieval_metrics(images, texts, text_to_image, ks=(0,))


@pytest.mark.gpu
def test_cuda_matches_cpu() -> None:
    images, texts, text_to_image = _captioned_images(seed=3)
    cpu = retrieval_metrics(images, texts, text_to_image, chunk_size=16)
    cuda = retrieval_metrics(images, texts, text_to_image, chunk_size=16, device="cuda")
    assert cuda == pytest.approx(cpu)
