"""Atomic file writes: a reader never sees a half-written result, cache entry or checkpoint;
and the removal of the temp files that writers killed half-way left behind.

A write goes to a temp file ``.NAME.XXXXXXXX.tmp`` beside its target, renamed over it once
complete. Its writer holds an exclusive ``flock`` on the temp file from its creation (a sweep
in the instant before is detected, and the writer takes a new file) until the rename. The
kernel releases that lock when the writer dies, however it dies (SIGKILL, a lost node's
processes), so a sweeper that can take the lock knows the writer is gone, whatever the file's
age and on whichever host it ran (where the file system shares ``flock``s). Two runs may share
an output folder or a feature cache: the lock, not the file's age (a slow write looks stale) or
a pid in its name (meaningless on another host, and reused), keeps a live writer's temp file
from a concurrent run's sweep.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import fnmatch
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from itra_bench.errors import UserError

#: The names of atomic writes' temp files.
TEMP_PATTERN = ".*.tmp"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _same_file(fd: int, path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        named, held = os.stat(path, follow_symlinks=False), os.fstat(fd)
    except FileNotFoundError:
        return False
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


def _try_lock(fd: int, blocking: bool) -> bool | None:
    """Take the exclusive ``flock`` of ``fd``: True when taken, False when another open file
    holds it, None where the file system has no ``flock``."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        return None
    return True


def _locked_temp(path: Path) -> tuple[int, str]:
    """A new temp file beside ``path``, open, and locked for as long as it stays open."""
    while True:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        # Between mkstemp and the lock a sweeper may take the file for a dead writer's (it
        # sweeps only what it locked, and unlinks before unlocking): once locked, the file
        # still under its name is this writer's for good; a swept one is replaced.
        if _try_lock(fd, blocking=True) is None or _same_file(fd, tmp):
            # Without flock (some network file systems) sweepers cannot lock it either, and
            # keep it: a dead writer's file then stays, a live one is never lost.
            return fd, tmp
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> Path:
    """Write ``path`` through ``write(fileobj)`` into a temp file beside it, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _locked_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            # mkstemp creates the file 0600; give it the permissions a plain open() would.
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            write(f)
            f.flush()
            os.fsync(f.fileno())
            # Renamed while still open, so locked: a sweeper never takes a finished temp file.
            os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def remove_stale_temp_files(folder: str | os.PathLike[str], depth: int = 0,
                            pattern: str = TEMP_PATTERN) -> list[Path]:
    """Delete the temp files (names matching ``pattern``) in ``folder``, and in its subfolders
    down to ``depth`` levels, whose writer is gone; a live writer's are kept. Returns those
    deleted. Only names are listed, nothing is read, so a large cache costs one listing of
    each folder."""
    removed: list[Path] = []
    try:
        with os.scandir(folder) as listing:
            entries = list(listing)
    except OSError:
        return removed  # absent or unreadable: nothing of this run's to remove
    for entry in entries:
        with contextlib.suppress(OSError):  # gone meanwhile
            if depth and entry.is_dir(follow_symlinks=False):
                removed += remove_stale_temp_files(entry.path, depth - 1, pattern)
            elif fnmatch.fnmatchcase(entry.name, pattern) and \
                    entry.is_file(follow_symlinks=False) and _remove_if_unlocked(entry.path):
                removed.append(Path(entry.path))
    return removed


def _remove_if_unlocked(path: str) -> bool:
    """Unlink ``path`` if no live process holds its lock; whether it did."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False  # renamed by its writer meanwhile, or not this user's to open
    try:
        # Checked again once locked: the name may have been renamed away (and made anew)
        # since it was opened; only the file actually locked is removed.
        if _try_lock(fd, blocking=False) and _same_file(fd, path):
            os.unlink(path)  # before the lock is released: see _locked_temp
            return True
        return False
    finally:
        os.close(fd)


@contextlib.contextmanager
def writing_into(folder: str | os.PathLike[str], flag: str,
                 how: str | None = None) -> Iterator[None]:
    """Report an ``OSError`` raised inside the block (a read-only folder, a full disk, a path
    under a file) as one user error naming ``flag`` (what chose the folder) and ``folder``;
    ``how`` says how to choose another (default: with ``flag``)."""
    try:
        yield
    except OSError as exc:
        how = how or f"Choose a writable folder with {flag}"
        raise UserError(f"{flag} {folder}: cannot write there ({exc.strerror or exc}). {how}, "
                        "or free space on its disk; what was written before is kept.") from exc


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Atomically write a UTF-8 text file."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


class _WriteRecorder:
    """A binary file's ``write`` and ``flush``, remembering the ``OSError`` a write raised."""

    def __init__(self, file: IO[bytes]) -> None:
        self.file = file
        self.failure: OSError | None = None

    def write(self, data: bytes) -> int:
        """Write ``data`` to the file."""
        try:
            return self.file.write(data)
        except OSError as exc:
            self.failure = exc
            raise

    def flush(self) -> None:
        """Flush the file."""
        try:
            self.file.flush()
        except OSError as exc:
            self.failure = exc
            raise


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """Atomically ``torch.save`` an object. A failed write (a full disk, a file size limit)
    raises ``OSError``, as every other atomic write does."""
    import torch

    def save(f: IO[bytes]) -> None:
        recorder = _WriteRecorder(f)
        try:
            torch.save(obj, recorder)
        except RuntimeError as exc:
            # torch's zip writer reports its file's failed write as a RuntimeError
            # ("[enforce fail at inline_container.cc] unexpected pos"); only that one is the
            # disk's fault, any other (an object it cannot save) stays what it is.
            if recorder.failure is None:
                raise
            raise recorder.failure from exc

    return atomic_write(path, save)
