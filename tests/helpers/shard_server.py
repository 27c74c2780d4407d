"""A real HTTP server on 127.0.0.1 that serves a local folder, with fault injection.

Tests of remote WebDataset shards point their clients (fsspec/aiohttp, ``urllib``) at it to
check retries, 404/403 handling, connections dropped or stalled mid-body, servers without range
support and validators (ETag, Last-Modified) that change or are missing::

    from shard_server import ShardServer

    with ShardServer(folder) as server:
        server.fail("test/1.tar", 503, times=2)
        url = server.url_for("test/1.tar")
        ...
        assert server.count("test/1.tar", "GET") == 3

``tests/conftest.py`` puts ``tests/helpers`` on ``sys.path``, hence the bare module name.
Paths given to the fault methods and to ``count`` are relative to the served folder, as in the
URL ("test/1.tar"; a leading "/" is ignored). Every response carries a correct
``Content-Length`` so HTTP/1.1 keep-alive clients work, and ``Connection: close`` where the
server closes the connection early on purpose.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import threading
from dataclasses import dataclass
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import quote, unquote, urlsplit

_SINGLE_RANGE = re.compile(r"bytes=(\d+)-(\d*)")
_SUFFIX_RANGE = re.compile(r"bytes=-(\d+)")
_UNSATISFIABLE = "unsatisfiable"


def _key(path: str) -> str:
    return path.lstrip("/")


@dataclass
class _Cut:
    """A response body cut short: ``after_bytes`` sent, then a pause of ``seconds``, then close."""

    after_bytes: int
    seconds: float
    remaining: int | None


@dataclass(frozen=True)
class _View:
    """What the fault settings say about one path, read once per request under the lock."""

    hide_validators: bool
    etag: str | None
    ranges: bool


def _parse_range(header: str, size: int) -> tuple[int, int] | str | None:
    """(start, stop) of a single byte range, ``_UNSATISFIABLE``, or None to ignore the header.

    RFC 9110 lets a server ignore a Range it does not understand (multiple ranges, other units,
    bad syntax) and answer 200 with the whole representation; that is what None means here."""
    spec = header.strip()
    if m := _SINGLE_RANGE.fullmatch(spec):
        start = int(m.group(1))
        if m.group(2) and int(m.group(2)) < start:
            return None
        if start >= size:
            return _UNSATISFIABLE
        last = int(m.group(2)) if m.group(2) else size - 1
        return start, min(last, size - 1) + 1
    if m := _SUFFIX_RANGE.fullmatch(spec):
        length = int(m.group(1))
        if length == 0 or size == 0:
            return _UNSATISFIABLE
        return max(size - length, 0), size
    return None


def _content_type(path: Path) -> str:
    if path.suffix == ".tar":
        return "application/x-tar"
    if path.suffix == ".txt":
        return "text/plain; charset=utf-8"
    return "application/octet-stream"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # A test re-binds port 0 each time; never wait out TIME_WAIT.
    allow_reuse_address = True

    def __init__(self, shard: ShardServer) -> None:
        self.shard = shard
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request, client_address) -> None:
        # Clients in these tests hang up mid-response on purpose; tracebacks would be noise.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # A client that stops talking must never pin a handler thread (or a test) for long.
    timeout = 10
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.shard._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.shard._track(self.connection, False)

    def log_message(self, format: str, *args) -> None:
        pass

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def _serve(self, head: bool) -> None:
        shard = self.server.shard
        rel = _key(unquote(urlsplit(self.path).path))
        range_header = self.headers.get("Range")
        shard._record(self.command, rel, range_header)

        status = shard._take_failure(rel)
        if status is not None:
            self._send_text(status, f"injected failure {status}\n", head)
            return
        file = shard._resolve(rel)
        if file is None:
            self._send_text(404, "not found\n", head)
            return
        try:
            with file.open("rb") as f:
                st = os.fstat(f.fileno())
                data = f.read()
        except OSError:
            self._send_text(404, "not found\n", head)
            return

        view = shard._view(rel)
        size = len(data)
        etag = view.etag or (
            f'"{st.st_size:x}-{st.st_mtime_ns:x}-{hashlib.sha256(data).hexdigest()[:16]}"'
        )
        last_modified = formatdate(st.st_mtime, usegmt=True)

        status, start, stop = 200, 0, size
        if not head and view.ranges and range_header is not None:
            if_range = self.headers.get("If-Range")
            # If-Range asks for the whole file when the validator it names is no longer current.
            current = (
                if_range is None
                or (not view.hide_validators and if_range.strip() in (etag, last_modified))
            )
            parsed = _parse_range(range_header, size) if current else None
            if parsed == _UNSATISFIABLE:
                self._send_text(416, "range not satisfiable\n", head,
                                {"Content-Range": f"bytes */{size}"})
                return
            if isinstance(parsed, tuple):
                status, (start, stop) = 206, parsed

        cut = None if head else shard._take_cut(rel)
        self.send_response(status)
        self.send_header("Content-Type", _content_type(file))
        self.send_header("Content-Length", str(stop - start))
        if view.ranges:
            self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{size}")
        if not view.hide_validators:
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", last_modified)
        if cut is not None:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if head:
            return
        body = memoryview(data)[start:stop]
        if cut is None:
            self._write(body)
            return
        self._write(body[: cut.after_bytes])
        if cut.seconds > 0:
            shard._pause(cut.seconds)
        self._hang_up()

    def _send_text(self, status: int, text: str, head: bool,
                   headers: dict[str, str] | None = None) -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self._write(body)

    def _write(self, data: bytes | memoryview) -> None:
        try:
            self.wfile.write(data)
        except OSError:
            self.close_connection = True

    def _hang_up(self) -> None:
        """End the connection with the body unfinished, so the client sees it broken mid-body."""
        self.close_connection = True
        try:
            self.wfile.flush()
            # A FIN rather than a RST: the client must still receive the bytes already sent.
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class ShardServer:
    """Serve the files under ``root`` over HTTP on 127.0.0.1 (a free port) from a daemon thread.

    Use as a context manager (or ``start()``/``close()``). The fault methods may be called from
    the test thread at any time, also while requests are being served."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self._lock = threading.Lock()
        self._requests: list[tuple[str, str, str | None]] = []
        self._failures: dict[str, list] = {}
        self._cuts: dict[str, _Cut] = {}
        self._hidden: set[str] = set()
        self._hide_all = False
        self._etags: dict[str, str] = {}
        self._ranges = True
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> ShardServer:
        """Bind a free port and start serving; returns self."""
        if self._httpd is not None:
            raise RuntimeError("ShardServer already started")
        self._httpd = _Server(self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"ShardServer:{self.port}", daemon=True,
        )
        self._thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Stop serving and close every connection; returns within about ``timeout`` seconds."""
        httpd, thread = self._httpd, self._thread
        if httpd is None or self._stopping.is_set():
            return
        self._stopping.set()  # wakes stalled responses
        if thread is not None and thread.is_alive():
            httpd.shutdown()
        # Handlers waiting on a keep-alive connection would otherwise linger for `timeout`.
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        httpd.server_close()
        if thread is not None:
            thread.join(timeout)

    def __enter__(self) -> ShardServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def port(self) -> int:
        """The port bound (only once started)."""
        if self._httpd is None:
            raise RuntimeError("ShardServer not started")
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        """The base URL, ``http://127.0.0.1:PORT`` (no trailing slash)."""
        return f"http://127.0.0.1:{self.port}"

    def url_for(self, path: str) -> str:
        """The URL of ``path``, relative to the served folder (percent-encoded as needed)."""
        return f"{self.url}/{quote(_key(path))}"

    # -- request log ------------------------------------------------------------------------

    @property
    def requests(self) -> list[tuple[str, str, str | None]]:
        """A snapshot of the requests so far: ``(method, path, Range header or None)``."""
        with self._lock:
            return list(self._requests)

    def count(self, path: str, method: str | None = None) -> int:
        """How many requests for ``path`` (of ``method``, "GET"/"HEAD", if given) came in."""
        key = _key(path)
        with self._lock:
            return sum(
                1 for m, p, _ in self._requests if p == key and (method is None or m == method)
            )

    def reset_requests(self) -> None:
        """Forget the requests recorded so far."""
        with self._lock:
            self._requests.clear()

    # -- fault injection --------------------------------------------------------------------

    def fail(self, path: str, status: int, times: int | None = 1) -> None:
        """Answer the next ``times`` requests (GET or HEAD) for ``path`` with ``status`` and a
        short body; ``times=None``: every request until ``clear()``."""
        with self._lock:
            self._failures[_key(path)] = [status, times]

    def drop(self, path: str, after_bytes: int, times: int | None = 1) -> None:
        """Send the next ``times`` GET responses for ``path`` with full headers but only the
        first ``after_bytes`` bytes of the body, then close the connection. HEAD is unaffected;
        ``times=None``: every GET until ``clear()``. Replaces a ``stall`` on the same path."""
        with self._lock:
            self._cuts[_key(path)] = _Cut(after_bytes, 0.0, times)

    def stall(self, path: str, after_bytes: int, seconds: float, times: int | None = 1) -> None:
        """Like ``drop``, but wait ``seconds`` after ``after_bytes`` bytes before closing (for
        read-timeout tests; shutting the server down cuts the wait short)."""
        with self._lock:
            self._cuts[_key(path)] = _Cut(after_bytes, float(seconds), times)

    def hide_validators(self, path: str | None = None) -> None:
        """Send no ETag or Last-Modified for ``path`` (None: for every path) until ``clear()``."""
        with self._lock:
            if path is None:
                self._hide_all = True
            else:
                self._hidden.add(_key(path))

    def set_etag(self, path: str, etag: str | None) -> None:
        """Serve ``etag`` (sent as given, so quote it: '"v2"') for ``path``; None: the computed
        one again. ``hide_validators`` wins over this."""
        with self._lock:
            if etag is None:
                self._etags.pop(_key(path), None)
            else:
                self._etags[_key(path)] = etag

    def no_ranges(self) -> None:
        """Ignore Range headers: answer 200 with the whole file and no Accept-Ranges header."""
        with self._lock:
            self._ranges = False

    def clear(self) -> None:
        """Remove every fault (failures, drops, stalls, hidden or fixed validators, no_ranges)."""
        with self._lock:
            self._failures.clear()
            self._cuts.clear()
            self._hidden.clear()
            self._hide_all = False
            self._etags.clear()
            self._ranges = True

    # -- used by the handler threads ----------------------------------------------------------

    def _record(self, method: str, path: str, range_header: str | None) -> None:
        with self._lock:
            self._requests.append((method, path, range_header))

    def _take_failure(self, path: str) -> int | None:
        with self._lock:
            entry = self._failures.get(path)
            if entry is None:
                return None
            status, remaining = entry
            if remaining is not None:
                if remaining <= 1:
                    del self._failures[path]
                else:
                    entry[1] = remaining - 1
            return status

    def _take_cut(self, path: str) -> _Cut | None:
        with self._lock:
            cut = self._cuts.get(path)
            if cut is None:
                return None
            if cut.remaining is not None:
                cut.remaining -= 1
                if cut.remaining <= 0:
                    del self._cuts[path]
            return _Cut(cut.after_bytes, cut.seconds, None)

    def _view(self, path: str) -> _View:
        with self._lock:
            return _View(
                hide_validators=self._hide_all or path in self._hidden,
                etag=self._etags.get(path),
                ranges=self._ranges,
            )

    def _resolve(self, path: str) -> Path | None:
        """The file ``path`` names under root, or None (missing, a folder, or outside root)."""
        try:
            file = (self.root / path).resolve()
        except (OSError, ValueError):
            return None
        if not file.is_relative_to(self.root) or not file.is_file():
            return None
        return file

    def _pause(self, seconds: float) -> None:
        # Event.wait returns as soon as close() sets it, so a stall never delays shutdown.
        self._stopping.wait(seconds)

    def _track(self, conn: socket.socket, open_: bool) -> None:
        with self._lock:
            if open_:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)
