"""Encode images and texts with a model: batched, on the run's device, cached on disk."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from itra_bench.context import RunContext
from itra_bench.datasets.image_source import ImageSource, load_rgb
from itra_bench.errors import CorruptImageError, UserError
from itra_bench.feature_cache import cache_key
from itra_bench.model import EncoderModel
from itra_bench.threads import torch_threads


@dataclass
class EncodedImages:
    """Features of the images that decoded; ``indices`` maps rows back to the source."""

    features: torch.Tensor
    indices: torch.Tensor
    skipped: list[str] = field(default_factory=list)


class _Decoded(Dataset):
    """Decodes and transforms images, returning errors as data so workers never crash."""

    def __init__(self, source: ImageSource, transform: Any) -> None:
        self.source = source
        self.transform = transform

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | None, int, str | None]:
        try:
            return self.transform(load_rgb(self.source, index)), index, None
        except Exception as exc:  # any decoder error: PIL raises several kinds
            return None, index, f"{type(exc).__name__}: {exc}"


def _collate(items: list[tuple[torch.Tensor | None, int, str | None]]) -> dict[str, Any]:
    ok = [(x, i) for x, i, err in items if err is None]
    return {
        "images": torch.stack([x for x, _ in ok]) if ok else None,
        "indices": torch.tensor([i for _, i in ok], dtype=torch.long),
        "failed": [(i, err) for _, i, err in items if err is not None],
    }


def loader_batches(loader: DataLoader) -> Iterator[dict[str, Any]]:
    """The loader's batches; when it decodes in this process (no workers) decoding runs on
    one intra-op thread, and the caller's work between batches gets all threads back."""
    # Per-image ToTensor/Normalize are too small to gain from several threads, and when a
    # core is busy every parallel region waits for it (benchmarks/README.md measures this).
    # Worker processes already run one thread each.
    if loader.num_workers > 0:
        yield from loader
        return
    batches = iter(loader)
    while True:
        with torch_threads(1):
            batch = next(batches, None)
        if batch is None:
            return
        yield batch


def encode_images(model: EncoderModel, source: ImageSource, ctx: RunContext,
                  split: str = "") -> EncodedImages:
    """Embed every image of ``source`` (float32 on the CPU), reusing the feature cache.

    A corrupt image stops the run with its name, unless ``ctx.skip_corrupt``: then it is
    left out, named in ``skipped`` and counted.
    """
    if model.image_transform is None:
        raise ValueError(f"{model.name} has no image transform")
    if not source.identity:
        raise UserError(
            f"image source {type(source).__module__}.{type(source).__name__} has no "
            "`identity`: the plugin that reads it must set one that changes whenever its images "
            "could (e.g. itra_bench.fingerprint.files_identity(paths, salt=split)); it keys the "
            "feature cache, so without it other data's features would be served.")
    # The source identity already names the split (and changes with its files), so the same
    # images reached through two tasks share one entry; ``split`` only labels the progress bar.
    key = cache_key(kind="images", model=model.fingerprint, dataset=source.identity,
                    transform=repr(model.image_transform), precision=ctx.precision,
                    skip_corrupt=ctx.skip_corrupt)
    if ctx.cache is not None and (hit := ctx.cache.get(key)) is not None:
        return EncodedImages(hit["features"], hit["indices"], _skipped_from(hit, source))

    loader = DataLoader(
        _Decoded(source, model.image_transform),
        batch_size=ctx.batch_size,
        num_workers=ctx.workers,
        pin_memory=ctx.device.type == "cuda",
        collate_fn=_collate,
        prefetch_factor=4 if ctx.workers > 0 else None,
        persistent_workers=False,
    )
    feats: list[torch.Tensor] = []
    kept: list[torch.Tensor] = []
    failed: list[int] = []
    label = f"encode {split or 'images'}"
    with ctx.progress.bar(label, total=len(source), unit="images") as bar, \
            torch.inference_mode(), ctx.autocast():
        for batch in loader_batches(loader):
            for index, err in batch["failed"]:
                if not ctx.skip_corrupt:
                    raise CorruptImageError(
                        f"cannot decode image {source.describe(index)} ({err}). Replace or "
                        "remove the file, or pass --skip-corrupt to skip and count such images."
                    )
                failed.append(index)
            if batch["images"] is not None:
                images = batch["images"].to(ctx.device, non_blocking=True)
                feats.append(model.encode_image(images).float().cpu())
                kept.append(batch["indices"])
            bar.advance(len(batch["indices"]) + len(batch["failed"]))
    features = torch.cat(feats) if feats else torch.empty(0, 0)
    indices = torch.cat(kept) if kept else torch.empty(0, dtype=torch.long)
    if ctx.cache is not None:
        ctx.cache.put(key, {"features": features, "indices": indices,
                            "failed": torch.tensor(failed, dtype=torch.long)},
                      meta={"model": model.name, "dataset": source.identity, "split": split,
                            "num_images": len(source), "num_failed": len(failed)})
    return EncodedImages(features, indices, [source.describe(i) for i in failed])


def _skipped_from(hit: dict[str, torch.Tensor], source: ImageSource) -> list[str]:
    return [source.describe(int(i)) for i in hit.get("failed", torch.empty(0, dtype=torch.long))]


def encode_texts(model: EncoderModel, texts: list[str], ctx: RunContext,
                 description: str = "encode texts") -> torch.Tensor:
    """Embed ``texts`` in batches (float32 on the CPU), reusing the feature cache."""
    digest = hashlib.sha256("\0".join(texts).encode()).hexdigest()
    key = cache_key(kind="texts", model=model.fingerprint, texts=digest, precision=ctx.precision)
    if ctx.cache is not None and (hit := ctx.cache.get(key)) is not None:
        return hit["features"]
    out: list[torch.Tensor] = []
    with ctx.progress.bar(description, total=len(texts), unit="texts") as bar, \
            torch.inference_mode(), ctx.autocast():
        for start in range(0, len(texts), ctx.batch_size):
            chunk = texts[start:start + ctx.batch_size]
            out.append(model.encode_text(chunk).float().cpu())
            bar.advance(len(chunk))
    features = torch.cat(out) if out else torch.empty(0, 0)
    if ctx.cache is not None:
        ctx.cache.put(key, {"features": features},
                      meta={"model": model.name, "num_texts": len(texts), "what": description})
    return features
