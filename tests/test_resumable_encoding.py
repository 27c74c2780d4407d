"""Resumable image encoding: a run killed mid-split resumes from the feature cache's chunks and
ends with exactly the features, rows and skipped images of an uninterrupted run."""

from __future__ import annotations

import io
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from helpers.fuzzing import QUICK, THOROUGH
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from rich.console import Console

from itra_bench.context import RunContext
from itra_bench.datasets.image_source import ImageFiles, ImageSource
from itra_bench.encoding import encode_images
from itra_bench.feature_cache import FeatureCache
from itra_bench.progress import ProgressReporter

pytest.importorskip("itra_test_plugin")
from itra_test_plugin import PixelModel  # noqa: E402


class Killed(Exception):
    """Stands for the run being killed (SIGKILL, Ctrl-C, a lost node) mid-encode."""


class DyingPixelModel(PixelModel):
    """PixelModel that dies on its ``die_at``-th batch (1-based); None: never."""

    def __init__(self, die_at: int | None = None) -> None:
        super().__init__()
        self.die_at = die_at
        self.batches = 0

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        self.batches += 1
        if self.batches == self.die_at:
            raise Killed(f"killed at batch {self.batches}")
        return super().encode_image(images)


class Colours(ImageSource):
    """``n`` small images generated in memory; those in ``corrupt`` fail to decode. Counts
    which rows were opened, to show resumed rows are not decoded again."""

    def __init__(self, n: int, corrupt: frozenset[int] = frozenset()) -> None:
        self.n = n
        self.corrupt = corrupt
        self.identity = f"colours-{n}-{sorted(corrupt)}"
        self.opened: list[int] = []

    def __len__(self) -> int:
        return self.n

    def open_image(self, index: int) -> Image.Image:
        self.opened.append(index)
        if index in self.corrupt:
            return Image.open(io.BytesIO(b"not an image"))
        return Image.new("RGB", (10, 10), ((37 * index) % 256, (91 * index) % 256, 7 * index % 256))

    def describe(self, index: int) -> str:
        return f"colour-{index}.png"


class FileImages(ImageFiles):
    """JPEG files on disk (one of them may be truncated on purpose)."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self.identity = "files-" + "-".join(p.name for p in paths)


class RecordingProgress(ProgressReporter):
    """Records each bar's description, total, resumed count and advances."""

    def __init__(self) -> None:
        super().__init__(enabled=False)
        self.bars: list[dict] = []

    @contextmanager
    def bar(self, description, total, unit="it", completed=0):
        record = {"description": description, "total": total, "completed": completed,
                  "advanced": 0}
        self.bars.append(record)

        class _Bar:
            def advance(self, n: int = 1) -> None:
                record["advanced"] += n

        yield _Bar()


def context(cache_dir: Path | None, chunk_rows: int = 5, batch_size: int = 2,
            skip_corrupt: bool = False, workers: int = 0, **kw) -> RunContext:
    cache = None if cache_dir is None else FeatureCache(cache_dir, chunk_rows=chunk_rows)
    return RunContext(batch_size=batch_size, cache=cache, skip_corrupt=skip_corrupt,
                      workers=workers, console=Console(file=io.StringIO(), width=400), **kw)


def killed_run(source: ImageSource, ctx: RunContext, die_at: int) -> None:
    with pytest.raises(Killed):
        encode_images(DyingPixelModel(die_at), source, ctx, split="test")


def assert_same(a, b) -> None:
    assert torch.equal(a.features, b.features)
    assert torch.equal(a.indices, b.indices)
    assert a.skipped == b.skipped


def chunk_files(cache_dir: Path) -> list[Path]:
    return sorted(p for p in cache_dir.rglob("*.pt") if ".chunks" in str(p))


