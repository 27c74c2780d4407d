"""Encode images and texts with a model: batched, on the run's device, cached on disk.

Kept one module past 400 lines: both encoders share its cache look-up, memory and sharding.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from rich.markup import escape
from torch.utils.data import DataLoader, Dataset

from itra_bench.context import RunContext
from itra_bench.datasets.image_source import ImageSource, load_rgb
from itra_bench.distributed import (
    World,
    broadcast_from_main,
    gather_objects,
    gather_rows,
    shard,
)
from itra_bench.errors import CorruptImageError, UserError
from itra_bench.feature_cache import DEFAULT_CHUNK_ROWS, cache_key
from itra_bench.model import EncoderModel
from itra_bench.protocols.similarity import unique_texts
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
    transform_id = model.image_transform_id()
    if transform_id is None:
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
                    transform=transform_id, precision=ctx.precision,
                    skip_corrupt=ctx.skip_corrupt)
    world = ctx.world or World()
    hit = _look_up(ctx, key, split or "images")
    if hit is not None:
        if ctx.cache is not None:
            ctx.cache.drop_chunks(key)  # left over when a run stopped between entry and cleanup
        return _some_decoded(EncodedImages(hit["features"], hit["indices"],
                                           _skipped_from(hit, source)), split)

    chunk_rows = ctx.cache.chunk_rows if ctx.cache is not None else DEFAULT_CHUNK_ROWS
    chunk_rows = broadcast_from_main(chunk_rows, world, "agree on the cache's chunk size")
    total = len(source)
    done, batch_size = broadcast_from_main(_resumable_chunks(ctx, key, source, chunk_rows),
                                           world, f"resume {split or 'images'} from its chunks")
    done = _SplitRows(done, total)
    todo = [(s, min(s + chunk_rows, total)) for s in range(0, total, chunk_rows)
            if s not in done]
    resumed = total - sum(end - start for start, end in todo)
    if resumed and todo:
        ctx.console.print(f"{escape(split or 'images')}: resuming the encoding at row "
                          f"{resumed:,} of {total:,} (the chunks of an interrupted run)")
    if todo:
        _encode_chunks(model, source, ctx, key, todo, done, split, resumed, batch_size)
    features, indices = done.rows()
    failed = torch.cat([done[start]["failed"] for start in sorted(done)] or
                       [torch.empty(0, dtype=torch.long)])
    entry = {"features": features, "indices": indices, "failed": failed}
    if ctx.memory is not None:
        ctx.memory.put(key, entry)
    if ctx.cache is not None:
        ctx.cache.put(key, entry, meta={"model": model.name, "dataset": source.identity,
                                        "split": split, "num_images": total,
                                        "num_failed": len(failed)})
        ctx.cache.drop_chunks(key)
    return _some_decoded(EncodedImages(features, indices,
                                       [source.describe(int(i)) for i in failed]), split)


def _some_decoded(encoded: EncodedImages, split: str) -> EncodedImages:
    """``encoded``, refused when --skip-corrupt left out every image: no task can score
    features of no image, and its own error would not say why there are none."""
    if encoded.skipped and not len(encoded.indices):
        raise UserError(
            f"{split or 'images'}: none of the {len(encoded.skipped)} images could be decoded "
            f"(--skip-corrupt skipped them all; the first is {encoded.skipped[0]}). Check that "
            "these are the image files meant (run without --skip-corrupt to see why the first "
            "fails).")
    return encoded


def _look_up(ctx: RunContext, key: str, what: str) -> dict[str, torch.Tensor] | None:
    """The tensors stored for ``key``: this run's in memory, else the feature cache's (kept in
    memory from then on); None when neither has them."""
    # Every rank of a job remembers the same entries at the same points (each ends up with
    # the whole features, and the budget drops the same ones), so they all find an entry in
    # memory, or all miss it, without asking each other.
    if ctx.memory is not None:
        hit = ctx.memory.get(key)
        if hit is not None:
            return hit
    # Under a distributed job only rank 0 has the cache: it decides, the others follow.
    hit = ctx.cache.get(key) if ctx.cache is not None else None
    hit = broadcast_from_main(hit, ctx.world or World(), f"look up {what} in the feature cache")
    if hit is not None and ctx.memory is not None:
        ctx.memory.put(key, hit)
    return hit


def _resumable_chunks(ctx: RunContext, key: str, source: ImageSource,
                      chunk_rows: int) -> tuple[dict[int, dict[str, torch.Tensor]], int]:
    """The chunks of ``key`` an earlier, interrupted run completed, by start row, and the batch
    size to encode the rest with: the one those chunks were encoded with, since a model's
    features may differ in their last bits between batch sizes, and one entry must not mix
    them. A chunk whose rows do not account for exactly its range (every row encoded or
    skipped once) is left out."""
    if ctx.cache is None:
        return {}, ctx.batch_size
    total = len(source)
    found = {}
    for start, data in ctx.cache.get_chunks(key, total).items():
        end = min(start + chunk_rows, total)
        settings = data["chunk"].get("settings")
        if (_chunk_is_whole(data, start, end) and isinstance(settings, dict)
                and isinstance(settings.get("batch_size"), int) and settings["batch_size"] > 0):
            found[start] = data
    batch_size = ctx.batch_size
    if found:
        # Chunks of one entry all have its first run's batch size; should they not (a folder
        # edited by hand), those of the first chunk's are kept and the others recomputed.
        batch_size = found[min(found)]["chunk"]["settings"]["batch_size"]
    chunks = {s: d for s, d in found.items()
              if d["chunk"]["settings"]["batch_size"] == batch_size}
    where = escape(source.identity[:60])
    if batch_size != ctx.batch_size:
        ctx.console.print(
            f"[yellow]note:[/] resuming the encoding of {where} in batches of {batch_size}, "
            f"like its first {sum(len(d['indices']) + len(d['failed']) for d in chunks.values()):,}"
            f" rows (not --batch-size {ctx.batch_size}): one entry's features all come from one "
            "batch size, those of an uninterrupted run. To start it over with the new batch size "
            f"instead, delete {ctx.cache.chunk_folder(key).parent}.")
    others = ctx.cache.other_chunk_sizes(key)
    if others:
        ctx.console.print(
            f"[yellow]note:[/] the feature cache holds chunks of {where} written with "
            f"{', '.join(map(str, others))} rows per chunk; this run uses {chunk_rows}, "
            "so they are not reused (their rows were encoded in other batches).")
    return chunks, batch_size


class _SplitRows(dict):
    """Finished chunks by start row. Each chunk's features and row indices are copied, as it
    arrives, into one tensor sized for the whole split, at the chunk's start row; the dict
    keeps the counts and the failed rows. So the features exist once, not once in the chunks
    and again in their concatenation (twice the features at the peak, measured in
    benchmarks/README.md), and no per-chunk buffer outlives its chunk."""

    def __init__(self, chunks: dict[int, dict[str, torch.Tensor]], total: int) -> None:
        super().__init__()
        self.features: torch.Tensor | None = None
        self.indices = torch.empty(total, dtype=torch.long)
        for start, chunk in chunks.items():
            self[start] = chunk

    def __setitem__(self, start: int, chunk: dict[str, Any]) -> None:
        features = chunk["features"]
        if len(features):
            if self.features is None:
                # A normal tensor even when the first chunk arrives under inference_mode:
                # the caller's code may update the features in place.
                with torch.inference_mode(False):
                    self.features = torch.empty((len(self.indices), *features.shape[1:]),
                                                dtype=features.dtype)
            self.features[start:start + len(features)] = features
            self.indices[start:start + len(features)] = chunk["indices"]
        super().__setitem__(start, {"kept": len(features), "failed": chunk["failed"]})

    def rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Features and indices of the kept rows, in row order (moved down in place over
        the rows of skipped images, if any)."""
        if self.features is None:
            return torch.empty(0, 0), torch.empty(0, dtype=torch.long)
        kept = 0
        for start in sorted(self):
            n = self[start]["kept"]
            if n and start != kept:  # source and target may overlap: copy the source first
                self.features[kept:kept + n] = self.features[start:start + n].clone()
                self.indices[kept:kept + n] = self.indices[start:start + n].clone()
            kept += n
        if kept < len(self.indices):
            # A slice would be saved to the cache with its whole storage: keep its own copy.
            return self.features[:kept].clone(), self.indices[:kept].clone()
        return self.features, self.indices


