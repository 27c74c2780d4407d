"""Reading data files where users keep them: local paths, URLs and ``pipe:`` commands, each
read with a bounded number of retries.

A *location* is a string:

- a local path (``shards/00001.tar``);
- an ``http://`` or ``https://`` URL, read with fsspec's HTTP filesystem (aiohttp);
- any other URL fsspec reads: ``s3://`` (with s3fs installed), ``gs://`` (gcsfs),
  ``file://``, ...;
- ``pipe:COMMAND``: the standard output of a shell command, read with webdataset's ``gopen``
  (open_clip's ``pipe:aws s3 cp s3://bucket/00001.tar -``).

A dropped connection, a timeout, a 5xx or 429 answer and a pipe that exits with an error
are *transient*: the read is tried again after a pause that doubles each time, up to
``Retry.attempts`` tries in all; a read that fails part-way starts again where it stopped
(the bytes already read are skipped, so any server works). A 404 (or a missing file) and a
401/403 are *permanent*: one error at once. Either way the error names the location.

``ITRA_BENCH_NET_ATTEMPTS``, ``ITRA_BENCH_NET_BACKOFF`` (seconds before the second try) and
``ITRA_BENCH_NET_TIMEOUT`` (seconds without data before a connection counts as dropped)
change the defaults of :class:`Retry` for every process of a run, DataLoader workers
included.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from itra_bench.errors import MissingDataError, UserError

#: The prefix of a location read from a shell command's standard output.
PIPE = "pipe:"
#: Exit statuses of a ``pipe:`` command that no retry can mend (the shell's "not
#: executable" and "command not found").
_FATAL_PIPE_STATUSES = (126, 127)
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_EXIT = re.compile(r"exit (-?\d+)")
_ENV = {"attempts": "ITRA_BENCH_NET_ATTEMPTS", "backoff": "ITRA_BENCH_NET_BACKOFF",
        "timeout": "ITRA_BENCH_NET_TIMEOUT"}
_COPY_BLOCK = 1 << 20
#: Bytes read past a failure after which the next failure gets every try again.
_PROGRESS = 1 << 20


def is_remote(location: str) -> bool:
    """Whether ``location`` is a URL or a ``pipe:`` command rather than a local path."""
    return location.startswith(PIPE) or bool(_URL.match(location))


def is_pipe(location: str) -> bool:
    """Whether ``location`` is a ``pipe:`` command."""
    return location.startswith(PIPE)


def _is_http(location: str) -> bool:
    return location.startswith(("http://", "https://"))


@dataclass(frozen=True)
class Retry:
    """How often, and how patiently, a location is read before the read is given up.

    ``attempts`` counts every try, the first included; ``backoff`` is the pause in seconds
    before the second, doubled before each later one up to ``max_backoff``; ``timeout`` is
    how many seconds a connection may stay silent before it counts as dropped.
    """

    attempts: int = 5
    backoff: float = 1.0
    max_backoff: float = 30.0
    timeout: float = 60.0

    @classmethod
    def from_env(cls) -> Retry:
        """The defaults, changed by ``ITRA_BENCH_NET_ATTEMPTS``, ``ITRA_BENCH_NET_BACKOFF``
        and ``ITRA_BENCH_NET_TIMEOUT`` where they are set."""
        values: dict[str, Any] = {}
        for field, var in _ENV.items():
            text = os.environ.get(var, "").strip()
            if not text:
                continue
            try:
                value = int(text) if field == "attempts" else float(text)
            except ValueError:
                value = -1
            if value <= 0 if field != "backoff" else value < 0:
                raise UserError(f"environment variable {var}={text!r}: expected a "
                                f"{'positive integer' if field == 'attempts' else 'number'}"
                                f"{' of seconds' if field != 'attempts' else ''}"
                                f"{', 0 or more' if field == 'backoff' else ', above 0'}.")
            values[field] = value
        return replace(cls(), **values)

    def pauses(self) -> Iterator[float]:
        """The pauses before the second and later tries (with jitter, so that many readers
        that failed together do not come back together)."""
        pause = self.backoff
        for _ in range(self.attempts - 1):
            yield min(pause, self.max_backoff) * (0.5 + random.random() / 2)
            pause *= 2


class TransportError(UserError):
    """A location that could not be read: not found, refused, or failing after every
    retry. The message names the location and what went wrong."""


class _ShortRead(OSError):
    """The stream ended before the size the server announced."""


@dataclass(frozen=True)
class LocationStat:
    """What the place that holds a file says about it, without reading it: its ``size`` in
    bytes (None where not told) and its ``version`` (an ETag, a modification time, a stored
    checksum; None where not told, as for ``pipe:`` commands)."""

    location: str
    size: int | None
    version: str | None


def _statuses(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo.extend(x for x in (e.__cause__, e.__context__) if x is not None)


def classify(exc: BaseException) -> tuple[str, str]:
    """``(kind, reason)`` of a failed read: kind ``missing`` (404, no such file),
    ``forbidden`` (401, 403), ``transient`` (worth another try) or ``fatal``."""
    chain = list(_statuses(exc))
    for e in chain:
        status = getattr(e, "status", None)
        if isinstance(status, int) and type(e).__name__ == "ClientResponseError":
            reason = f"HTTP {status} {getattr(e, 'message', '')}".strip()
            if status in (404, 410):
                return "missing", reason
            if status in (401, 403):
                return "forbidden", reason
            if status in (408, 425, 429) or status >= 500:
                return "transient", reason
            return "fatal", reason
    for e in chain:
        if isinstance(e, _ShortRead):
            return "transient", str(e)
        if isinstance(e, ImportError):
            return "fatal", f"{e} (install the package fsspec names for this protocol)"
        if type(e).__module__.startswith("aiohttp") or isinstance(
                e, (TimeoutError, ConnectionError)):
            return "transient", f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    for e in chain:
        if isinstance(e, FileNotFoundError):
            return "missing", "not found"
        if isinstance(e, PermissionError):
            return "forbidden", f"permission denied ({e})"
    first = chain[0]
    text = f"{type(first).__name__}: {first}"
    exit_status = _EXIT.search(str(first))
    if exit_status:
        status = int(exit_status.group(1))
        return ("fatal" if status in _FATAL_PIPE_STATUSES else "transient"), \
            f"the command ended with exit status {status}"
    if isinstance(first, OSError):
        return "transient", text
    return "fatal", text


def _give_up(location: str, what: str, kind: str, reason: str, tries: int) -> TransportError:
    if kind == "missing":
        return _Missing(f"{what} not found: {location} ({reason}). Check the URL or path "
                        "(and the file count that names it).")
    if kind == "forbidden":
        return TransportError(f"{what} {location}: access refused ({reason}); check the "
                              "URL and your credentials.")
    if kind == "fatal":
        return TransportError(f"{what} {location} cannot be read: {reason}.")
    return TransportError(
        f"{what} {location} could not be read after {tries} tries (the last: {reason}). "
        f"Try again later, or raise "
        f"{_ENV['attempts']} / {_ENV['timeout']}. Finished work is kept: the run resumes.")


class _Missing(TransportError, MissingDataError):
    """A location that does not exist (404, no such file)."""


class _Tries:
    """The tries of one read of ``location``: after a failure, the pause before the next,
    or the error that ends the read."""

    def __init__(self, location: str, what: str, retry: Retry) -> None:
        self.location, self.what, self.retry = location, what, retry
        self.restart()

    def restart(self) -> None:
        """Every try again (the read works again after a failure)."""
        self.count, self._pauses = 1, self.retry.pauses()

    def failed(self, exc: Exception) -> None:
        """Sleep before the next try after ``exc``, or raise the error that ends the read
        (``exc`` is permanent, or the tries are spent)."""
        kind, reason = classify(exc)
        pause = next(self._pauses, None) if kind == "transient" else None
        if pause is None:
            raise _give_up(self.location, self.what, kind, reason, self.count) from exc
        print(f"itra-bench: {self.what} {self.location}: {reason}; trying again in "
              f"{pause:.1f} s (try {self.count + 1} of {self.retry.attempts})",
              file=sys.stderr, flush=True)
        time.sleep(pause)
        self.count += 1


def _with_retries(location: str, what: str, retry: Retry, action: Callable[[], Any]) -> Any:
    """``action()``, tried again after transient failures as ``retry`` allows."""
    tries = _Tries(location, what, retry)
    while True:
        try:
            return action()
        except TransportError:
            raise
        except Exception as exc:  # noqa: BLE001 - classified: what no try mends is raised
            tries.failed(exc)


def _filesystem(location: str, retry: Retry) -> tuple[Any, str]:
    """fsspec's filesystem for ``location`` and the path within it (fetched per call:
    fsspec caches instances per process, and a forked DataLoader worker needs its own)."""
    import fsspec

    if _is_http(location):
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=None, sock_connect=retry.timeout,
                                        sock_read=retry.timeout)
        return fsspec.filesystem("http", client_kwargs={"timeout": timeout}), location
    try:
        fs, path = fsspec.core.url_to_fs(location)
    except ImportError as exc:
        raise TransportError(f"{location}: {exc}") from None
    except ValueError as exc:
        raise TransportError(f"{location}: {exc} (fsspec knows no such protocol)") from None
    return fs, path


_VERSION_KEYS = ("ETag", "etag", "md5Hash", "Content-MD5", "Digest", "LastModified",
                 "last_modified", "Last-Modified", "updated", "mtime", "created")


def stat_location(location: str, retry: Retry | None = None, what: str = "file") -> LocationStat:
    """The size and version of ``location`` (a HEAD request for HTTP), checking that it
    exists and may be read; a ``pipe:`` command is not run (size and version None)."""
    retry = retry or Retry.from_env()
    if is_pipe(location):
        return LocationStat(location, None, None)
    if not is_remote(location):
        try:
            st = os.stat(location)
        except FileNotFoundError:
            raise _give_up(location, what, "missing", "no such file", 1) from None
        return LocationStat(location, st.st_size, f"mtime:{st.st_mtime_ns}")

    def info() -> dict[str, Any]:
        fs, path = _filesystem(location, retry)
        return fs.info(path)

    details = _with_retries(location, what, retry, info)
    size = details.get("size")
    versions = [f"{k}={details[k]}" for k in _VERSION_KEYS if details.get(k)]
    return LocationStat(location, int(size) if size is not None else None,
                        ";".join(versions) or None)


def stat_locations(locations: Iterable[str], retry: Retry | None = None, what: str = "file",
             workers: int = 16) -> list[LocationStat]:
    """:func:`stat_location` of every location, ``workers`` at a time; the first failure in the
    order given is raised."""
    retry = retry or Retry.from_env()
    locations = list(locations)
    if len(locations) <= 1 or all(not is_remote(x) or is_pipe(x) for x in locations):
        return [stat_location(x, retry, what) for x in locations]
    with ThreadPoolExecutor(max_workers=min(workers, len(locations))) as pool:
        futures = [pool.submit(stat_location, x, retry, what) for x in locations]
        return [f.result() for f in futures]


class RemoteStream(io.RawIOBase):
    """A readable stream of a location that survives transient failures: a read that fails
    is tried again, from where it stopped, as ``retry`` allows.

    ``read(n)`` returns exactly ``n`` bytes unless the data ends first. A stream that ends
    before ``size`` (given, or announced by the server) is a failed read too, so a shard cut
    short in transit is read again, never taken as shorter.
    """

    def __init__(self, location: str, retry: Retry | None = None, size: int | None = None,
                 what: str = "file") -> None:
        super().__init__()
        self.location, self.what = location, what
        self.retry = retry or Retry.from_env()
        self.size = size
        self.position = 0
        self._stream: Any = None
        self._ended = False
        self._tries = _Tries(location, what, self.retry)
        self._failed_at = 0

    def readable(self) -> bool:
        return True

    def _open(self) -> None:
        location = self.location
        if is_pipe(location):
            from webdataset.gopen import gopen

            stream = gopen(location, "rb")
        elif not is_remote(location):
            stream = open(location, "rb")  # noqa: SIM115 - closed by close()
        else:
            fs, path = _filesystem(location, self.retry)
            # block_size=0: one streaming GET, rather than a range request per block.
            if _is_http(location):
                # A known size spares fsspec's HEAD request before the GET.
                sized = {"size": self.size} if self.size else {}
                stream = fs.open(path, "rb", block_size=0, **sized)
            else:
                stream = fs.open(path, "rb")
            if self.size is None:
                length = getattr(getattr(stream, "r", None), "headers", {}).get(
                    "Content-Length")
                if length is not None and length.isdigit():
                    self.size = int(length)
        self._stream = stream
        skip = self.position
        while skip:
            got = stream.read(min(skip, _COPY_BLOCK))
            if not got:
                raise _ShortRead(f"the data ended at byte {self.position - skip} when read "
                                 f"again, before byte {self.position} reached earlier")
            skip -= len(got)

    def _drop(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.close()
            except Exception:  # noqa: BLE001 - the stream failed already; its close may too
                pass

    def _read_some(self, n: int) -> bytes:
        if self._ended:
            return b""
        if self._stream is None:
            self._open()
        data = self._stream.read(n)
        if not data and self.size is not None and self.position < self.size:
            raise _ShortRead(f"the connection ended after {self.position:,} of "
                             f"{self.size:,} bytes")
        if not data and is_pipe(self.location):
            self._stream.close()  # a pipe's exit status is checked here: it may have failed
        if not data:
            self._ended = True
        return data

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (all the rest with -1), fewer only at the end of the data."""
        parts = []
        want = n
        while want != 0:
            try:
                data = self._read_some(_COPY_BLOCK if want < 0 else want)
            except Exception as exc:  # noqa: BLE001 - classified: what no try mends is raised
                self._drop()
                self._failed_at = self.position
                self._tries.failed(exc)
                continue
            if not data:
                break
            parts.append(data)
            self.position += len(data)
            if self._tries.count > 1 and self.position - self._failed_at >= _PROGRESS:
                # Well past the last failure: the connection works again, and a later failure
                # gets the whole number of tries (a read that keeps progressing ends).
                self._tries.restart()
            if want > 0:
                want -= len(data)
        return b"".join(parts)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        self._drop()
        super().close()


