"""Reading a clip-benchmark webdataset folder's small files, wherever the folder is: a local
path, a URL (``https://``, ``s3://``, ... through :mod:`itra_bench.transport`) or a
``pipe:`` command whose ``{file}`` is replaced by each file's path within the folder.

A remote folder's text files (class names, templates, dataset type, shard counts) are kept
beside the feature cache as they were last read, so that with ``ITRA_BENCH_OFFLINE=1`` a
folder read once can be evaluated again from cached features with no network at all.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from itra_bench import (
    MissingDataError,
    Retry,
    TransportError,
    UserError,
    atomic_write_text,
    expand_path,
    is_pipe,
    is_remote,
    join_location,
    read_location,
)
from itra_bench.paths import DEFAULT_CACHE_DIR

#: The environment variable that keeps remote data offline: what was read before is reused
#: from the cache, and nothing is fetched.
OFFLINE_ENV = "ITRA_BENCH_OFFLINE"
_ABSENT = "\0absent\0"
#: The folder beside the feature cache that keeps what was read of remote folders.
RECORDS = "remote"


def offline_requested() -> bool:
    """Whether ``ITRA_BENCH_OFFLINE`` asks for no network (``1``, ``true``, ``yes``)."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class FolderAccess:
    """How a folder's files are read: ``records`` is where what was read of remote folders
    is kept (beside the feature cache; None: nowhere), ``offline`` forbids the network."""

    records: Path | None = None
    offline: bool = False

    @classmethod
    def default(cls, records: Path | None = None) -> FolderAccess:
        """Records in ``records``; offline as ``ITRA_BENCH_OFFLINE`` says. Offline and
        without ``records`` (before a run knows its --cache-dir), those beside the default
        cache are read."""
        offline = offline_requested()
        if records is None and offline:
            records = Path(expand_path(DEFAULT_CACHE_DIR)) / RECORDS
        return cls(records, offline)

    def memo_path(self, location: str) -> Path | None:
        """Where the text last read from ``location`` is kept (None without records)."""
        if self.records is None:
            return None
        digest = hashlib.sha256(location.encode()).hexdigest()[:32]
        return self.records / "files" / f"{digest}.txt"


def location(root: str | Path, *parts: str) -> str:
    """The location of ``parts`` (a relative path) in the folder ``root``."""
    return join_location(str(root), *parts)


def never_read_offline(what: str, where: str) -> UserError:
    """The error for remote data needed offline that was never read online."""
    return UserError(f"{OFFLINE_ENV} is set, but {what} {where} was never read with this "
                     "--cache-dir: run once without it (online) so that it is kept.")


def read_text(where: str, what: str, access: FolderAccess | None = None,
              optional: bool = False) -> str | None:
    """The UTF-8 text of the file at ``where`` (a path or a location); None when it does not
    exist and ``optional``, else :class:`MissingDataError` naming it."""
    access = access or FolderAccess.default()
    if not is_remote(where):
        path = Path(where)
        if not path.is_file():
            if optional:
                return None
            raise MissingDataError(f"{what} file not found: {path} does not exist.")
        return _decode(path.read_bytes(), where)
    memo = access.memo_path(where)
    if access.offline:
        if memo is None or not memo.is_file():
            raise never_read_offline(what, where)
        text = memo.read_text(encoding="utf-8")
    else:
        try:
            # A pipe: command cannot say "no such file" apart from a failure: for an optional
            # file, one failing try means absent (a retrieval folder taken for classification
            # then fails on its first sample, never silently).
            retry = Retry(attempts=1) if optional and is_pipe(where) else None
            text = _decode(read_location(where, retry, what=what), where)
        except MissingDataError:
            if not optional:
                raise
            text = _ABSENT
        except TransportError:
            if not (optional and is_pipe(where)):
                raise
            text = _ABSENT
        if memo is not None:
            atomic_write_text(memo, text)
    if text == _ABSENT:
        if optional:
            return None
        raise MissingDataError(f"{what} file not found: {where} (as last read online).")
    return text


def _decode(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserError(f"{where}: not UTF-8 text ({exc}); save it as UTF-8.") from None
