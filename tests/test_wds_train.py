"""itra-train on WebDataset shards (``--dataset-type webdataset``, open_clip's flags).

Shards are written from the digits CSV by the ``ShardWriter`` recipe of
docs/training/shards.md (``wds_shards.csv_to_shards``, held to the page's code below): 64
samples, 8 a shard. Sample ids are ``shard << 32 | position``, so the ids a run trained on say
which shards and samples it read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import doc_pages
import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from train_data import digits_csv, epoch_records, train_run
from wds_shards import csv_to_shards, digits_shards, png, write_tar
from wds_train_check import install

from itra_train import checkpoint
from itra_train.wds_data import POSITION_BITS, WebDatasetImageText

HELPERS = Path(__file__).parent / "helpers"
ROWS, PER_SHARD, SHARDS = 64, 8, 8
EVERY_ID = {(s << POSITION_BITS) | p for s in range(SHARDS) for p in range(PER_SHARD)}
SMALL = ("--batch-size", "16", "--train-num-samples", str(ROWS))


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """``folder/shards/00000.tar .. 00007.tar``; returns the brace pattern."""
    folder = tmp_path_factory.mktemp("wds")
    assert len(digits_shards(folder, ROWS, PER_SHARD)) == SHARDS
    return folder / "shards" / "{00000..00007}.tar"


def _tensor(img) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img, dtype=np.float32))


def _epoch_ids(pattern: Path, rank: int, world: int, workers: int, epoch: int,
               resampled: bool = False, batch: int = 8) -> list[list[int]]:
    """The ids of each batch rank ``rank`` gets in ``epoch``, through a real DataLoader."""
    from itra_train.wds_data import expand_shards

    batches = ROWS // (batch * world)
    data = WebDatasetImageText(expand_shards(str(pattern)), batch, batches, rank, world,
                               seed=3, resampled=resampled, transform=_tensor)
    data.set_epoch(epoch)
    loader = DataLoader(data, batch_size=None, num_workers=workers)
    return [b.indices.tolist() for b in loader]


def _members(shard: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(shard) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]


def test_the_docs_recipe_writes_what_the_tests_shards_are_written_with(tmp_path, monkeypatch):
    """The recipe of docs/training/shards.md, run as printed beside a train.csv, writes the
    samples that wds_shards.csv_to_shards (which makes the shards of these tests) writes."""
    recipe = [b.body for b in doc_pages.blocks("training/shards.md") if b.lang == "python"]
    assert len(recipe) == 1 and "ShardWriter" in recipe[0]
    csv = digits_csv(tmp_path, 16)
    (tmp_path / "train.csv").write_text(csv.read_text())
    monkeypatch.chdir(tmp_path)
    exec(compile(recipe[0], "docs/training/shards.md", "exec"), {"__name__": "recipe"})
    written = sorted((tmp_path / "shards").glob("*.tar"))
    (tmp_path / "helper").mkdir()
    expected = csv_to_shards(csv, str(tmp_path / "helper" / "%05d.tar"), 10000)
    assert [p.name for p in written] == [p.name for p in expected] == ["00000.tar"]
    assert _members(written[0]) == _members(expected[0])
    assert len(_members(written[0])) == 2 * 16  # an image and a caption a sample


def test_an_epoch_reads_every_sample_once_across_ranks_and_workers(shards):
    for epoch in (0, 1):
        per_reader: dict[tuple[int, int], set[int]] = {}
        seen: list[int] = []
        for rank in (0, 1):
            batches = _epoch_ids(shards, rank, 2, 2, epoch)
            assert len(batches) == ROWS // (8 * 2)  # the same count on every rank
            for p, ids in enumerate(batches):
                per_reader.setdefault((rank, p % 2), set()).update(i >> POSITION_BITS
                                                                    for i in ids)
                seen.extend(ids)
        assert len(seen) == len(set(seen)) == ROWS and set(seen) == EVERY_ID
        # Each shard is read by one (rank, worker) only.
        readers = list(per_reader.values())
        assert sum(map(len, readers)) == len(set().union(*readers)) == SHARDS
    # Epochs differ; an epoch replays exactly.
    assert _epoch_ids(shards, 0, 2, 2, 0) == _epoch_ids(shards, 0, 2, 2, 0)
    assert _epoch_ids(shards, 0, 2, 2, 0) != _epoch_ids(shards, 0, 2, 2, 1)


def test_resampled_shards_are_seeded_by_epoch(shards):
    first = _epoch_ids(shards, 0, 1, 0, 0, resampled=True)
    assert first == _epoch_ids(shards, 0, 1, 0, 0, resampled=True)
    assert first != _epoch_ids(shards, 0, 1, 0, 1, resampled=True)
    ids = [i for b in first for i in b]
    assert len(ids) == ROWS and set(ids) <= EVERY_ID


def test_trains_from_readme_recipe_shards_and_resume_equals_an_uninterrupted_run(
        train, shards, tmp_path, monkeypatch):
    straight, resumed = tmp_path / "ids-straight", tmp_path / "ids-resumed"
    for out in (straight, resumed):
        out.mkdir()
    common = ("--epochs", "2", "--workers", "2", *SMALL)
    install(straight, -1, monkeypatch.setattr)
    res = train_run(train, shards, tmp_path, *common, name="straight")
    assert res.code == 0, res
    install(resumed, 1, monkeypatch.setattr)
    assert train_run(train, shards, tmp_path, *common, name="resumed").code == 130
    install(resumed, -1, monkeypatch.setattr)
    res = train_run(train, shards, tmp_path, *common, "--resume", "latest", name="resumed")
    assert res.code == 0, res

    # --dataset-type auto took the .tar pattern for shards.
    assert "webdataset: 8 shard(s), 64 samples an epoch" in \
        (tmp_path / "straight" / "out.log").read_text()
    a, b = epoch_records(tmp_path / "straight"), epoch_records(tmp_path / "resumed")
    assert [r["step"] for r in a] == [4, 8]
    assert a == b  # losses, lr and counts, bit for bit
    assert all(r["skipped_corrupt"] == 0 and r["repeated_samples"] == 0 for r in a)
    for epoch in range(2):
        ids = json.loads((straight / f"rank0_epoch{epoch}.json").read_text())
        assert len(ids) == ROWS and set(ids) == EVERY_ID
        if epoch:
            assert ids == json.loads((resumed / f"rank0_epoch{epoch}.json").read_text())
    wa = checkpoint.load(tmp_path / "straight" / "checkpoints" / "epoch_2.pt")["model"]
    wb = checkpoint.load(tmp_path / "resumed" / "checkpoints" / "epoch_2.pt")["model"]
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def test_shards_are_read_as_webdataset_reads_them(shards, tmp_path):
    """Plain, gzip-compressed and long-name (pax header) shards give the samples, keys and
    bytes that the webdataset library's own reader gives."""
    import gzip

    import webdataset as wds

    from itra_train.wds_data import read_shard

    plain = Path(str(shards).replace("{00000..00007}", "00003"))
    packed = tmp_path / "packed.tar.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    long = tmp_path / "long.tar"
    with wds.TarWriter(str(long)) as sink:
        for i in range(3):
            sink.write({"__key__": f"dir/{'k' * 120}{i}", "png": png(i), "txt": f"cap {i}"})
    for shard in (plain, packed, long):
        ours = [(key, members) for _, key, members in read_shard(shard, 0)]
        theirs = [(s["__key__"], {k: v for k, v in s.items() if not k.startswith("__")})
                  for s in wds.WebDataset(str(shard), shardshuffle=False)]
        assert ours == theirs and len(ours) in (PER_SHARD, 3), shard


