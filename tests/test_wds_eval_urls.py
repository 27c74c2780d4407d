"""clip-benchmark webdataset folders evaluated from URLs and ``pipe:`` commands, served by a
real HTTP server on the loopback address (``shard_server.ShardServer``), faults included.

Every number read remotely is compared with the number of the same folder read from disk.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from shard_server import ShardServer
from wds_folders import make_classification, make_retrieval

from itra_bench.results import iter_records

PLUGINS = ("--plugin", "itra_test_plugin", "--plugin", "itra_bench.tasks.wds.plugin")
SHARD = "wds_toy/test/1.tar"


pytestmark = pytest.mark.usefixtures("quick_network_retries")


@pytest.fixture
def data(tmp_path) -> Path:
    folder = tmp_path / "data"
    make_classification(folder, n=5, per_shard=4)
    make_retrieval(folder)
    return folder


@pytest.fixture
def server(data):
    with ShardServer(data) as srv:
        yield srv


def run(cli, tmp_path: Path, task: str, out: str, *extra: object,
        model: str = "pixel") -> tuple[int, dict, str]:
    """``itra-bench run`` of one task; (exit code, metrics by task, messages)."""
    result = cli("run", "--model", model, *PLUGINS, "--tasks", task,
                 "--output", str(tmp_path / out), "--cache-dir", str(tmp_path / "cache"),
                 "--workers", "0", "--no-progress", *map(str, extra))
    found = {r["task"]: r["metrics"] for _, r in iter_records(tmp_path / out)} \
        if (tmp_path / out).exists() else {}
    return result.code, found, result.out + result.err


def shard_gets(server: ShardServer, folder: str = "wds_toy/test") -> int:
    return sum(1 for method, path, _ in server.requests
               if method == "GET" and path.startswith(folder) and path.endswith(".tar"))


def test_numbers_from_a_url_equal_those_from_the_local_folder(cli, tmp_path, data, server):
    code, local, _ = run(cli, tmp_path, f"wds:{data / 'wds_toy'}", "local")
    assert code == 0 and local["wds/toy"]["acc1"] > 0
    code, remote, _ = run(cli, tmp_path, f"wds:{server.url}/wds_toy", "remote")
    assert code == 0
    assert remote == local
    assert shard_gets(server) == 4  # two splits of 15 images, 4 a shard: only test is read


def test_retrieval_from_a_url_equals_the_local_folder(cli, tmp_path, data, server):
    _, local, _ = run(cli, tmp_path, f"wds:{data / 'wds_caps'}", "local", "--no-cache")
    code, remote, _ = run(cli, tmp_path, f"wds:{server.url}/wds_caps", "remote", "--no-cache")
    assert code == 0 and remote == local and "wds/caps" in remote


def test_linear_probe_task_file_with_a_url_root_equals_local(cli, tmp_path, data, server):
    body = "task_type: wds\ntask: linear_probe\n"
    (tmp_path / "local.yaml").write_text(f"name: lp\nroot: {data / 'wds_toy'}\n{body}")
    (tmp_path / "remote.yaml").write_text(f"name: lp\nroot: {server.url}/wds_toy\n{body}")
    _, local, _ = run(cli, tmp_path, str(tmp_path / "local.yaml"), "local", "--no-cache")
    code, remote, _ = run(cli, tmp_path, str(tmp_path / "remote.yaml"), "remote",
                          "--no-cache")
    assert code == 0 and remote == local and local["lp"]


@pytest.mark.parametrize("form", ["pipe:cat {folder}/{{file}}", "file://{folder}"])
def test_pipe_command_and_fsspec_url_equal_local(cli, tmp_path, data, form):
    _, local, _ = run(cli, tmp_path, f"wds:{data / 'wds_toy'}", "local", "--no-cache")
    remote = form.format(folder=data / "wds_toy")
    code, found, text = run(cli, tmp_path, f"wds:{remote}", "remote", "--no-cache")
    assert code == 0 and found == local, text


def test_pipe_command_without_placeholder_is_refused(cli, tmp_path, data):
    code, _, text = run(cli, tmp_path, f"wds:pipe:cat {data}/x.tar", "out")
    assert code == 2 and "{file}" in text and "Traceback" not in text


def test_task_file_may_not_run_a_pipe_command(cli, tmp_path, data):
    marker = tmp_path / "ran"
    (tmp_path / "t.yaml").write_text(
        f"name: t\ntask_type: wds\nroot: 'pipe:touch {marker}; cat {data}/wds_toy/{{file}}'\n")
    code, _, text = run(cli, tmp_path, str(tmp_path / "t.yaml"), "out")
    assert code == 2 and "cannot run commands" in text
    assert not marker.exists()


@pytest.mark.parametrize(("status", "words"), [(404, "not found"), (403, "access refused")])
def test_missing_or_refused_shard_stops_before_any_work(cli, tmp_path, server, status, words):
    server.fail(SHARD, status, times=None)
    code, found, text = run(cli, tmp_path, f"wds:{server.url}/wds_toy", "out")
    assert code == 2, text
    assert words in text and server.url_for(SHARD) in text and "Traceback" not in text
    assert found == {}
    # Checked before any shard was read (fsspec's check of a refused HEAD tries a GET for
    # headers alone; no other shard is asked for its data).
    assert shard_gets(server) == server.count(SHARD, "GET") <= 1


def test_503_twice_then_200_is_retried(cli, tmp_path, data, server):
    _, local, _ = run(cli, tmp_path, f"wds:{data / 'wds_toy'}", "local", "--no-cache")
    server.fail(SHARD, 503, times=2)
    code, remote, text = run(cli, tmp_path, f"wds:{server.url}/wds_toy", "remote")
    assert code == 0 and remote == local
    assert "HTTP 503" in text and "trying again" in text


def test_connection_dropped_mid_shard_is_read_again(cli, tmp_path, data, server):
    _, local, _ = run(cli, tmp_path, f"wds:{data / 'wds_toy'}", "local", "--no-cache")
    server.drop(SHARD, after_bytes=700, times=1)
    code, remote, _ = run(cli, tmp_path, f"wds:{server.url}/wds_toy", "remote")
    assert code == 0 and remote == local
    assert server.count(SHARD, "GET") == 2


def test_connection_dropped_every_time_stops_naming_the_shard(cli, tmp_path, server):
    server.drop(SHARD, after_bytes=700, times=None)
    code, found, text = run(cli, tmp_path, f"wds:{server.url}/wds_toy", "out")
    assert code == 2 and found == {}
    assert f"shard {server.url_for(SHARD)} could not be read after 3 tries" in text
    assert "Traceback" not in text
    assert server.count(SHARD, "GET") == 3, server.requests


def test_truncated_shard_is_refused_never_shortened(cli, tmp_path, data, server):
    import tarfile

    shard = data / SHARD
    with tarfile.open(shard) as tar:
        second = tar.getmembers()[1]
    end = second.offset_data + -(-second.size // 512) * 512
    shard.write_bytes(shard.read_bytes()[:end])  # whole members, no end-of-archive blocks
    code, found, text = run(cli, tmp_path, f"wds:{server.url}/wds_toy", "out")
    assert code == 2 and found == {}
    assert f"shard {server.url_for(SHARD)} ends after" in text and "truncated" in text


def _change_shard(data: Path) -> None:
    """Shard 1 of the test split with its first two samples' labels swapped (same size)."""
    import tarfile

    from wds_folders import write_shards

    path = data / SHARD
    with tarfile.open(path) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
    samples: dict[str, dict] = {}
    for name, payload in members:
        key, ext = name.split(".", 1)
        samples.setdefault(key, {"__key__": key})[ext] = payload
    ordered = list(samples.values())
    ordered[0]["cls"], ordered[1]["cls"] = ordered[1]["cls"], ordered[0]["cls"]
    ordered[0]["png"], ordered[2]["png"] = ordered[2]["png"], ordered[0]["png"]
    tmp = data / "tmp_split"
    write_shards(tmp, ordered, per_shard=len(ordered))
    shutil.copy(tmp / "0.tar", path)
    shutil.rmtree(tmp)