def test_killed_run_resumes_from_its_chunks_and_ends_identical(tmp_path):
    source = Colours(23)
    reference = encode_images(PixelModel(), source, context(tmp_path / "ref"))

    ctx = context(tmp_path / "cache")
    # Chunks of 5 rows in batches of 2: rows 0-4 take batches 1-3, rows 5-9 batches 4-6.
    killed_run(source, ctx, die_at=8)
    assert [p.name for p in chunk_files(tmp_path / "cache")] == [
        "000000000000-000000000005.pt", "000000000005-000000000010.pt"]
    assert not list((tmp_path / "cache").rglob("*.tmp"))
    # The entry is only written once every row is encoded: a partial split is never served.
    assert not [p for p in (tmp_path / "cache").rglob("*.pt") if ".chunks" not in str(p)]

    PixelModel.images_encoded = 0
    source.opened.clear()
    progress = RecordingProgress()
    resumed = encode_images(PixelModel(), source, context(tmp_path / "cache", progress=progress),
                            split="test")
    assert PixelModel.images_encoded == 13
    assert source.opened == list(range(10, 23))  # the loader starts at the first missing row
    assert_same(resumed, reference)
    bar, = progress.bars
    assert bar["completed"] == 10 and bar["advanced"] == 13 and bar["total"] == 23
    assert "resumed at 10" in bar["description"]
    # Consolidated into the normal entry; the chunks are gone, the next run is a cache hit.
    assert chunk_files(tmp_path / "cache") == []
    PixelModel.images_encoded = 0
    assert_same(encode_images(PixelModel(), source, context(tmp_path / "cache")), reference)
    assert PixelModel.images_encoded == 0


def test_killed_again_while_resuming_keeps_both_runs_chunks(tmp_path):
    source = Colours(23)
    reference = encode_images(PixelModel(), source, context(tmp_path / "ref"))
    killed_run(source, context(tmp_path / "cache"), die_at=4)   # rows 0-4 done
    killed_run(source, context(tmp_path / "cache"), die_at=7)   # rows 5-14 done
    assert len(chunk_files(tmp_path / "cache")) == 3
    PixelModel.images_encoded = 0
    assert_same(encode_images(PixelModel(), source, context(tmp_path / "cache")), reference)
    assert PixelModel.images_encoded == 8


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "renamed", "wrong_rows",
                                    "other_total"])
def test_damaged_chunk_is_recomputed_never_read(tmp_path, damage):
    source = Colours(23)
    reference = encode_images(PixelModel(), source, context(tmp_path / "ref"))
    killed_run(source, context(tmp_path / "cache"), die_at=8)
    first, second = chunk_files(tmp_path / "cache")
    if damage == "truncated":
        data = first.read_bytes()
        first.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        first.write_bytes(b"\x00" * 300)
    elif damage == "empty":
        first.write_bytes(b"")
    elif damage == "renamed":
        # Another chunk's (valid) file under this chunk's name: its header tells.
        shutil.copy(second, first)
    elif damage == "wrong_rows":
        # A well-formed file whose rows do not cover its range (e.g. written by a buggy tool).
        data = torch.load(first, weights_only=True)
        data["indices"], data["features"] = data["indices"][:-1], data["features"][:-1]
        torch.save(data, first)
    else:
        # Rows right, but written for a source of another length under the same key.
        data = torch.load(first, weights_only=True)
        data["chunk"]["total"] = 99
        torch.save(data, first)
    # Debris of a write that was itself killed is never taken for a chunk.
    (first.parent / f".{first.name}.abc123.tmp").write_bytes(b"\x80half")
    PixelModel.images_encoded = 0
    assert_same(encode_images(PixelModel(), source, context(tmp_path / "cache")), reference)
    assert PixelModel.images_encoded == 23 - 5  # only the damaged chunk (and the rest) again