# -- refused at start-up --------------------------------------------------------------------

def test_a_pattern_that_matches_no_file_names_it(train, shards, tmp_path):
    res = train_run(train, shards.parent / "{00010..00012}.tar", tmp_path, *SMALL)
    assert res.code == 2 and "{00010..00012}.tar' matches no file" in res.err, res
    assert "00010.tar" in res.err
    both = f"{shards}::{shards.parent / '{00007..00009}.tar'}"
    res = train_run(train, both, tmp_path, *SMALL)
    assert res.code == 2 and "names 3 shards, 2 of which do not exist" in res.err, res
    assert "the first missing is" in res.err and "00008.tar" in res.err
    twice = f"{shards}::{shards.parent / '00003.tar'}"
    res = train_run(train, twice, tmp_path, *SMALL)
    assert res.code == 2 and "00003.tar twice" in res.err, res


@pytest.mark.parametrize("content", [b"", b"\0" * 10240])
def test_an_empty_shard_is_named(train, shards, tmp_path, content):
    empty = tmp_path / "empty.tar"
    empty.write_bytes(content)
    res = train_run(train, f"{shards}::{empty}", tmp_path, *SMALL)
    assert res.code == 2 and f"shard {empty}" in res.err, res
    assert ("empty (0 bytes)" if not content else "holds no samples") in res.err


def test_fewer_shards_than_readers_is_refused_with_the_counts(train, shards, tmp_path):
    res = train_run(train, shards, tmp_path, *SMALL, "--workers", "9")
    assert res.code == 2, res
    assert "8 shard(s), fewer than the 1 process(es) x 9 --workers = 9 readers" in res.err
    assert "--dataset-resampled" in res.err


def test_webdataset_needs_the_samples_per_epoch(train, shards, tmp_path):
    res = train_run(train, shards, tmp_path, "--batch-size", "16")
    assert res.code == 2 and "--train-num-samples" in res.err, res


def test_skip_corrupt_is_refused_for_a_csv(train, tmp_path):
    data = digits_csv(tmp_path / "d", 40)
    res = train_run(train, data, tmp_path, "--skip-corrupt")
    assert res.code == 2 and "--skip-corrupt applies to webdataset shards" in res.err, res


