"""itra-train on WebDataset shards read from URLs and ``pipe:`` commands.

The shards of tests/test_wds_train.py (64 digits, 8 a shard) are served by a real HTTP server
on 127.0.0.1 (tests/helpers/shard_server.py) that can answer 404/403/503 and drop
connections mid-body. A run from URLs must train exactly as the run from the local files
(weights with ``torch.equal``, per-epoch records bit for bit): retries resume the stream
where it stopped, so the bytes read, and hence the training, do not change. The network
failing for good stops the run with the URL, under ``--skip-corrupt`` too; a damaged shard
is handled as a local one.
"""

from __future__ import annotations

import gzip
import re
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from shard_server import ShardServer
from train_data import epoch_records, train_run
from wds_shards import digits_shards, write_tar

from itra_train import checkpoint, wds_data
from itra_train.trainer import Trainer
from itra_train.wds_data import ShardError, read_shard

ROWS, PER_SHARD, SHARDS = 64, 8, 8
SMALL = ("--batch-size", "16", "--train-num-samples", str(ROWS))
PATTERN = "shards/{00000..00007}.tar"
#: The shard the faults are put on.
VICTIM = "shards/00003.tar"


pytestmark = pytest.mark.usefixtures("quick_network_retries")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A folder holding ``shards/00000.tar .. 00007.tar`` (the served folder)."""
    folder = tmp_path_factory.mktemp("wds-urls")
    assert len(digits_shards(folder, ROWS, PER_SHARD)) == SHARDS
    return folder


@pytest.fixture
def server(root):
    with ShardServer(root) as srv:
        yield srv


def _outcome(folder: Path, epochs: int) -> tuple[list[dict], dict[str, torch.Tensor]]:
    """A finished run's epoch records and its final weights."""
    weights = checkpoint.load(folder / "checkpoints" / f"epoch_{epochs}.pt")["model"]
    return epoch_records(folder), weights


def _assert_same(got: tuple[list[dict], dict], want: tuple[list[dict], dict]) -> None:
    assert got[0] == want[0]  # losses, lr and counts of every epoch, bit for bit
    assert got[1].keys() == want[1].keys()
    for key in want[1]:
        assert torch.equal(got[1][key], want[1][key]), key


_LOCAL: dict[tuple[str, ...], tuple[list[dict], dict]] = {}


@pytest.fixture(scope="module")
def local_logs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("local-runs")


@pytest.fixture
def local_run(train, root, local_logs) -> Callable[..., tuple[list[dict], dict]]:
    """The outcome of the same run from the local shard files (run once per set of flags)."""

    def run(*flags: str) -> tuple[list[dict], dict]:
        if flags not in _LOCAL:
            name = f"local{len(_LOCAL)}"
            res = train_run(train, root / PATTERN, local_logs, *SMALL, *flags, name=name)
            assert res.code == 0, res
            epochs = int(flags[flags.index("--epochs") + 1])
            _LOCAL[flags] = _outcome(local_logs / name, epochs)
        return _LOCAL[flags]

    return run


# -- the same bytes from anywhere train the same ------------------------------------------------

def test_a_run_from_http_urls_in_two_workers_equals_the_run_from_the_local_files(
        train, server, local_run, tmp_path):
    flags = ("--epochs", "2", "--workers", "2")
    url = server.url_for("shards") + "/{00000..00007}.tar"
    res = train_run(train, url, tmp_path, *SMALL, *flags)
    assert res.code == 0, res
    _assert_same(_outcome(tmp_path / "run", 2), local_run(*flags))
    assert "webdataset: 8 shard(s), 64 samples an epoch" in \
        (tmp_path / "run" / "out.log").read_text()
    # Every shard was read in each epoch, in the forked workers (a worker also opens the
    # first shard of its next pass, to see that the current one has ended).
    assert min(server.count(f"shards/{i:05d}.tar", "GET") for i in range(SHARDS)) >= 2


@pytest.mark.parametrize("kind", ["pipe", "file"])
def test_a_run_from_pipe_commands_or_file_urls_equals_the_run_from_the_local_files(
        train, root, local_run, tmp_path, kind):
    flags = ("--epochs", "1", "--workers", "0")
    # The braces of a pipe: command expand over the whole command (open_clip's way).
    data = f"pipe:cat {root / PATTERN}" if kind == "pipe" else f"file://{root / PATTERN}"
    res = train_run(train, data, tmp_path, *SMALL, *flags)
    assert res.code == 0, res
    _assert_same(_outcome(tmp_path / "run", 1), local_run(*flags))


def test_shards_over_http_and_pipes_read_as_the_local_files(root, server, tmp_path):
    """Plain and gzip-compressed shards give the same samples over HTTP, a pipe: command and
    a file:// URL as from the file."""
    local = root / VICTIM
    packed = root / "packed.tar.gz"
    packed.write_bytes(gzip.compress(local.read_bytes()))
    try:
        want = list(read_shard(local, 3))
        assert len(want) == PER_SHARD
        for where in (server.url_for(VICTIM), server.url_for("packed.tar.gz"),
                      f"pipe:cat {local}", f"pipe:cat {packed}", f"file://{local}"):
            assert list(read_shard(where, 3)) == want, where
    finally:
        packed.unlink()