class BatchRecordingModel(PixelModel):
    """PixelModel that records the size of every batch it encodes."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        self.sizes.append(len(images))
        return super().encode_image(images)


def test_resume_with_another_batch_size_and_workers(tmp_path):
    # A model's features may differ in their last bits between batch sizes (this one's do on
    # CPU between 1 and 4), so the rest of the split is encoded in the first run's batches.
    source = Colours(23)
    reference = encode_images(PixelModel(), source, context(tmp_path / "ref", batch_size=2))
    killed_run(source, context(tmp_path / "cache", batch_size=2), die_at=8)
    model = BatchRecordingModel()
    ctx = context(tmp_path / "cache", batch_size=3, workers=1)
    resumed = encode_images(model, source, ctx)
    assert sum(model.sizes) == 13 and set(model.sizes) <= {1, 2}
    assert_same(resumed, reference)
    note = ctx.console.file.getvalue()
    assert "in batches of 2" in note and "--batch-size 3" in note and ".chunks" in note
    # Without chunks to resume, the run's own batch size is used.
    model = BatchRecordingModel()
    encode_images(model, Colours(7), context(tmp_path / "cache", batch_size=3))
    assert model.sizes == [3, 2, 2]  # chunks of 5 rows: 3 + 2, then 2


def test_resume_under_skip_corrupt_skips_the_same_images(tmp_path):
    # Row 3 is corrupt, and rows 5-9 (a whole chunk) are: its chunk holds no features.
    source = Colours(23, corrupt=frozenset({3, 5, 6, 7, 8, 9, 17}))
    reference = encode_images(PixelModel(), source,
                              context(tmp_path / "ref", skip_corrupt=True))
    assert reference.skipped == [f"colour-{i}.png" for i in (3, 5, 6, 7, 8, 9, 17)]
    # Batches: rows 0-4 -> 3 (one row corrupt); rows 5-9 -> none reach the model; rows 10-14 -> 3.
    killed_run(source, context(tmp_path / "cache", skip_corrupt=True), die_at=7)
    assert len(chunk_files(tmp_path / "cache")) == 3
    PixelModel.images_encoded = 0
    resumed = encode_images(PixelModel(), source, context(tmp_path / "cache", skip_corrupt=True))
    assert PixelModel.images_encoded == 7  # rows 15-22 less corrupt row 17
    assert_same(resumed, reference)


def test_chunks_of_another_chunk_size_are_not_mixed(tmp_path):
    source = Colours(23)
    reference = encode_images(PixelModel(), source, context(tmp_path / "ref"))
    killed_run(source, context(tmp_path / "cache", chunk_rows=5), die_at=8)
    PixelModel.images_encoded = 0
    ctx = context(tmp_path / "cache", chunk_rows=4)
    assert_same(encode_images(PixelModel(), source, ctx), reference)
    assert PixelModel.images_encoded == 23
    note = ctx.console.file.getvalue()
    assert "5 rows per chunk" in note and "not reused" in note


def test_chunks_of_other_data_are_not_reused(tmp_path):
    # Same length, other images: a different cache key, so no chunk of the first is served.
    killed_run(Colours(23), context(tmp_path / "cache"), die_at=8)
    other = Colours(23, corrupt=frozenset({22}))
    PixelModel.images_encoded = 0
    encode_images(PixelModel(), other, context(tmp_path / "cache", skip_corrupt=True))
    assert PixelModel.images_encoded == 22


def test_without_cache_the_features_are_the_same(tmp_path):
    source = Colours(23, corrupt=frozenset({4}))
    cached = encode_images(PixelModel(), source, context(tmp_path / "c", skip_corrupt=True))
    uncached = encode_images(PixelModel(), source, context(None, skip_corrupt=True))
    assert_same(cached, uncached)


def test_files_on_disk_and_corrupt_image_without_skip(tmp_path):
    from itra_bench.errors import CorruptImageError

    paths = []
    for i in range(12):
        p = tmp_path / f"{i:02d}.jpg"
        Image.new("RGB", (16, 16), (20 * i, 5, 100)).save(p)
        paths.append(p)
    paths[9].write_bytes(paths[9].read_bytes()[:40])
    source = FileImages(paths)
    with pytest.raises(CorruptImageError, match="09.jpg"):
        encode_images(PixelModel(), source, context(tmp_path / "cache", chunk_rows=4))
    # Rows 0-7 were encoded before the corrupt image stopped the run; skipping resumes there.
    assert len(chunk_files(tmp_path / "cache")) == 2
    Image.new("RGB", (16, 16)).save(paths[9])
    PixelModel.images_encoded = 0
    fixed = FileImages(paths)  # (same identity here: the test source keys by name only)
    out = encode_images(PixelModel(), fixed, context(tmp_path / "cache", chunk_rows=4))
    assert PixelModel.images_encoded == 4 and len(out.indices) == 12


KILL_POINTS = dict(n=st.integers(0, 30), chunk_rows=st.integers(1, 8), bs1=st.integers(1, 5),
                   bs2=st.integers(1, 5), die_at=st.integers(1, 20),
                   corrupt=st.frozensets(st.integers(0, 29), max_size=6))


@given(**KILL_POINTS)
@settings(QUICK, max_examples=60)
def test_any_kill_point_resumes_identical(tmp_path_factory, n, chunk_rows, bs1, bs2, die_at,
                                          corrupt):
    check_kill_point(tmp_path_factory, n, chunk_rows, bs1, bs2, die_at, corrupt)


@pytest.mark.slow
@given(**KILL_POINTS)
@settings(THOROUGH, max_examples=300)
def test_any_kill_point_resumes_identical_thorough(tmp_path_factory, n, chunk_rows, bs1, bs2,
                                                   die_at, corrupt):
    check_kill_point(tmp_path_factory, n, chunk_rows, bs1, bs2, die_at, corrupt)


def check_kill_point(tmp_path_factory, n, chunk_rows, bs1, bs2, die_at, corrupt) -> None:
    """Killed at batch ``die_at`` with batch size ``bs1``, resumed with ``bs2``: the features,
    rows and skipped images are an uninterrupted run's, and no chunk is left behind."""
    root = tmp_path_factory.mktemp("resume")
    source = Colours(n, corrupt=frozenset(i for i in corrupt if i < n))
    reference = encode_images(PixelModel(), source,
                              context(root / "ref", chunk_rows, bs1, skip_corrupt=True))
    try:
        encode_images(DyingPixelModel(die_at), source,
                      context(root / "cache", chunk_rows, bs1, skip_corrupt=True))
    except Killed:
        if not chunk_files(root / "cache"):
            # Killed before the first chunk: nothing resumes, the rerun is a fresh bs2 run.
            reference = encode_images(PixelModel(), source,
                                      context(root / "ref2", chunk_rows, bs2, skip_corrupt=True))
    resumed = encode_images(PixelModel(), source,
                            context(root / "cache", chunk_rows, bs2, skip_corrupt=True))
    assert_same(resumed, reference)
    assert chunk_files(root / "cache") == []


