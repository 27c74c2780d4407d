"""The shards of a remote webdataset split: checked before any work, identified by what the
server says of them, fetched to a temporary folder only when images must be encoded.

Identity. Each shard's size and version (its ETag, Last-Modified or stored checksum, from a
HEAD request or fsspec's ``info``) make the split's identity, which keys the feature cache:
a shard the server changed is a new identity, so its features are computed again. Where the
server gives no version for some shard (and for ``pipe:`` commands), every shard is read and
the SHA-256 of its bytes stands in.

Record. Once a split is indexed (labels, captions, where each image lies in its shard), the
index is kept beside the feature cache with the shards' sizes, versions and SHA-256s. A later
run whose shards the server describes alike takes the index from the record and reads no
shard unless some image must be encoded; the bytes it then reads must have the recorded
SHA-256 (a server that changed a shard but not its version is caught there). With
``ITRA_BENCH_OFFLINE=1`` the record alone serves: no request is made.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from itra_bench import (
    MissingDataError,
    TransportError,
    UserError,
    atomic_torch_save,
    download_location,
    expand_path,
    is_pipe,
    stat_locations,
)
from itra_bench.tasks.wds.folder_access import (
    FolderAccess,
    location,
    never_read_offline,
    read_text,
)
from itra_bench.tasks.wds.layout import LAYOUT, NSHARDS, shard_count

#: The version of the record's format; a record of another is read again from the server.
RECORD_FORMAT = 1
#: Shards fetched at once.
FETCH_THREADS = 4
#: The environment variable naming a folder where fetched shards are kept between runs (as
#: clip-benchmark's ``cache_dir``), so that evaluating another model fetches nothing again.
SHARD_CACHE_ENV = "ITRA_BENCH_SHARD_CACHE"


def remote_shard_locations(root: str, split: str, access: FolderAccess) -> list[str]:
    """The locations ``0.tar .. <N-1>.tar`` that the split's ``nshards.txt`` announces."""
    where = location(root, split, NSHARDS)
    try:
        text = read_text(where, "shard count", access)
    except MissingDataError:
        raise MissingDataError(f"{where} not found: a webdataset split names its shard count "
                               f"there. Expected layout: {LAYOUT}") from None
    return [location(root, split, f"{i}.tar") for i in range(shard_count(text or "", where))]


def shard_cache() -> Path | None:
    """The folder ``ITRA_BENCH_SHARD_CACHE`` names, where fetched shards are kept between runs
    (None: fetched shards are temporary)."""
    text = os.environ.get(SHARD_CACHE_ENV, "").strip()
    return Path(expand_path(text)) if text else None


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _remove(folder: str, owner: int) -> None:
    # Forked DataLoader workers inherit the finalizer: only the process that made the
    # folder removes it.
    if os.getpid() == owner:
        shutil.rmtree(folder, ignore_errors=True)