def read_location(location: str, retry: Retry | None = None, what: str = "file") -> bytes:
    """The whole content of ``location`` (for small files: a class list, a shard count)."""
    with RemoteStream(location, retry, what=what) as stream:
        return stream.read()


def download_location(location: str, dest: Path, retry: Retry | None = None,
                      size: int | None = None, what: str = "file") -> str:
    """Copy ``location`` to the local file ``dest`` (written whole or not at all) and return
    the SHA-256 of its bytes."""
    dest = Path(dest)
    temp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    digest = hashlib.sha256()
    try:
        with RemoteStream(location, retry, size, what) as stream, temp.open("wb") as out:
            while True:
                block = stream.read(_COPY_BLOCK)
                if not block:
                    break
                digest.update(block)
                out.write(block)
        os.replace(temp, dest)
    finally:
        temp.unlink(missing_ok=True)
    return digest.hexdigest()


def join_location(base: str, *parts: str) -> str:
    """``base`` and the relative path ``parts`` joined as the kind of location asks: with
    ``/`` for a URL, with the path separator for a local folder; a ``pipe:`` command gets the
    relative path in place of its ``{file}`` placeholder."""
    relative = "/".join(p.strip("/") for p in parts if p)
    if is_pipe(base):
        return base.replace("{file}", relative)
    if is_remote(base):
        return base.rstrip("/") + "/" + relative
    return str(Path(base, *parts))