def make_pets(root: Path, n: int = 10) -> Path:
    for split in ("train", "test"):
        for c, cls in enumerate(("cat", "dog")):
            folder = root / "pets" / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (24, 24), (200 * c + 5 * i, 25 * i % 255, 255 - 200 * c)).save(
                    folder / f"{i}.jpg")
    (root / "t.yaml").write_text("name: pets\nprotocol: knn\nroot: pets\nk: 3\n")
    return root


def test_interrupted_cli_run_resumes_and_records_the_same_numbers(cli, tmp_path, monkeypatch):
    from itra_bench import feature_cache
    from itra_bench.results import iter_records

    data = make_pets(tmp_path / "data")
    monkeypatch.setattr(feature_cache, "DEFAULT_CHUNK_ROWS", 4)

    def run(name: str):
        return cli("run", "--model", "pixel", "--plugin", "itra_test_plugin", "--tasks",
                   data / "t.yaml", "--data-root", data, "--output", tmp_path / name,
                   "--cache-dir", tmp_path / f"cache-{name}", "--batch-size", "3",
                   "--workers", "0", "--no-progress")

    assert run("reference").code == 0
    (_, reference), = iter_records(tmp_path / "reference")

    real = PixelModel.encode_image
    calls = []

    def dies_at_fifth_batch(self, images):
        calls.append(len(images))
        if len(calls) == 5:  # train rows 0-7 (two chunks of 4, in batches of 3 + 1) are done
            raise KeyboardInterrupt
        return real(self, images)

    monkeypatch.setattr(PixelModel, "encode_image", dies_at_fifth_batch)
    res = run("resumed")
    assert res.code == 130 and "interrupted" in res.err
    assert not list((tmp_path / "resumed").rglob("*.json"))
    monkeypatch.setattr(PixelModel, "encode_image", real)
    PixelModel.images_encoded = 0
    assert run("resumed").code == 0
    assert PixelModel.images_encoded == 12 + 20  # the rest of train, then all of test
    (_, resumed), = iter_records(tmp_path / "resumed")
    assert resumed["metrics"] == reference["metrics"]