class RemoteShards:
    """The shards of ``split`` of the remote folder ``root``; constructing it checks every
    shard (a missing or refused one is an error naming it, before any work)."""

    def __init__(self, root: str, split: str, labels: str, access: FolderAccess) -> None:
        self.root, self.split, self.access = root, split, access
        self.record_path: Path | None = None
        if access.records is not None:
            key = hashlib.sha256(f"{root}\0{split}\0{labels}".encode()).hexdigest()[:32]
            self.record_path = access.records / "splits" / f"{key}.pt"
        self._record = self._load_record()
        self.local: list[Path | None] = []
        self.shas: list[str] | None = None
        self._spool: Path | None = None
        if access.offline:
            if self._record is None:
                raise never_read_offline(f"split {split!r} of", root)
            self.locations: list[str] = list(self._record["locations"])
            self.stats: list[list[Any]] = self._record["stats"]
            self.identity: str | None = self._record["identity"]
            self.local = [None] * len(self.locations)
            return
        self.locations = remote_shard_locations(root, split, access)
        stats = stat_locations(self.locations, what="shard")
        empty = [s.location for s in stats if s.size == 0]
        if empty:
            raise UserError(f"shard {empty[0]} is empty (0 bytes); re-create it on the server, "
                            f"or correct {location(root, split, NSHARDS)}.")
        self.stats = [[s.size, s.version] for s in stats]
        self.local = [None] * len(self.locations)
        versioned = all(size is not None and version for size, version in self.stats)
        self.identity = self._identity(self.stats) if versioned else None

    def _identity(self, parts: list[Any]) -> str:
        text = json.dumps([self.root, self.split, parts])
        return "webdataset:" + hashlib.sha256(text.encode()).hexdigest()[:20]

    def _load_record(self) -> dict[str, Any] | None:
        if self.record_path is None or not self.record_path.is_file():
            return None
        import torch

        try:
            record = torch.load(self.record_path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - a damaged record is read again from the server
            return None
        if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
            return None
        return record

    def recorded_index(self) -> dict[str, Any] | None:
        """The split's index as recorded, if the server still describes every shard as it
        did then (offline: as recorded); None where the shards must be read."""
        record = self._record
        if record is None:
            return None
        if self.access.offline:
            return record["index"]
        if self.identity is not None and record["locations"] == self.locations \
                and record["stats"] == self.stats and record["identity"] == self.identity:
            self.shas = list(record["shas"])
            return record["index"]
        return None

    def fetch(self) -> list[Path]:
        """Every shard as a local file: fetched to a temporary folder (removed when this
        object is), or kept in ``ITRA_BENCH_SHARD_CACHE`` under its location and version (and
        taken from there while the server gives the same version). Each is checked against
        the SHA-256 of the record where the index came from one."""
        if all(p is not None for p in self.local):
            return self.local  # type: ignore[return-value]
        if self.access.offline:
            raise UserError(f"ITRA_BENCH_OFFLINE is set, but the images of split "
                            f"{self.split!r} of {self.root} must be encoded (their features "
                            "are not in the cache for this model and transform); unset it "
                            "so that the shards can be read.")
        todo = [i for i, p in enumerate(self.local) if p is None]
        kept = shard_cache()
        expected = self.shas

        def fetch_one(i: int) -> tuple[Path, str]:
            size, version = self.stats[i]
            if kept is not None and version:
                # Named by location and version: a shard the server changed is a new name.
                name = hashlib.sha256(f"{self.locations[i]}\0{version}".encode()).hexdigest()
                dest = kept / f"{name[:40]}.tar"
                if dest.is_file() and (size is None or dest.stat().st_size == size):
                    sha = _file_sha256(dest)
                    if expected is None or expected[i] == sha:
                        return dest, sha
                    dest.unlink(missing_ok=True)  # damaged on disk since: fetched again
                kept.mkdir(parents=True, exist_ok=True)
            else:
                dest = self._spool_folder() / f"{i}.tar"
            return dest, download_location(self.locations[i], dest, size=size, what="shard")

        threads = 1 if any(is_pipe(x) for x in self.locations) else FETCH_THREADS
        with ThreadPoolExecutor(max_workers=min(threads, len(todo))) as pool:
            fetched = list(pool.map(fetch_one, todo))
        shas = [sha for _, sha in fetched]
        for i, (path, sha) in zip(todo, fetched, strict=True):
            if expected is not None and expected[i] != sha:
                self.drop_record()
                raise TransportError(
                    f"shard {self.locations[i]} is not what it was when the split was "
                    "indexed, though the server still describes it alike (same size and "
                    f"version: {self.stats[i][1]}); the record is removed: run again to read "
                    "the split anew.")
            self.local[i] = path
        if expected is None:
            self.shas = [""] * len(self.locations)
            for i, sha in zip(todo, shas, strict=True):
                self.shas[i] = sha
        if self.identity is None:
            self.identity = self._identity(self.shas)
        return self.local  # type: ignore[return-value]

    def _spool_folder(self) -> Path:
        """The temporary folder of this split's fetched shards (removed with this object)."""
        if self._spool is None:
            self._spool = Path(tempfile.mkdtemp(prefix="itra-bench-shards-"))
            weakref.finalize(self, _remove, str(self._spool), os.getpid())
        return self._spool

    def save_record(self, index: dict[str, Any]) -> None:
        """Keep the split's index (and the shards' descriptions) for later runs."""
        if self.record_path is None or self.shas is None or self.identity is None:
            return
        atomic_torch_save({"format": RECORD_FORMAT, "root": self.root, "split": self.split,
                           "locations": self.locations, "stats": self.stats,
                           "shas": self.shas, "identity": self.identity, "index": index},
                          self.record_path)

    def drop_record(self) -> None:
        """Forget the record (its shards changed under it)."""
        if self.record_path is not None:
            self.record_path.unlink(missing_ok=True)
        self._record = None