def test_a_changed_shard_is_recomputed_not_served_stale(cli, tmp_path, data, server):
    code, first, _ = run(cli, tmp_path, f"wds:{server.url}/wds_toy", "one")
    assert code == 0
    gets = shard_gets(server)
    code, again, _ = run(cli, tmp_path, f"wds:{server.url}/wds_toy", "two")
    assert code == 0 and again == first
    assert shard_gets(server) == gets  # unchanged ETags: index and features from the cache

    _change_shard(data)  # a new ETag
    code, changed, _ = run(cli, tmp_path, f"wds:{server.url}/wds_toy", "three")
    _, local, _ = run(cli, tmp_path, f"wds:{data / 'wds_toy'}", "local", "--no-cache")
    assert code == 0 and changed == local
    assert changed != first  # the swap changes the score: the test can tell stale from fresh
    assert shard_gets(server) > gets


def test_without_validators_the_content_hash_tells_a_change(cli, tmp_path, data, server):
    server.hide_validators(None)
    code, first, _ = run(cli, tmp_path, f"wds:{server.url}/wds_toy", "one")
    assert code == 0
    _change_shard(data)
    code, changed, _ = run(cli, tmp_path, f"wds:{server.url}/wds_toy", "two")
    _, local, _ = run(cli, tmp_path, f"wds:{data / 'wds_toy'}", "local", "--no-cache")
    assert code == 0 and changed == local and changed != first