# -- bad samples: one message naming shard and key; --skip-corrupt counts them ----------------

def _good(key: str) -> list[tuple[str, bytes]]:
    return [(f"{key}.png", png(len(key))), (f"{key}.txt", b"a digit")]


def _bad_shard(path: Path, case: str) -> Path:
    members = _good("ok1")
    if case == "no image":
        members += [("bad.txt", b"a caption alone")]
    elif case == "no caption":
        members += [("bad.png", png(1))]
    elif case == "undecodable":
        members += [("bad.jpg", b"not a jpeg at all"), ("bad.txt", b"x")]
    members += _good("ok2")
    write_tar(path, members)
    if case == "damaged header":
        with tarfile.open(path) as tar:
            offset = tar.getmember("ok2.png").offset
        data = bytearray(path.read_bytes())
        data[offset:offset + 512] = b"x" * 512
        path.write_bytes(bytes(data))
    elif case == "cut short":
        with tarfile.open(path) as tar:
            cut = tar.getmember("ok2.png").offset_data + 20
        path.write_bytes(path.read_bytes()[:cut])
    return path


@pytest.mark.parametrize(("case", "message"), [
    ("no image", "sample 'bad': no image (none of the keys jpg, jpeg, png, webp; it has txt)"),
    ("no caption", "sample 'bad': no caption (key 'txt'; it has png)"),
    ("undecodable", "sample 'bad': cannot decode image 'jpg'"),
    ("damaged header", "is damaged: no valid tar header at byte"),
    ("cut short", "member 'ok2.png' is damaged or cut short"),
])
def test_a_bad_sample_names_shard_and_key_and_skip_corrupt_counts_it(
        train, shards, tmp_path, case, message):
    bad = _bad_shard(tmp_path / "bad.tar", case)
    data = f"{shards}::{bad}"
    res = train_run(train, data, tmp_path, *SMALL, "--epochs", "1", name="stops")
    assert res.code == 2, res
    assert f"shard {bad}" in res.err and message in res.err, res.err
    assert "Traceback" not in res.err

    res = train_run(train, data, tmp_path, *SMALL, "--epochs", "1", "--skip-corrupt",
                    name="skips")
    assert res.code == 0, res
    [record] = epoch_records(tmp_path / "skips")
    assert record["skipped_corrupt"] == 1 and record["repeated_samples"] == 0
    log = (tmp_path / "skips" / "out.log").read_text()
    assert "--skip-corrupt skipped 1 sample(s)" in log and message in log


# -- two processes ----------------------------------------------------------------------------

def _torchrun(out: Path, crash: int, *args: object) -> int:
    """``itra-train ARGS`` in 2 processes, recording sample ids in ``out``; interrupted when
    epoch ``crash`` starts (-1: never, and the run must succeed)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           str(HELPERS / "wds_train_check.py"), str(out), str(crash), "--",
           *map(str, args)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    if crash < 0:
        assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.returncode


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                    reason="torch was built without torch.distributed / gloo")
def test_two_processes_read_disjoint_shards_and_resume_equals_an_uninterrupted_run(
        shards, tmp_path):
    from train_data import TINY

    common = ["--train-data", shards, "--logs", tmp_path, *TINY, "--batch-size", "8",
              "--train-num-samples", ROWS, "--workers", "2", "--epochs", "2"]
    straight, resumed = tmp_path / "ids-straight", tmp_path / "ids-resumed"
    _torchrun(straight, -1, *common, "--name", "straight")
    # Resuming from the epoch-1 checkpoint is what a run interrupted in epoch 2 does (the
    # in-process test above interrupts one); the run folder's missing lines are restored.
    _torchrun(resumed, -1, *common, "--name", "resumed", "--resume",
              tmp_path / "straight" / "checkpoints" / "epoch_1.pt")

    for epoch in range(2):
        ranks = [json.loads((straight / f"rank{r}_epoch{epoch}.json").read_text())
                 for r in (0, 1)]
        assert len(ranks[0]) == len(ranks[1]) == ROWS // 2  # ranks stay in step
        seen = ranks[0] + ranks[1]
        assert len(set(seen)) == ROWS and set(seen) == EVERY_ID
        assert {i >> POSITION_BITS for i in ranks[0]}.isdisjoint(
            {i >> POSITION_BITS for i in ranks[1]})
    for r in (0, 1):
        assert (straight / f"rank{r}_epoch1.json").read_text() == \
            (resumed / f"rank{r}_epoch1.json").read_text()
    a, b = epoch_records(tmp_path / "straight"), epoch_records(tmp_path / "resumed")
    assert [r["step"] for r in a] == [4, 8] and a == b
    wa = checkpoint.load(tmp_path / "straight" / "checkpoints" / "epoch_2.pt")["model"]
    wb = checkpoint.load(tmp_path / "resumed" / "checkpoints" / "epoch_2.pt")["model"]
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
