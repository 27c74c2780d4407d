"""An on-disk store of passage embeddings: float16 rows written batch by batch, resumable.

A store is a folder:

- ``embeddings.npy``: float16 ``[N, D]``, L2-normalised rows (a standard ``.npy``:
  ``numpy.load(path, mmap_mode="r")`` opens it);
- ``pids.npy``: int64 ``[N]``, the passage id of each row;
- ``source_rows.npy`` (optional): int64 ``[N]``, each row's record number in the source
  collection, when the store holds a subset of it;
- ``meta.json``: the store's key, size, dimension, how many rows are written and whether it
  is complete. It is rewritten (atomically) only after the rows it counts are on disk, so an
  interrupted encoding resumes from the last checkpoint.

Rows are written and read with plain file I/O at computed offsets rather than through a
memory map: pages of a written or scanned map count toward the process's resident memory until
the kernel drops them, which would make peak memory grow with the collection
(benchmarks/README.md measures it).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

from itra_bench.atomic_io import atomic_write_json

FORMAT_VERSION = 1
_COPY_ROWS = 1 << 20


def _npy_data_offset(path: Path) -> int:
    """Byte offset of the array data in a ``.npy`` file."""
    with path.open("rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            np.lib.format.read_array_header_1_0(f)
        else:
            np.lib.format.read_array_header_2_0(f)
        return f.tell()


def _save_chunked(path: Path, values: np.ndarray) -> None:
    """Write a 1-D int64 array (possibly a memory map) as ``.npy`` without copying it whole."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.int64, shape=(len(values),))
    for start in range(0, len(values), _COPY_ROWS):
        out[start:start + _COPY_ROWS] = values[start:start + _COPY_ROWS]
    out.flush()
    del out