def test_a_shard_changed_under_an_unchanged_etag_is_caught_when_read(cli, tmp_path, data,
                                                                     server):
    server.set_etag(SHARD, '"fixed"')
    assert run(cli, tmp_path, f"wds:{server.url}/wds_toy", "one")[0] == 0
    before = (data / SHARD).stat()
    _change_shard(data)
    os.utime(data / SHARD, ns=(before.st_atime_ns, before.st_mtime_ns))  # same Last-Modified
    assert (data / SHARD).stat().st_size == before.st_size
    # Another model has no cached features: the shards are read, and their bytes are not
    # those the record's index was made from.
    code, found, text = run(cli, tmp_path, f"wds:{server.url}/wds_toy", "two", model="pixel:dim16")
    assert code == 2 and found == {}
    assert f"shard {server.url_for(SHARD)} is not what it was" in text
    code, found, _ = run(cli, tmp_path, f"wds:{server.url}/wds_toy", "three", model="pixel:dim16")
    assert code == 0 and found  # the record was dropped: read anew


def test_offline_reuses_cached_features_with_no_network(cli, tmp_path, data, monkeypatch):
    with ShardServer(data) as srv:
        url = f"wds:{srv.url}/wds_toy"
        code, online, _ = run(cli, tmp_path, url, "online")
        assert code == 0
    # The server is gone: any request would fail.
    monkeypatch.setenv("ITRA_BENCH_OFFLINE", "1")
    code, offline, text = run(cli, tmp_path, url, "offline")
    assert code == 0, text
    assert offline == online
    code, _, text = run(cli, tmp_path, url, "other", model="pixel:dim16")
    assert code == 2 and "ITRA_BENCH_OFFLINE is set" in text and "Traceback" not in text


def test_offline_without_an_earlier_online_run_says_so(cli, tmp_path, server, monkeypatch):
    monkeypatch.setenv("ITRA_BENCH_OFFLINE", "1")
    code, _, text = run(cli, tmp_path, f"wds:{server.url}/wds_toy", "out")
    assert code == 2 and "ITRA_BENCH_OFFLINE is set" in text
    assert server.requests == []