# -- refused before training ------------------------------------------------------------------

@pytest.mark.parametrize(("status", "words"), [(404, "shard not found: {}"),
                                                (403, "shard {}: access refused")])
def test_a_missing_or_refused_shard_url_stops_the_run_before_any_step(
        train, server, tmp_path, status, words):
    # Every time: fsspec asks again with GET when HEAD fails.
    server.fail(VICTIM, status, times=None)
    url = server.url_for("shards") + "/{00000..00007}.tar"
    res = train_run(train, url, tmp_path, *SMALL, "--epochs", "1", "--workers", "0")
    assert res.code == 2, res
    assert words.format(server.url_for(VICTIM)) in res.err, res.err
    assert f"HTTP {status}" in res.err and f"--train-data {url!r}" in res.err, res.err
    assert "Traceback" not in res.err
    assert not list(tmp_path.rglob("*.pt")) and not list(tmp_path.rglob("results.jsonl"))
    # Only the check asked for the shards: none was read for training.
    assert all(server.count(f"shards/{i:05d}.tar", "GET") == 0 for i in range(SHARDS)
               if i != 3)


def test_an_empty_shard_url_is_refused_before_training(train, server, root, tmp_path):
    (root / "empty.tar").write_bytes(b"")
    try:
        url = server.url_for("empty.tar")
        res = train_run(train, f"{server.url_for('shards')}/{{00000..00007}}.tar::{url}",
                        tmp_path, *SMALL)
    finally:
        (root / "empty.tar").unlink()
    assert res.code == 2 and f"shard {url} is empty (0 bytes)" in res.err, res


def test_urls_of_a_pipe_command_and_signed_urls_are_taken_for_shards():
    from itra_train.wds_data import looks_like_shards

    assert looks_like_shards("http://127.0.0.1:8000/shards/{00000..00007}.tar")
    assert looks_like_shards("pipe:cat /data/shards/{00000..00007}.tar")
    assert looks_like_shards("pipe:aws s3 cp s3://bucket/{00000..00007}.tar -")
    assert looks_like_shards("https://host/a/{0..3}.tar?X-Amz-Signature=abc")
    assert not looks_like_shards("https://host/train.csv")
    assert not looks_like_shards("pipe:cat train.csv")


# -- a flaky network: retried, resumed, the same training; or one clear stop -----------------

def test_503_twice_then_ok_trains_as_the_local_files(train, server, local_run, tmp_path,
                                                     monkeypatch):
    original = wds_data.expand_shards

    def checked_then_failing(spec: str) -> list[str]:
        # After the check at start-up, so that the failures meet the read itself.
        shards = original(spec)
        server.fail(VICTIM, 503, times=2)
        return shards

    monkeypatch.setattr(wds_data, "expand_shards", checked_then_failing)
    flags = ("--epochs", "1", "--workers", "0")
    url = server.url_for("shards") + "/{00000..00007}.tar"
    res = train_run(train, url, tmp_path, *SMALL, *flags)
    assert res.code == 0, res
    _assert_same(_outcome(tmp_path / "run", 1), local_run(*flags))
    # The two failures were met and answered with retries: two requests more than a shard
    # without faults.
    assert server.count(VICTIM) == server.count("shards/00004.tar") + 2


def test_a_connection_dropped_mid_shard_resumes_and_trains_as_the_local_files(
        train, server, local_run, tmp_path):
    server.drop(VICTIM, 1000)
    flags = ("--epochs", "1", "--workers", "0")
    url = server.url_for("shards") + "/{00000..00007}.tar"
    res = train_run(train, url, tmp_path, *SMALL, *flags)
    assert res.code == 0, res
    _assert_same(_outcome(tmp_path / "run", 1), local_run(*flags))
    # The dropped read, and the one that resumed it: one more than a shard without faults.
    assert server.count(VICTIM, "GET") == server.count("shards/00004.tar", "GET") + 1


def test_a_connection_that_keeps_dropping_stops_the_run_and_it_resumes_later(
        train, server, local_run, tmp_path, monkeypatch):
    original = Trainer.train_one_epoch

    def network_down_in_epoch_2(self: Trainer, epoch: int) -> dict:
        if epoch == 1:
            server.drop(VICTIM, 1000, times=None)
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "train_one_epoch", network_down_in_epoch_2)
    flags = ("--epochs", "2", "--workers", "0")
    url = server.url_for("shards") + "/{00000..00007}.tar"
    res = train_run(train, url, tmp_path, *SMALL, *flags)
    assert res.code == 2, res
    assert f"shard {server.url_for(VICTIM)} could not be read after 3 tries" in res.err, res
    assert "Traceback" not in res.err
    # Epoch 1 stays saved; once the network is back, the run resumes from it and ends as an
    # uninterrupted run from the local files.
    assert (tmp_path / "run" / "checkpoints" / "epoch_1.pt").is_file()
    assert not (tmp_path / "run" / "checkpoints" / "epoch_2.pt").exists()
    monkeypatch.setattr(Trainer, "train_one_epoch", original)
    server.clear()
    res = train_run(train, url, tmp_path, *SMALL, *flags, "--resume", "latest")
    assert res.code == 0, res
    _assert_same(_outcome(tmp_path / "run", 2), local_run(*flags))


