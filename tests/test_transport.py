"""Reading locations (paths, URLs, ``pipe:`` commands) with bounded retries:
``itra_bench.transport``, against a real HTTP server on the loopback address."""

from __future__ import annotations

import hashlib
import os
import time

import pytest
from shard_server import ShardServer

from itra_bench import (
    MissingDataError,
    RemoteStream,
    Retry,
    TransportError,
    UserError,
    download_location,
    join_location,
    read_location,
    stat_location,
    stat_locations,
)

QUICK = Retry(attempts=3, backoff=0.01, timeout=2)
DATA = os.urandom(300_000)


@pytest.fixture
def server(tmp_path):
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / "blob.bin").write_bytes(DATA)
    with ShardServer(tmp_path / "srv") as srv:
        yield srv


def test_a_url_reads_whole_and_its_stat_gives_size_and_etag(server):
    url = server.url_for("blob.bin")
    assert read_location(url, QUICK) == DATA
    stat = stat_location(url, QUICK)
    assert stat.size == len(DATA) and "ETag=" in stat.version and "Last-Modified=" in stat.version


def test_a_dropped_connection_resumes_where_it_stopped(server, tmp_path):
    server.drop("blob.bin", after_bytes=100_000, times=2)
    sha = download_location(server.url_for("blob.bin"), tmp_path / "copy", QUICK,
                            size=len(DATA))
    assert (tmp_path / "copy").read_bytes() == DATA
    assert sha == hashlib.sha256(DATA).hexdigest()
    assert server.count("blob.bin", "GET") == 3


def test_failing_every_time_gives_up_after_the_tries_naming_the_url(server, tmp_path):
    server.drop("blob.bin", after_bytes=100_000, times=None)
    with pytest.raises(TransportError, match="could not be read after 3 tries") as err:
        download_location(server.url_for("blob.bin"), tmp_path / "copy", QUICK)
    assert server.url_for("blob.bin") in str(err.value)
    assert not (tmp_path / "copy").exists() and list(tmp_path.glob(".copy*")) == []
    assert server.count("blob.bin", "GET") == 3


@pytest.mark.parametrize("status", [500, 503, 429])
def test_server_errors_are_retried(server, status):
    server.fail("blob.bin", status, times=2)
    assert read_location(server.url_for("blob.bin"), QUICK) == DATA


@pytest.mark.parametrize(("status", "error", "words"), [
    (404, MissingDataError, "not found"), (403, TransportError, "access refused"),
    (401, TransportError, "access refused"), (400, TransportError, "cannot be read")])
def test_client_errors_are_not_retried(server, status, error, words):
    server.fail("blob.bin", status, times=None)
    with pytest.raises(error, match=words):
        read_location(server.url_for("blob.bin"), QUICK)
    assert server.count("blob.bin", "GET") == 1


def test_a_404_stat_is_one_clear_error(server):
    with pytest.raises(MissingDataError, match="not found"):
        stat_locations([server.url_for("blob.bin"), server.url_for("nope.bin")], QUICK)


def test_a_silent_connection_times_out_and_is_retried(server):
    server.stall("blob.bin", after_bytes=1000, seconds=30, times=1)
    start = time.monotonic()
    assert read_location(server.url_for("blob.bin"), Retry(attempts=2, backoff=0,
                                                           timeout=0.5)) == DATA
    assert time.monotonic() - start < 20


def test_a_stream_shorter_than_announced_is_refused(tmp_path):
    (tmp_path / "f").write_bytes(DATA)
    with pytest.raises(TransportError, match="ended after 1,000 of 2,000 bytes"):
        RemoteStream(f"pipe:head -c 1000 {tmp_path / 'f'}", QUICK, size=2000).read()


def test_a_pipe_is_read_and_its_failure_retried_then_reported(tmp_path):
    (tmp_path / "f").write_bytes(DATA)
    assert read_location(f"pipe:cat {tmp_path / 'f'}", QUICK) == DATA
    with pytest.raises(TransportError, match="exit status 3"):
        read_location("pipe:exit 3", QUICK)
    start = time.monotonic()
    with pytest.raises(TransportError, match="cannot be read.*127"):
        read_location("pipe:no-such-command-itra", Retry(attempts=5, backoff=5))
    assert time.monotonic() - start < 4  # "command not found" is not retried


def test_fsspec_urls_and_local_paths(tmp_path):
    (tmp_path / "f").write_bytes(DATA)
    assert read_location(f"file://{tmp_path / 'f'}", QUICK) == DATA
    assert read_location(str(tmp_path / "f"), QUICK) == DATA
    assert stat_location(str(tmp_path / "f")).size == len(DATA)
    with pytest.raises(MissingDataError):
        stat_location(str(tmp_path / "missing"))
    with pytest.raises(TransportError, match="no-such-proto"):
        read_location("no-such-proto://x/y", QUICK)


def test_join_location():
    assert join_location("https://h/wds_x/", "test", "0.tar") == "https://h/wds_x/test/0.tar"
    assert join_location("pipe:aws s3 cp s3://b/wds_x/{file} -", "test", "0.tar") == \
        "pipe:aws s3 cp s3://b/wds_x/test/0.tar -"
    assert join_location("/data/wds_x", "test", "0.tar") == "/data/wds_x/test/0.tar"


@pytest.mark.parametrize(("var", "value"), [("ITRA_BENCH_NET_ATTEMPTS", "0"),
                                            ("ITRA_BENCH_NET_ATTEMPTS", "x"),
                                            ("ITRA_BENCH_NET_BACKOFF", "-1"),
                                            ("ITRA_BENCH_NET_TIMEOUT", "0")])
def test_bad_retry_settings_are_refused_naming_the_variable(monkeypatch, var, value):
    monkeypatch.setenv(var, value)
    with pytest.raises(UserError, match=var):
        Retry.from_env()


def test_retry_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("ITRA_BENCH_NET_ATTEMPTS", "7")
    monkeypatch.setenv("ITRA_BENCH_NET_BACKOFF", "0")
    retry = Retry.from_env()
    assert retry.attempts == 7 and retry.backoff == 0 and retry.timeout == Retry().timeout
    assert len(list(retry.pauses())) == 6