def _chunk_is_whole(data: dict[str, Any], start: int, end: int) -> bool:
    try:
        features, indices, failed = data["features"], data["indices"], data["failed"]
        if not (isinstance(features, torch.Tensor) and features.dtype == torch.float32
                and indices.dtype == torch.long and failed.dtype == torch.long
                and indices.dim() == failed.dim() == 1 and len(features) == len(indices)
                and (features.dim() == 2 or len(features) == 0)):
            return False
        rows = torch.sort(torch.cat([indices, failed])).values
        return torch.equal(rows, torch.arange(start, end)) and bool(
            (indices[1:] > indices[:-1]).all() and (failed[1:] > failed[:-1]).all())
    except (KeyError, AttributeError, TypeError, RuntimeError):
        return False


class _ChunkBatches:
    """Batches of source rows that never straddle a chunk: every chunk is encoded in the same
    batches whether the run is uninterrupted or resumed, so its features are bit-identical (at
    the same intra-op thread count, as the same command has)."""

    def __init__(self, chunks: list[tuple[int, int]], batch_size: int) -> None:
        self.chunks = chunks
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[list[int]]:
        for start, end in self.chunks:
            for first in range(start, end, self.batch_size):
                yield list(range(first, min(first + self.batch_size, end)))

    def __len__(self) -> int:
        return sum(-(-(end - start) // self.batch_size) for start, end in self.chunks)


def _encode_chunks(model: EncoderModel, source: ImageSource, ctx: RunContext, key: str,
                   todo: list[tuple[int, int]], done: dict[int, dict[str, torch.Tensor]],
                   split: str, resumed: int, batch_size: int) -> None:
    """Encode the source rows of the chunks ``todo`` in batches of ``batch_size``, adding each
    finished chunk to ``done`` (and to the cache's chunk files, so a killed run resumes there).

    Under a distributed job each rank encodes a contiguous share of every chunk's batches, the
    very batches one process would encode, and the chunk is gathered in order on every rank:
    the features equal a one-process run's."""
    world = ctx.world or World()
    plan = []
    for start, end in todo:
        batches = list(_ChunkBatches([(start, end)], batch_size))
        mine = shard(len(batches), world)
        plan.append((start, end, batches[mine.start:mine.stop]))
    # Before the workers start, so that they share what it fetched (duck-typed sources of
    # plugins written before the method existed have none).
    prepare = getattr(source, "prepare", None)
    if prepare is not None:
        prepare()
    # Only the missing rows are decoded: the batch sampler starts at the first of them.
    loader = DataLoader(
        _Decoded(source, model.image_transform),
        batch_sampler=[b for _, _, local in plan for b in local],
        num_workers=ctx.workers,
        pin_memory=ctx.device.type == "cuda",
        collate_fn=_collate,
        prefetch_factor=4 if ctx.workers > 0 else None,
        persistent_workers=False,
    )
    total = len(source)
    resumed_chunks = len(done)
    label = f"encode {split or 'images'}"
    if resumed:
        label += f" (resumed at {resumed:,})"
    batches = loader_batches(loader)
    with ctx.progress.bar(label, total=total, unit="images", completed=resumed) as bar, \
            torch.inference_mode(), ctx.autocast():
        for start, end, local in plan:
            feats: list[torch.Tensor] = []
            kept: list[torch.Tensor] = []
            failed: list[int] = []
            error = None
            for _ in local:
                batch = next(batches)
                for index, err in batch["failed"]:
                    if not ctx.skip_corrupt and error is None:
                        error = (f"cannot decode image {source.describe(index)} ({err}). "
                                 "Replace or remove the file, or pass --skip-corrupt to skip "
                                 "and count such images.")
                    failed.append(index)
                if batch["images"] is not None and error is None:
                    images = batch["images"].to(ctx.device, non_blocking=True)
                    feats.append(model.encode_image(images).float().cpu())
                    kept.append(batch["indices"])
                bar.advance(len(batch["indices"]) + len(batch["failed"]))
                if error is not None and world.size == 1:
                    break
            # Every rank reaches this point for every chunk (possibly with no batch of it), so
            # an error on one rank stops all of them, with its message.
            what = f"encode {split or 'images'} rows {start}-{end}"
            errors = [e for e in gather_objects(error, world, what) if e is not None]
            if errors:
                raise CorruptImageError(errors[0])
            chunk = {"features": torch.cat(feats) if feats else torch.empty(0, 0),
                     "indices": torch.cat(kept) if kept else torch.empty(0, dtype=torch.long),
                     "failed": torch.tensor(failed, dtype=torch.long)}
            if world.size > 1:
                local_rows = sum(len(b) for b in local)
                chunk = {k: gather_rows(v, world, f"gather {what}") for k, v in chunk.items()}
                if not len(chunk["features"]):
                    chunk["features"] = torch.empty(0, 0)
                bar.advance(end - start - local_rows)
            # The last chunk goes straight into the entry the caller writes.
            if ctx.cache is not None and len(done) + 1 < len(todo) + resumed_chunks:
                ctx.cache.put_chunk(key, start, end, total, chunk,
                                    settings={"batch_size": batch_size})
            done[start] = chunk


def _skipped_from(hit: dict[str, torch.Tensor], source: ImageSource) -> list[str]:
    return [source.describe(int(i)) for i in hit.get("failed", torch.empty(0, dtype=torch.long))]


def encode_texts(model: EncoderModel, texts: list[str], ctx: RunContext,
                 description: str = "encode texts") -> torch.Tensor:
    """Embed ``texts`` in batches (float32 on the CPU), reusing the feature cache.

    Each distinct text is encoded once; a repeated one gets the row of its first occurrence.
    For a model with ``dynamic_text_length`` the batches are formed from the texts sorted by
    length (longest first), and the rows are returned in input order.
    Under a distributed job each rank encodes a contiguous share of the batches one process
    would encode, and the features are gathered in order on every rank."""
    distinct, index = unique_texts(texts)
    if len(distinct) < len(texts):
        # COCO repeats captions word for word, and prompt ensembles repeat across classes.
        return encode_texts(model, distinct, ctx, description)[index]
    digest = hashlib.sha256("\0".join(texts).encode()).hexdigest()
    parts = {"kind": "texts", "model": model.fingerprint, "texts": digest,
             "precision": ctx.precision}
    order = None
    if getattr(model, "dynamic_text_length", False) and len(texts) > 1:
        # A batch runs at its longest text, so batches of similar lengths waste no work on
        # padding. Character counts order texts like token counts do, without tokenizing
        # twice. The batches differ from input-order ones, and so may the features' last
        # bits: such entries are kept apart.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        parts["batches"] = "by-length"
    key = cache_key(**parts)
    world = ctx.world or World()
    hit = _look_up(ctx, key, description)
    if hit is not None:
        return hit["features"]
    todo = texts if order is None else [texts[i] for i in order]
    starts = list(range(0, len(todo), ctx.batch_size))
    mine = shard(len(starts), world)
    out: list[torch.Tensor] = []
    with ctx.progress.bar(description, total=len(todo), unit="texts") as bar, \
            torch.inference_mode(), ctx.autocast():
        for start in starts[mine.start:mine.stop]:
            chunk = todo[start:start + ctx.batch_size]
            out.append(model.encode_text(chunk).float().cpu())
            bar.advance(len(chunk))
        features = torch.cat(out) if out else torch.empty(0, 0)
        if world.size > 1:
            local = len(features)
            features = gather_rows(features, world, f"gather {description}")
            bar.advance(len(features) - local)
    if not len(features):
        features = torch.empty(0, 0)
    elif order is not None:
        with torch.inference_mode(False):
            restored = torch.empty_like(features)
        restored[torch.tensor(order)] = features
        features = restored
    if ctx.memory is not None:
        ctx.memory.put(key, {"features": features})
    if ctx.cache is not None:
        ctx.cache.put(key, {"features": features},
                      meta={"model": model.name, "num_texts": len(texts), "what": description})
    return features