def test_a_run_stopped_by_the_network_resumes_without_reading_what_it_finished(
        cli, tmp_path, data, server):
    tasks = f"wds:{server.url}/wds_caps,wds:{server.url}/wds_toy"
    server.drop(SHARD, after_bytes=700, times=None)
    code, found, text = run(cli, tmp_path, tasks, "out")
    assert code != 0 and set(found) == {"wds/caps"}, text  # nothing partial of wds/toy
    caps_gets = shard_gets(server, "wds_caps")
    assert caps_gets > 0
    server.clear()
    code, found, _ = run(cli, tmp_path, tasks, "out")
    assert code == 0 and set(found) == {"wds/caps", "wds/toy"}
    assert shard_gets(server, "wds_caps") == caps_gets  # the finished task was not redone
    _, local, _ = run(cli, tmp_path, f"wds:{data / 'wds_toy'}", "local", "--no-cache")
    assert found["wds/toy"] == local["wds/toy"]


def test_huggingface_tree_url_reads_through_resolve():
    from itra_bench.tasks.wds.plugin import remote_folder

    assert remote_folder("https://huggingface.co/datasets/clip-benchmark/wds_vtab-cifar10/"
                         "tree/main") == \
        "https://huggingface.co/datasets/clip-benchmark/wds_vtab-cifar10/resolve/main"
    assert remote_folder("https://example.org/wds_x/") == "https://example.org/wds_x"


def test_an_encoding_interrupted_midway_resumes_from_its_chunks(cli, tmp_path, data, server,
                                                               monkeypatch):
    """The remote split's identity (from the server's ETags) is the same on the rerun, so the
    chunks the interrupted run encoded are used, not encoded again."""
    from itra_test_plugin import PixelModel

    encode = PixelModel.encode_image
    calls = {"n": 0}

    def interrupted(self, images):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # as Ctrl-C, after two batches (two chunks) were encoded
        return encode(self, images)

    task = f"wds:{server.url}/wds_toy"
    chunked = ("--cache-chunk-rows", "4", "--batch-size", "4")
    monkeypatch.setattr(PixelModel, "encode_image", interrupted)
    code, found, _ = run(cli, tmp_path, task, "out", *chunked)
    assert code != 0 and found == {}
    monkeypatch.setattr(PixelModel, "encode_image", encode)
    code, found, text = run(cli, tmp_path, task, "out", *chunked)
    assert code == 0 and "resuming the encoding at row 8 of 15" in text, text
    _, local, _ = run(cli, tmp_path, f"wds:{data / 'wds_toy'}", "local", "--no-cache")
    assert found == local


def test_kept_shards_spare_fetching_for_the_next_model(cli, tmp_path, data, server,
                                                      monkeypatch):
    monkeypatch.setenv("ITRA_BENCH_SHARD_CACHE", str(tmp_path / "shards"))
    url = f"wds:{server.url}/wds_toy"
    assert run(cli, tmp_path, url, "one")[0] == 0
    assert shard_gets(server) == 4 and len(list((tmp_path / "shards").glob("*.tar"))) == 4
    # Another model must encode: its shards come from the kept copies, not the server.
    code, found, _ = run(cli, tmp_path, url, "two", model="pixel:dim16")
    _, local, _ = run(cli, tmp_path, f"wds:{data / 'wds_toy'}", "local", "--no-cache",
                      model="pixel:dim16")
    assert code == 0 and found == local and shard_gets(server) == 4
    # A shard the server changed (a new version) is fetched again, and only that one.
    _change_shard(data)
    code, found, _ = run(cli, tmp_path, url, "three", model="pixel:dim16")
    _, local, _ = run(cli, tmp_path, f"wds:{data / 'wds_toy'}", "local2", "--no-cache",
                      model="pixel:dim16")
    assert code == 0 and found == local
    assert shard_gets(server) == 5 and server.count(SHARD, "GET") == 2
