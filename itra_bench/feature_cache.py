"""On-disk cache of encoded features, so a second protocol on the same data does not re-encode.

An entry is keyed by everything that determines the features: the model fingerprint, the
dataset's identity (its contents), the split, the image transform and the precision.

While a long split is encoded its features are also written in *chunks*, each covering a fixed
range of source rows (``[k * chunk_rows, (k + 1) * chunk_rows)``), so a run killed in the middle
resumes from the chunks already written. Chunks live beside the entry, in ``<key>.chunks/``; the
entry itself is written only once every row is encoded, so a partial split is never served as a
complete one.

Within one run, entries are also kept in memory (:class:`FeatureMemory`, same keys), so that the
run's tasks share them without a disk cache too.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from itra_bench.atomic_io import (
    atomic_torch_save,
    atomic_write_json,
    remove_stale_temp_files,
)
from itra_bench.errors import UserError
from itra_bench.paths import expand_path

#: Rows per chunk by default: about a minute of encoding for a ViT-B on one GPU, small enough
#: that a killed run loses little, large enough that a split of millions stays a few hundred files.
DEFAULT_CHUNK_ROWS = 8192

#: Bytes of features a run keeps in memory at most (:class:`FeatureMemory`): the splits of a
#: suite's datasets at a ViT-B's 512 dimensions, without crowding a small machine.
DEFAULT_MEMORY_BYTES = 4 * 2**30

_CHUNK_NAME = re.compile(r"(\d{12})-(\d{12})\.pt")


def cache_key(**parts: Any) -> str:
    """A hex key for a set of named identity parts (order-independent)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class FeatureMemory:
    """Features kept in memory for the duration of one run, keyed like the disk cache's
    entries, so that the tasks of a run share them even when nothing is written to disk (the
    demo, ``--no-cache``, ``itra-bench watch``). Each process has its own.

    At most ``max_bytes`` are held: beyond it the least recently used entries are dropped
    (and, without a disk cache, encoded again when asked for)."""

    def __init__(self, max_bytes: int = DEFAULT_MEMORY_BYTES) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()
        #: Bytes the entries hold, kept as they come and go.
        self._bytes = 0

    def get(self, key: str) -> dict[str, torch.Tensor] | None:
        """A private copy of the tensors of ``key`` (as the disk cache's ``get`` returns a
        fresh load: a task may change its features in place), or None."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return {k: v.clone() for k, v in entry.items()}

    def put(self, key: str, tensors: dict[str, torch.Tensor]) -> None:
        """Keep a copy of ``tensors`` for ``key`` (none if they alone exceed the budget)."""
        size = _nbytes(tensors)
        self._drop(key)
        if size > self.max_bytes:
            return
        while self._entries and self._bytes + size > self.max_bytes:
            self._drop(next(iter(self._entries)))  # the least recently used
        with torch.inference_mode(False):
            self._entries[key] = {k: v.detach().cpu().clone() for k, v in tensors.items()}
        self._bytes += size

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= _nbytes(entry)


def _nbytes(tensors: dict[str, torch.Tensor]) -> int:
    return sum(v.numel() * v.element_size() for v in tensors.values())


class FeatureCache:
    """A folder of ``<key>.pt`` files holding dicts of tensors, written atomically, and of the
    chunk folders of entries still being encoded.

    ``chunk_rows``: source rows per chunk (``DEFAULT_CHUNK_ROWS`` when None).
    """

    def __init__(self, root: str | Path, chunk_rows: int | None = None) -> None:
        self.root = Path(expand_path(str(root)))
        self.chunk_rows = DEFAULT_CHUNK_ROWS if chunk_rows is None else int(chunk_rows)
        if self.chunk_rows < 1:
            raise UserError(f"feature cache chunk size {chunk_rows}: give a positive number of "
                            "rows per chunk")

    def path(self, key: str) -> Path:
        """Where the entry for ``key`` lives."""
        return self.root / key[:2] / f"{key}.pt"

    def get(self, key: str) -> dict[str, torch.Tensor] | None:
        """The cached tensors for ``key``, or None when absent or unreadable."""
        return _load(self.path(key))

    def put(self, key: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """Store tensors for ``key``; ``meta`` is kept beside them for humans."""
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        self._write(self.path(key), tensors)
        self._write_meta(self.path(key).with_suffix(".json"), meta)

    # -- chunks of an entry being encoded -------------------------------------------------------

    def chunk_folder(self, key: str) -> Path:
        """The folder holding the chunks of ``key`` for this cache's chunk size."""
        return self.root / key[:2] / f"{key}.chunks" / f"rows-{self.chunk_rows}"

    def chunk_path(self, key: str, start: int, end: int) -> Path:
        """Where the chunk of ``key`` covering source rows ``[start, end)`` lives."""
        return self.chunk_folder(key) / f"{start:012d}-{end:012d}.pt"

    def get_chunks(self, key: str, total: int) -> dict[int, dict[str, torch.Tensor]]:
        """The readable chunks of ``key`` for a source of ``total`` rows, by start row.

        Only chunks on this cache's grid whose stored header (rows, total, chunk size) agrees
        with their file name are returned; anything else (a damaged or truncated file, a chunk
        of another source length) is left out, to be recomputed.
        """
        folder = self.chunk_folder(key)
        if not folder.is_dir():
            return {}
        chunks = {}
        for path in folder.iterdir():
            match = _CHUNK_NAME.fullmatch(path.name)
            if match is None:
                continue  # temp files of an interrupted write, or anything foreign
            start, end = int(match[1]), int(match[2])
            if (start % self.chunk_rows or end != min(start + self.chunk_rows, total)
                    or start >= total):
                continue
            data = _load(path)
            if data is None or _header(data) != (start, end, total, self.chunk_rows):
                continue
            chunks[start] = data
        return chunks

    def put_chunk(self, key: str, start: int, end: int, total: int,
                  tensors: dict[str, torch.Tensor], settings: dict[str, int | str]) -> None:
        """Store the tensors of ``key`` for source rows ``[start, end)`` of ``total``;
        ``settings`` (how they were computed, e.g. the batch size) come back with them in
        ``data["chunk"]["settings"]``."""
        data: dict[str, Any] = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        data["chunk"] = {"start": start, "end": end, "total": total,
                         "chunk_rows": self.chunk_rows, "settings": dict(settings)}
        self._write(self.chunk_path(key, start, end), data)

    def other_chunk_sizes(self, key: str) -> list[int]:
        """Chunk sizes other than this cache's for which chunks of ``key`` exist (not reused:
        their rows would be encoded in other batches than this run's)."""
        parent = self.chunk_folder(key).parent
        if not parent.is_dir():
            return []
        sizes = []
        for folder in parent.iterdir():
            match = re.fullmatch(r"rows-(\d+)", folder.name)
            if match and int(match[1]) != self.chunk_rows and any(folder.glob("*.pt")):
                sizes.append(int(match[1]))
        return sorted(sizes)

    def drop_chunks(self, key: str) -> None:
        """Remove every chunk of ``key`` (once its entry is written they are redundant)."""
        shutil.rmtree(self.chunk_folder(key).parent, ignore_errors=True)

    # -- writing --------------------------------------------------------------------------------

    def remove_stale_temp_files(self) -> list[Path]:
        """Delete the temp files that writes killed half-way left anywhere in the cache (the
        deepest are in ``<ab>/<key>.chunks/rows-N/``); another live run's are kept."""
        return remove_stale_temp_files(self.root, depth=3)

    def _write(self, path: Path, data: Any) -> None:
        try:
            atomic_torch_save(data, path)
        except OSError as exc:
            raise self._write_error(path, exc) from exc

    def _write_meta(self, path: Path, meta: dict[str, Any]) -> None:
        try:
            atomic_write_json(path, meta)
        except OSError as exc:
            raise self._write_error(path, exc) from exc

    def _write_error(self, path: Path, exc: OSError) -> UserError:
        return UserError(f"--cache-dir {self.root}: cannot write {path} "
                         f"({exc.strerror or exc}); results written so far are kept. Free "
                         "space, choose another --cache-dir, or pass --no-cache.")


def _load(path: Path) -> Any:
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        # A damaged entry is recomputed rather than failing the run.
        return None


def _header(data: Any) -> tuple[Any, ...] | None:
    chunk = data.get("chunk") if isinstance(data, dict) else None
    if not isinstance(chunk, dict):
        return None
    return tuple(chunk.get(k) for k in ("start", "end", "total", "chunk_rows"))