def test_skip_corrupt_does_not_skip_a_shard_the_network_fails_to_deliver(
        train, server, tmp_path):
    server.drop(VICTIM, 1000, times=None)
    url = server.url_for("shards") + "/{00000..00007}.tar"
    res = train_run(train, url, tmp_path, *SMALL, "--epochs", "1", "--workers", "0",
                    "--skip-corrupt")
    assert res.code == 2, res
    assert f"shard {server.url_for(VICTIM)} could not be read after 3 tries" in res.err, res
    assert "Traceback" not in res.err and not list(tmp_path.rglob("*.pt"))


# -- a damaged shard on the server: as a local one --------------------------------------------

def test_a_truncated_shard_over_http_is_named_and_skip_corrupt_counts_it(
        train, server, tmp_path):
    # The local test's "cut short" shard (tests/test_wds_train.py): a sample, then one whose
    # image is cut 20 bytes in; served whole and consistently, so only the tar shows the cut.
    from wds_shards import png

    folder = tmp_path / "served"
    bad = write_tar(folder / "bad.tar", [("ok1.png", png(3)), ("ok1.txt", b"a digit"),
                                         ("ok2.png", png(3)), ("ok2.txt", b"a digit")])
    with tarfile.open(bad) as tar:
        cut = tar.getmember("ok2.png").offset_data + 20
    bad.write_bytes(bad.read_bytes()[:cut])
    message = "member 'ok2.png' is damaged or cut short"
    with ShardServer(folder) as other:
        url = other.url_for("bad.tar")
        data = f"{server.url_for('shards')}/{{00000..00007}}.tar::{url}"
        res = train_run(train, data, tmp_path, *SMALL, "--epochs", "1", name="stops")
        assert res.code == 2, res
        assert f"shard {url}: {message}" in res.err, res.err
        assert "Traceback" not in res.err

        res = train_run(train, data, tmp_path, *SMALL, "--epochs", "1", "--skip-corrupt",
                        name="skips")
        assert res.code == 0, res
    [record] = epoch_records(tmp_path / "skips")
    assert record["skipped_corrupt"] == 1 and record["repeated_samples"] == 0
    log = (tmp_path / "skips" / "out.log").read_text()
    assert "--skip-corrupt skipped 1 sample(s)" in log and f"shard {url}: {message}" in log


@pytest.mark.parametrize("packed", [False, True])
def test_a_shard_cut_between_members_over_http_is_never_taken_as_shorter(
        root, tmp_path, packed):
    """A shard that ends after a whole member (no end-of-archive blocks; for .tar.gz, a gzip
    stream cut short) is refused naming its URL, not read as a shard with fewer samples."""
    whole = (root / VICTIM).read_bytes()
    with tarfile.open(root / VICTIM) as tar:
        members = tar.getmembers()
        cut = members[4].offset  # after the first two samples, at a header
    folder = tmp_path / "served"
    folder.mkdir()
    name = "cut.tar.gz" if packed else "cut.tar"
    (folder / name).write_bytes(gzip.compress(whole)[: len(gzip.compress(whole)) // 2]
                                if packed else whole[:cut])
    with ShardServer(folder) as srv:
        url = srv.url_for(name)
        with pytest.raises(ShardError, match=re.escape(f"shard {url}")):
            for _ in read_shard(url, 0):
                pass


def test_a_shard_url_given_twice_is_refused(server):
    from itra_bench import UserError

    url = server.url_for(VICTIM)
    with pytest.raises(UserError, match="names shard .* twice"):
        wds_data.expand_shards(f"{server.url_for('shards')}/{{00000..00007}}.tar::{url}")


def test_the_local_shards_keep_their_checks(root, tmp_path):
    """Local patterns still name the first missing file; the shard list holds strings."""
    from itra_bench import MissingDataError

    shutil.copy(root / VICTIM, tmp_path / "00003.tar")
    assert wds_data.expand_shards(str(tmp_path / "00003.tar")) == [str(tmp_path / "00003.tar")]
    with pytest.raises(MissingDataError, match="matches no file: the first missing is"):
        wds_data.expand_shards(str(tmp_path / "{00010..00011}.tar"))


def test_a_bad_retry_setting_is_one_message_before_training(train, root, tmp_path,
                                                           monkeypatch):
    # pipe: commands are not checked in advance, so without a check of its own the setting
    # would first be read in the DataLoader workers, whose errors come with a traceback.
    monkeypatch.setenv("ITRA_BENCH_NET_ATTEMPTS", "zero")
    res = train_run(train, f"pipe:cat {root / PATTERN}", tmp_path, *SMALL, "--epochs", "1",
                    "--workers", "2")
    assert res.code == 2, res
    assert "ITRA_BENCH_NET_ATTEMPTS='zero': expected a positive integer" in res.err, res.err
    assert "Traceback" not in res.err and not list(tmp_path.rglob("*.pt"))