class PassageStore:
    """The store in folder ``root`` for ``key`` (a hex digest of everything that determines
    the embeddings: model fingerprint, collection identity, subset, precision).

    A folder holding another key's files (the collection or the model changed) is cleared.
    Write with :meth:`start`, :meth:`append` per batch and :meth:`finish`; read with
    :meth:`read_block`, :meth:`read_rows` and :meth:`pids`.
    """

    def __init__(self, root: str | Path, key: str, info: Mapping[str, Any] | None = None,
                 checkpoint_seconds: float = 30.0) -> None:
        self.root = Path(root)
        self.key = key
        self.info = dict(info or {})
        self.checkpoint_seconds = checkpoint_seconds
        self.embeddings_path = self.root / "embeddings.npy"
        self.pids_path = self.root / "pids.npy"
        self.source_rows_path = self.root / "source_rows.npy"
        self.meta_path = self.root / "meta.json"
        self._handle: IO[bytes] | None = None
        self._offset = 0
        self._last_checkpoint = time.monotonic()
        self._pids: np.ndarray | None = None
        self.meta: dict[str, Any] | None = self._load_meta()

    def _load_meta(self) -> dict[str, Any] | None:
        import json

        try:
            meta = json.loads(self.meta_path.read_text())
        except (OSError, ValueError):
            meta = None
        if meta is not None and (meta.get("key") != self.key
                                 or meta.get("version") != FORMAT_VERSION):
            meta = None
        if meta is None and self.root.exists():
            shutil.rmtree(self.root)
        return meta

    # -- state ---------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        """Whether :meth:`start` has run (the passage ids are written)."""
        return self.meta is not None

    @property
    def complete(self) -> bool:
        """Whether every row is written."""
        return bool(self.meta and self.meta["complete"])

    @property
    def rows_done(self) -> int:
        """Rows written as of the last checkpoint (or since, in this process)."""
        return int(self.meta["rows_done"]) if self.meta else 0

    @property
    def num_passages(self) -> int:
        """Rows of the store (N)."""
        return int(self.meta["num_passages"]) if self.meta else 0

    @property
    def dim(self) -> int:
        """Embedding dimension (D; 0 before the first batch)."""
        return int(self.meta["dim"] or 0) if self.meta else 0

    def source_rows(self) -> np.ndarray | None:
        """Each row's record number in the source collection, or None for all of it."""
        if self.meta and self.meta["subset"]:
            return np.load(self.source_rows_path, mmap_mode="r")
        return None

    # -- writing -------------------------------------------------------------------------

    def start(self, pids: np.ndarray, source_rows: np.ndarray | None = None,
              **extra: Any) -> None:
        """Begin a store of ``len(pids)`` rows; ``source_rows`` when it is a subset.
        ``extra`` (JSON-able) is kept in the metadata (:attr:`meta`)."""
        self.root.mkdir(parents=True, exist_ok=True)
        for stale in (self.embeddings_path, self.source_rows_path):
            stale.unlink(missing_ok=True)
        _save_chunked(self.pids_path, pids)
        if source_rows is not None:
            _save_chunked(self.source_rows_path, source_rows)
        self.meta = {"key": self.key, "version": FORMAT_VERSION, **self.info, **extra,
                     "num_passages": len(pids), "dim": None, "subset": source_rows is not None,
                     "rows_done": 0, "complete": False}
        atomic_write_json(self.meta_path, self.meta)

    def _open_for_writing(self, dim: int) -> None:
        assert self.meta is not None
        if self.meta["dim"] is None:
            np.lib.format.open_memmap(self.embeddings_path, mode="w+", dtype=np.float16,
                                      shape=(self.num_passages, dim))
            self.meta["dim"] = dim
        elif self.meta["dim"] != dim:
            raise ValueError(f"the model returned {dim}-d embeddings but this store holds "
                             f"{self.meta['dim']}-d ones")
        self._offset = _npy_data_offset(self.embeddings_path)
        self._handle = self.embeddings_path.open("r+b")

    def append(self, vectors: np.ndarray) -> None:
        """Write the next rows (cast to float16); checkpoints every ``checkpoint_seconds``."""
        if self.meta is None:
            raise RuntimeError("PassageStore.start must run before append")
        if vectors.ndim != 2:
            raise ValueError(f"vectors must be [count, dim], got shape {vectors.shape}")
        if self._handle is None:
            self._open_for_writing(vectors.shape[1])
        assert self._handle is not None
        done = self.meta["rows_done"]
        if done + len(vectors) > self.num_passages:
            raise ValueError(f"store of {self.num_passages} rows overflows")
        self._handle.seek(self._offset + done * self.dim * 2)
        self._handle.write(np.ascontiguousarray(vectors, dtype=np.float16).tobytes())
        self.meta["rows_done"] = done + len(vectors)
        if time.monotonic() - self._last_checkpoint > self.checkpoint_seconds:
            self.checkpoint()

    def checkpoint(self) -> None:
        """Make the rows written so far durable and record their count."""
        if self._handle is not None:
            self._handle.flush()
            os.fsync(self._handle.fileno())
        if self.meta is not None:
            atomic_write_json(self.meta_path, self.meta)
        self._last_checkpoint = time.monotonic()

    def close(self) -> None:
        """Checkpoint and release the file (also after an interrupted encoding)."""
        if self._handle is not None:
            self.checkpoint()
            self._handle.close()
            self._handle = None

    def finish(self) -> None:
        """Mark the store complete; every row must be written."""
        assert self.meta is not None
        if self.rows_done != self.num_passages:
            raise ValueError(f"only {self.rows_done} of {self.num_passages} rows were written")
        self.meta["complete"] = True
        if self._handle is None:
            atomic_write_json(self.meta_path, self.meta)
        self.close()

    def remove(self) -> None:
        """Delete the store's folder."""
        self.close()
        self._pids = None
        shutil.rmtree(self.root, ignore_errors=True)
        self.meta = None

    # -- reading -------------------------------------------------------------------------

    def read_block(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as a new float32 array (read from the file, not mapped)."""
        if not self.complete:
            raise RuntimeError(f"passage store {self.root} is incomplete")
        if not self._offset:
            self._offset = _npy_data_offset(self.embeddings_path)
        count = max(0, min(stop, self.num_passages) - start)
        block = np.fromfile(self.embeddings_path, dtype=np.float16, count=count * self.dim,
                            offset=self._offset + start * self.dim * 2)
        return block.reshape(count, self.dim).astype(np.float32)

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        """The given rows as a new float32 array."""
        mapped = np.load(self.embeddings_path, mmap_mode="r")
        out = np.asarray(mapped[np.asarray(rows)], dtype=np.float32)
        del mapped
        return out

    def pids(self, rows: np.ndarray) -> np.ndarray:
        """Passage ids of the given rows."""
        if self._pids is None:
            self._pids = np.load(self.pids_path, mmap_mode="r")
        return np.asarray(self._pids[rows])
