"""The test HTTP server (tests/helpers/shard_server.py) behaves as its fault injection promises,
so tests of remote shards fail for their client's reasons, never for the server's."""

from __future__ import annotations

import http.client
import os
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from shard_server import ShardServer

DATA = bytes(range(256)) * 8  # 2 KiB, every offset distinguishable


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "test").mkdir(parents=True)
    (root / "test" / "0.tar").write_bytes(DATA)
    (root / "notes.txt").write_text("hello\n")
    (tmp_path / "secret.txt").write_text("outside the served folder\n")
    return root


def get(url: str, method: str = "GET", headers: dict[str, str] | None = None):
    """(status, headers, body) of one request; HTTP errors are answers too."""
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.headers, err.read()


def raw_get(server: ShardServer, path: str) -> int:
    """Status of a GET of ``path`` sent verbatim (urllib would not send every path as is)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def test_get_returns_the_file_with_its_headers(root):
    with ShardServer(root) as server:
        status, headers, body = get(server.url_for("test/0.tar"))
        assert (status, body) == (200, DATA)
        assert headers["Content-Length"] == str(len(DATA))
        assert headers["Content-Type"] == "application/x-tar"
        assert headers["Accept-Ranges"] == "bytes"
        status, headers, body = get(server.url_for("notes.txt"))
        assert (status, body) == (200, b"hello\n")
        assert headers["Content-Type"] == "text/plain; charset=utf-8"
        assert server.url == f"http://127.0.0.1:{server.port}"
        assert server.requests == [("GET", "test/0.tar", None), ("GET", "notes.txt", None)]
        assert server.count("test/0.tar") == 1
        assert server.count("/test/0.tar", "HEAD") == 0


def test_head_gives_validators_and_no_body(root):
    with ShardServer(root) as server:
        status, headers, body = get(server.url_for("test/0.tar"), "HEAD")
        assert (status, body) == (200, b"")
        assert headers["Content-Length"] == str(len(DATA))
        assert headers["ETag"].startswith('"') and headers["ETag"].endswith('"')
        assert headers["Last-Modified"].endswith(" GMT")
        assert server.count("test/0.tar", "HEAD") == 1


def test_keep_alive_survives_errors_and_faults(root):
    with ShardServer(root) as server:
        server.fail("test/0.tar", 503)
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        try:
            for path, want in [("/test/0.tar", 503), ("/missing.tar", 404), ("/test/0.tar", 200)]:
                conn.request("GET", path)
                resp = conn.getresponse()
                resp.read()
                assert resp.status == want
                assert not resp.will_close
        finally:
            conn.close()


def test_ranges(root):
    with ShardServer(root) as server:
        url = server.url_for("test/0.tar")
        status, headers, body = get(url, headers={"Range": "bytes=100-199"})
        assert (status, body) == (206, DATA[100:200])
        assert headers["Content-Range"] == f"bytes 100-199/{len(DATA)}"
        assert headers["Content-Length"] == "100"
        status, _, body = get(url, headers={"Range": "bytes=2000-"})
        assert (status, body) == (206, DATA[2000:])
        status, headers, _ = get(url, headers={"Range": f"bytes={len(DATA)}-"})
        assert status == 416
        assert headers["Content-Range"] == f"bytes */{len(DATA)}"
        assert server.requests[-1] == ("GET", "test/0.tar", f"bytes={len(DATA)}-")


def test_if_range_with_a_stale_etag_gets_the_whole_file(root):
    with ShardServer(root) as server:
        url = server.url_for("test/0.tar")
        etag = get(url, "HEAD")[1]["ETag"]
        status, _, body = get(url, headers={"Range": "bytes=10-", "If-Range": etag})
        assert (status, body) == (206, DATA[10:])
        status, _, body = get(url, headers={"Range": "bytes=10-", "If-Range": '"stale"'})
        assert (status, body) == (200, DATA)


def test_no_ranges_answers_whole_files(root):
    with ShardServer(root) as server:
        server.no_ranges()
        status, headers, body = get(server.url_for("test/0.tar"), headers={"Range": "bytes=5-"})
        assert (status, body) == (200, DATA)
        assert "Accept-Ranges" not in headers
        server.clear()
        assert get(server.url_for("test/0.tar"), headers={"Range": "bytes=5-"})[0] == 206


def test_fail_counts_down_then_serves(root):
    with ShardServer(root) as server:
        url = server.url_for("test/0.tar")
        server.fail("test/0.tar", 503, times=2)
        assert [get(url)[0] for _ in range(3)] == [503, 503, 200]
        server.fail("test/0.tar", 403)
        assert get(url, "HEAD")[0] == 403  # HEAD uses up a failure too
        assert get(url)[0] == 200
        server.fail("test/0.tar", 500, times=None)
        assert [get(url)[0] for _ in range(3)] == [500, 500, 500]
        assert get(server.url_for("notes.txt"))[0] == 200  # other paths unaffected
        server.clear()
        assert get(url)[0] == 200


def test_drop_breaks_one_body_mid_way(root):
    with ShardServer(root) as server:
        url = server.url_for("test/0.tar")
        server.drop("test/0.tar", after_bytes=100)
        assert get(url, "HEAD")[0] == 200  # HEAD neither dropped nor using up the drop
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.headers["Content-Length"] == str(len(DATA))
            assert resp.headers["Connection"] == "close"
            with pytest.raises(http.client.IncompleteRead) as broken:
                resp.read()
        assert broken.value.partial == DATA[:100]
        status, _, body = get(url)
        assert (status, body) == (200, DATA)
        assert server.count("test/0.tar", "GET") == 2


def test_drop_applies_to_ranged_responses_and_can_last(root):
    with ShardServer(root) as server:
        url = server.url_for("test/0.tar")
        server.drop("test/0.tar", after_bytes=10, times=None)
        for _ in range(2):
            req = urllib.request.Request(url, headers={"Range": "bytes=1000-1099"})
            with urllib.request.urlopen(req, timeout=10) as resp:
                assert resp.status == 206
                assert resp.headers["Content-Length"] == "100"
                with pytest.raises(http.client.IncompleteRead) as broken:
                    resp.read()
            assert broken.value.partial == DATA[1000:1010]


def test_missing_files_and_escapes_are_404(root):
    with ShardServer(root) as server:
        assert get(server.url_for("test/9.tar"))[0] == 404
        assert get(server.url_for("test"))[0] == 404  # a folder
        assert raw_get(server, "/notes.txt") == 200
        assert raw_get(server, "/../secret.txt") == 404
        assert raw_get(server, "/test/../../secret.txt") == 404
        assert raw_get(server, "/%2e%2e/secret.txt") == 404


def test_etag_changes_with_content_even_at_the_same_size_and_mtime(root):
    shard = root / "test" / "0.tar"
    with ShardServer(root) as server:
        url = server.url_for("test/0.tar")
        before = get(url, "HEAD")[1]
        st = shard.stat()
        shard.write_bytes(DATA[::-1])
        os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))
        after = get(url, "HEAD")[1]
        assert after["ETag"] != before["ETag"]
        assert after["Last-Modified"] == before["Last-Modified"]
        assert get(url)[2] == DATA[::-1]


def test_set_etag_and_hide_validators(root):
    with ShardServer(root) as server:
        url = server.url_for("test/0.tar")
        computed = get(url, "HEAD")[1]["ETag"]
        server.set_etag("test/0.tar", '"v2"')
        assert get(url, "HEAD")[1]["ETag"] == '"v2"'
        server.set_etag("test/0.tar", None)
        assert get(url, "HEAD")[1]["ETag"] == computed

        server.hide_validators("test/0.tar")
        for method in ("HEAD", "GET"):
            headers = get(url, method)[1]
            assert "ETag" not in headers and "Last-Modified" not in headers
        assert "ETag" in get(server.url_for("notes.txt"), "HEAD")[1]
        server.hide_validators(None)
        headers = get(server.url_for("notes.txt"), "HEAD")[1]
        assert "ETag" not in headers and "Last-Modified" not in headers
        server.clear()
        assert get(url, "HEAD")[1]["ETag"] == computed


def test_exit_is_prompt_with_a_stalled_response_in_progress(root):
    server = ShardServer(root).__enter__()
    try:
        server.stall("test/0.tar", after_bytes=10, seconds=60)
        got_first_bytes = threading.Event()
        outcome: dict[str, object] = {}

        def client() -> None:
            try:
                with urllib.request.urlopen(server.url_for("test/0.tar"), timeout=30) as resp:
                    outcome["first"] = resp.read(10)
                    got_first_bytes.set()
                    outcome["rest"] = resp.read()
            except Exception as err:  # whatever broke the read is the outcome
                outcome["error"] = err

        reader = threading.Thread(target=client, daemon=True)
        reader.start()
        assert got_first_bytes.wait(5), outcome
    finally:
        # __exit__ runs in a thread of its own so that a hang fails the test instead.
        started = time.monotonic()
        closer = threading.Thread(target=server.__exit__, args=(None, None, None), daemon=True)
        closer.start()
        closer.join(5)
    assert not closer.is_alive(), "ShardServer did not shut down within 5 s"
    assert time.monotonic() - started < 5
    reader.join(5)
    assert not reader.is_alive(), "the client was left hanging after shutdown"
    assert outcome["first"] == DATA[:10]
    assert "rest" not in outcome  # the body ended short: IncompleteRead
    assert isinstance(outcome["error"], http.client.IncompleteRead)


def test_stall_waits_then_closes(root):
    with ShardServer(root) as server:
        server.stall("test/0.tar", after_bytes=0, seconds=0.3)
        started = time.monotonic()
        with urllib.request.urlopen(server.url_for("test/0.tar"), timeout=10) as resp:
            with pytest.raises(http.client.IncompleteRead):
                resp.read()
        assert time.monotonic() - started >= 0.25
        assert get(server.url_for("test/0.tar"))[2] == DATA


def test_fsspec_http_reads_files_ranges_and_sizes(root):
    pytest.importorskip("aiohttp")
    import fsspec

    with ShardServer(root) as server:
        fs = fsspec.filesystem("http", skip_instance_cache=True)
        url = server.url_for("test/0.tar")
        assert fs.cat_file(url) == DATA
        assert fs.cat_file(url, start=100, end=300) == DATA[100:300]
        assert fs.info(url)["size"] == len(DATA)
        with fs.open(url, "rb", block_size=512) as f:
            f.seek(1000)
            assert f.read(50) == DATA[1000:1050]
        assert server.count("test/0.tar", "GET") >= 3


def test_fsspec_http_sees_injected_failures(root):
    pytest.importorskip("aiohttp")
    import fsspec

    with ShardServer(root) as server:
        fs = fsspec.filesystem("http", skip_instance_cache=True)
        server.fail("test/0.tar", 404, times=None)
        with pytest.raises(FileNotFoundError):
            fs.cat_file(server.url_for("test/0.tar"))
        server.clear()
        assert fs.cat_file(server.url_for("test/0.tar")) == DATA
