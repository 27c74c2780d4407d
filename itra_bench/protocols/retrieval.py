"""Image-text retrieval recall@k with several captions per image (COCO, Flickr30k style).

The similarity matrix is never held whole: rows are scored ``chunk_size`` queries at a time,
so 5k images x 25k captions needs memory of about ``chunk_size x max(N, M)`` scores. Under a
distributed job (``world``) each rank scores a contiguous share of those chunks, and the ranks
are gathered in order: the same chunks as one process, so the same ranks.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

from itra_bench.distributed import World, gather_rows, shard
from itra_bench.protocols.classification_metrics import stable_descending_rank
from itra_bench.sample_outcomes import Metrics, SampleOutcomes


def _check_features(name: str, features: Tensor) -> None:
    if features.ndim != 2:
        raise ValueError(f"{name} must be [count, dim], got shape {tuple(features.shape)}")
    if not torch.isfinite(features).all():
        raise ValueError(f"{name} contain NaN or infinite values")


def retrieval_ranks(
    image_features: Tensor,
    text_features: Tensor,
    text_to_image: Tensor,
    chunk_size: int = 1024,
    device: torch.device | str = "cpu",
    world: World | None = None,
) -> tuple[Tensor, Tensor]:
    """0-based ranks of the matching items, for both retrieval directions.

    ``image_features`` is ``[N, D]``, ``text_features`` is ``[M, D]`` and ``text_to_image[j]``
    is the index of caption ``j``'s image. Features are L2-normalised and compared by cosine
    similarity. Returns ``(image_ranks, text_ranks)``:

    - ``image_ranks[j]`` (``[M]``, text -> image): where caption ``j``'s image lands among
      all ``N`` images;
    - ``text_ranks[i]`` (``[N]``, image -> text): the best rank among all ``M`` captions
      of any caption of image ``i``.

    A rank counts the candidates that score higher plus those that score the same and have a
    lower index (a stable descending sort). Every image must have at least one caption.
    Both tensors are int64 on the CPU.
    """
    _check_features("image_features", image_features)
    _check_features("text_features", text_features)
    n_images, n_texts = image_features.shape[0], text_features.shape[0]
    if image_features.shape[1] != text_features.shape[1]:
        raise ValueError(
            f"image features have dimension {image_features.shape[1]} but text features have "
            f"{text_features.shape[1]}"
        )
    if n_images == 0 or n_texts == 0:
        raise ValueError(f"retrieval needs images and captions, got {n_images} and {n_texts}")
    if text_to_image.ndim != 1 or text_to_image.shape[0] != n_texts:
        raise ValueError(
            f"text_to_image must hold one image index per caption ({n_texts}), "
            f"got shape {tuple(text_to_image.shape)}"
        )
    if text_to_image.dtype.is_floating_point or text_to_image.dtype == torch.bool:
        raise ValueError(f"text_to_image must be integer indices, got {text_to_image.dtype}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    text_to_image = text_to_image.to(device=device, dtype=torch.long)
    low, high = int(text_to_image.min()), int(text_to_image.max())
    if low < 0 or high >= n_images:
        raise ValueError(
            f"text_to_image must lie in [0, {n_images}) for {n_images} images, "
            f"found values in [{low}, {high}]"
        )
    captions_per_image = torch.bincount(text_to_image, minlength=n_images)
    uncaptioned = torch.nonzero(captions_per_image == 0).flatten()
    if len(uncaptioned):
        raise ValueError(
            f"{len(uncaptioned)} of {n_images} images have no caption "
            f"(e.g. image indices {uncaptioned[:5].tolist()}); text retrieval recall is "
            "undefined for them: drop them or add their captions"
        )

    images = F.normalize(image_features.to(device=device, dtype=torch.float32), dim=-1)
    texts = F.normalize(text_features.to(device=device, dtype=torch.float32), dim=-1)

    world = world or World()

    def my_chunks(n: int) -> range:
        starts = range(0, n, chunk_size)
        mine = shard(len(starts), world)
        return starts[mine.start:mine.stop]

    image_ranks = [torch.empty(0, dtype=torch.long, device=images.device)]
    for start in my_chunks(n_texts):
        scores = texts[start : start + chunk_size] @ images.T
        image_ranks.append(
            stable_descending_rank(scores, text_to_image[start : start + chunk_size])
        )

    # Captions grouped by image, so each chunk of images finds its captions without an
    # [images x captions] mask.
    captions_by_image = torch.argsort(text_to_image, stable=True)
    offsets = torch.cumsum(captions_per_image, dim=0).tolist()
    offsets.insert(0, 0)
    text_ranks = [torch.empty(0, dtype=torch.long, device=images.device)]
    for start in my_chunks(n_images):
        stop = min(start + chunk_size, n_images)
        scores = images[start:stop] @ texts.T
        captions = captions_by_image[offsets[start] : offsets[stop]]
        rows = text_to_image[captions] - start
        own_scores = scores[rows, captions]
        # An image's best-ranked caption is its highest-scoring one and, among equal scores,
        # the one with the lowest index; that caption's rank is the image's rank.
        best_score = torch.full((stop - start,), float("-inf"), device=scores.device)
        best_score = best_score.scatter_reduce(0, rows, own_scores, reduce="amax")
        tied = own_scores == best_score[rows]
        best_caption = torch.full((stop - start,), n_texts, device=scores.device)
        best_caption = best_caption.scatter_reduce(0, rows[tied], captions[tied], reduce="amin")
        text_ranks.append(stable_descending_rank(scores, best_caption))

    return (gather_rows(torch.cat(image_ranks).cpu(), world),
            gather_rows(torch.cat(text_ranks).cpu(), world))


def retrieval_metrics(
    image_features: Tensor,
    text_features: Tensor,
    text_to_image: Tensor,
    ks: Iterable[int] = (1, 5, 10),
    chunk_size: int = 1024,
    device: torch.device | str = "cpu",
    world: World | None = None,
) -> dict[str, float]:
    """Image and text retrieval recall@k, as reported for CLIP-like models.

    Inputs are as for :func:`retrieval_ranks` (``world``: every rank of a distributed job
    calls it with the same inputs and gets the same metrics). For each ``k`` in ``ks``:

    - ``image_retrieval_recall@k`` (text -> image): fraction of captions whose image is
      among the top ``k`` images;
    - ``text_retrieval_recall@k`` (image -> text): fraction of images with at least one of
      their captions among the top ``k`` captions.

    ``mean_recall`` is the mean of all those values. Ties in similarity are broken by the
    lower index ranking first (see :func:`retrieval_ranks`). The returned
    :class:`~itra_bench.sample_outcomes.Metrics` carry the ranks (``retrieval`` outcomes).
    """
    ks = [int(k) for k in ks]
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    image_ranks, text_ranks = retrieval_ranks(
        image_features, text_features, text_to_image, chunk_size=chunk_size, device=device,
        world=world,
    )
    metrics = {}
    for k in ks:
        metrics[f"image_retrieval_recall@{k}"] = int((image_ranks < k).sum()) / len(image_ranks)
        metrics[f"text_retrieval_recall@{k}"] = int((text_ranks < k).sum()) / len(text_ranks)
    metrics["mean_recall"] = sum(metrics.values()) / len(metrics)
    return Metrics(metrics, SampleOutcomes("retrieval", {
        "image_rank": image_ranks.to(torch.int32), "text_rank": text_ranks.to(torch.int32),
        "caption_image": text_to_image.cpu().to(torch.int32),
        "ks": torch.tensor(ks, dtype=torch.int32)}))
