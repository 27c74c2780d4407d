"""clip-benchmark's webdataset folders evaluated as tasks (protocol ``wds`` and ``wds:PATH``).

Folders are written with webdataset's ``TarWriter`` in clip-benchmark's layout; the same image
bytes are also written as an ImageFolder tree / a caption table, so every ``wds`` number can be
compared with the number of the same images read the established way.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
import webdataset
from wds_folders import make_classification, make_retrieval, png

from itra_bench.results import iter_records

PLUGINS = ("--plugin", "itra_test_plugin", "--plugin", "itra_bench.tasks.wds.plugin")


def run_args(tmp_path: Path, *extra: object) -> list[object]:
    return ["run", "--model", "pixel", *PLUGINS, "--output", tmp_path / "out",
            "--cache-dir", tmp_path / "cache", "--workers", "0", "--no-progress",
            "--data-root", tmp_path / "data", *extra]


def records(out: Path) -> dict[str, dict]:
    return {r["task"]: r for _, r in iter_records(out)}


def task_file(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\n{body}")
    return path


def _metrics(rec: dict) -> dict:
    return rec["metrics"]


FOLDER_TEMPLATES = "templates: ['a photo of a {}.', 'a blurry photo of a {c}.']\n"


@pytest.mark.parametrize(("wds_body", "folder_body"), [
    ("", "protocol: zeroshot\n" + FOLDER_TEMPLATES),
    ("task: zeroshot_classification\n", "protocol: zeroshot\n" + FOLDER_TEMPLATES),
    ("task: knn\nk: 3\n", "protocol: knn\nk: 3\n"),
    ("task: linear_probe\n", "protocol: linear_probe\n"),
    ("task: clustering\n", "protocol: clustering\n"),
], ids=["default", "zeroshot", "knn", "linear_probe", "clustering"])
def test_classification_equals_the_same_images_as_an_image_folder(cli, tmp_path, wds_body,
                                                                  folder_body):
    make_classification(tmp_path / "data")
    wds = task_file(tmp_path, "w", "protocol: wds\nroot: wds_toy\n" + wds_body)
    folder = task_file(tmp_path, "f", "root: folder\n" + folder_body)
    # One case decodes in a worker process: samples are read by index from any process.
    workers = ("--workers", "1") if not wds_body else ()
    res = cli(*run_args(tmp_path, "--tasks", f"{wds},{folder}", *workers))
    assert res.code == 0, res
    recs = records(tmp_path / "out")
    assert recs["w"]["num_samples"] == recs["f"]["num_samples"] == 15
    assert recs["w"]["main_score"] == recs["f"]["main_score"]
    assert _metrics(recs["w"]) == _metrics(recs["f"])


def test_zeroshot_reads_classnames_as_written_and_the_folder_templates(tmp_path):
    """clip-benchmark fills ``{c}`` with the class name as written (no ``_`` -> space)."""
    from itra_bench.tasks.wds.plugin import wds_task

    root = make_classification(tmp_path / "data", splits=("test",))
    (root / "classnames.txt").write_text("sea_bird\ncat\ndog\n\n")
    task = wds_task({"name": "w", "protocol": "wds", "root": "wds_toy"}, tmp_path / "w.yaml")
    resolved = task._resolved(tmp_path / "data")
    assert resolved.protocol == "zeroshot"
    assert resolved.classnames == ["sea_bird", "cat", "dog"]
    assert resolved.templates == ["a photo of a {c}.", "a blurry photo of a {c}."]


def test_retrieval_equals_the_same_images_as_a_caption_table(cli, tmp_path):
    make_retrieval(tmp_path / "data")
    wds = task_file(tmp_path, "w", "protocol: wds\nroot: wds_caps\ntask: retrieval\n")
    table = task_file(tmp_path, "t", "protocol: retrieval\nfile: caps.tsv\n")
    res = cli(*run_args(tmp_path, "--tasks", f"{wds},{table}"))
    assert res.code == 0, res
    recs = records(tmp_path / "out")
    assert recs["w"]["details"]["num_images"] == 6
    assert recs["w"]["details"]["num_captions"] == recs["t"]["details"]["num_captions"] == 9
    assert _metrics(recs["w"]) == _metrics(recs["t"])


def test_wds_path_shorthand_builds_the_folder_task(tmp_path, monkeypatch):
    """``--tasks wds:PATH`` (the runner calls ``wds_task_from_path``): the test split,
    zero-shot unless dataset_type.txt says retrieval, a relative PATH under the working
    directory, and the same numbers as the task file."""
    from itra_test_plugin import PixelModel

    from itra_bench.context import RunContext
    from itra_bench.errors import UserError
    from itra_bench.generic_tasks import ClassificationTask, ImageFolderData, RetrievalTask
    from itra_bench.tasks.wds.plugin import wds_task_from_path

    data = tmp_path / "data"
    make_classification(data, splits=("test",))
    (data / "wds_toy").rename(data / "wds_vtab-toy")
    monkeypatch.chdir(data)
    task = wds_task_from_path("wds:wds_vtab-toy")
    assert task.name == "wds/vtab-toy"
    assert isinstance(task, ClassificationTask) and task.protocol == "zeroshot"
    assert task.eval_split == "test"
    # The data root of the run does not matter: the path was resolved when it was named.
    ctx = RunContext(data_root=tmp_path / "elsewhere")
    got = task.run(PixelModel(), ctx)
    ref = ClassificationTask(name="f", data=ImageFolderData(str(data / "folder")),
                             templates=["a photo of a {}.", "a blurry photo of a {c}."])
    assert got.metrics == ref.run(PixelModel(), ctx).metrics and got.num_samples == 15

    make_retrieval(data)
    caps = wds_task_from_path(str(data / "wds_caps"))
    assert isinstance(caps, RetrievalTask) and caps.name == "wds/caps"
    assert caps.run(PixelModel(), ctx).details["num_captions"] == 9
    with pytest.raises(UserError, match="give the folder"):
        wds_task_from_path("wds:")


# ----- bad input: exit 2, one message naming the shard or file and the key ------------------

def _rewrite_shard(path: Path, samples: list[dict]) -> None:
    path.unlink()
    with webdataset.TarWriter(str(path)) as sink:
        for sample in samples:
            sink.write(sample)


def _members(path: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(path) as tar:
        return tar.getmembers()


def no_classnames(root: Path) -> tuple[str, ...]:
    (root / "classnames.txt").unlink()
    return (str(root / "classnames.txt"), "missing")


def nshards_too_many(root: Path) -> tuple[str, ...]:
    (root / "test" / "nshards.txt").write_text("6\n")
    return ("nshards.txt", "announces 6 shards", "4.tar, 5.tar", "missing")


def nshards_too_few(root: Path) -> tuple[str, ...]:
    (root / "test" / "nshards.txt").write_text("2\n")
    return ("nshards.txt", "announces 2 shards", "2.tar, 3.tar")


def shards_named_otherwise(root: Path) -> tuple[str, ...]:
    for p in sorted((root / "test").glob("*.tar")):
        p.rename(p.with_name(f"shard-{p.name}"))
    return ("0.tar", "shard-0.tar", "missing")


def empty_shard(root: Path) -> tuple[str, ...]:
    _rewrite_shard(root / "test" / "1.tar", [])
    return (str(root / "test" / "1.tar"), "holds no samples")


def zero_byte_shard(root: Path) -> tuple[str, ...]:
    (root / "test" / "2.tar").write_bytes(b"")
    return (str(root / "test" / "2.tar"), "empty (0 bytes)")


def not_a_tar(root: Path) -> tuple[str, ...]:
    (root / "test" / "2.tar").write_bytes(b"<html>404 not found</html>" * 40)
    return (str(root / "test" / "2.tar"), "not a tar file")


def sample_without_image(root: Path) -> tuple[str, ...]:
    _rewrite_shard(root / "test" / "1.tar", [{"__key__": "lonely", "cls": 1}])
    return (str(root / "test" / "1.tar"), "'lonely'", "no image", "webp, png, jpg, jpeg")


def sample_without_cls(root: Path) -> tuple[str, ...]:
    _rewrite_shard(root / "test" / "0.tar", [{"__key__": "nolabel", "jpg": png(0, 0)}])
    return (str(root / "test" / "0.tar"), "'nolabel'", "no 'cls' member")


def cls_out_of_range(root: Path) -> tuple[str, ...]:
    _rewrite_shard(root / "test" / "0.tar", [{"__key__": "big", "png": png(0, 0), "cls": 3}])
    return (str(root / "test" / "0.tar"), "'big'", "'cls' is 3", "0..2")


def damaged_header(root: Path) -> tuple[str, ...]:
    shard = root / "test" / "1.tar"
    third = _members(shard)[2]
    with shard.open("r+b") as f:
        f.seek(third.offset)
        f.write(b"\x07garbage" * 64)
    return (str(shard), "damaged", f"byte {third.offset}")


def cut_between_members(root: Path) -> tuple[str, ...]:
    shard = root / "test" / "1.tar"
    third = _members(shard)[2]
    shard.write_bytes(shard.read_bytes()[:third.offset])
    return (str(shard), "end-of-archive", "truncated")


def blank_template_slot(root: Path) -> tuple[str, ...]:
    path = root / "zeroshot_classification_templates.txt"
    path.write_text("a photo of a {c}.\na photo.\n")
    return (str(path), "line 2", "placeholder")


def says_retrieval(root: Path) -> tuple[str, ...]:
    (root / "dataset_type.txt").write_text("retrieval\n")
    return (str(root / "dataset_type.txt"), "'retrieval'", "task:")


@pytest.mark.parametrize("damage", [
    no_classnames, nshards_too_many, nshards_too_few, shards_named_otherwise, empty_shard,
    zero_byte_shard, not_a_tar, sample_without_image, sample_without_cls, cls_out_of_range,
    damaged_header, cut_between_members, blank_template_slot, says_retrieval,
], ids=lambda f: f.__name__)
def test_bad_folder_is_refused_with_one_message(cli, tmp_path, damage):
    root = make_classification(tmp_path / "data", splits=("test",))
    expected = damage(root)
    wds = task_file(tmp_path, "w", "protocol: wds\nroot: wds_toy\n")
    for args in ((), ("--skip-corrupt",)):  # damage that is not one image is never skipped
        res = cli(*run_args(tmp_path, "--tasks", wds, *args))
        assert res.code == 2, res
        assert "Traceback" not in res.err
        for part in expected:
            assert part in res.err, (part, res.err)
    assert not records(tmp_path / "out")


def test_retrieval_sample_without_captions_is_refused(cli, tmp_path):
    root = make_retrieval(tmp_path / "data")
    _rewrite_shard(root / "test" / "1.tar", [{"__key__": "mute", "png": png(0, 0)}])
    wds = task_file(tmp_path, "w", "protocol: wds\nroot: wds_caps\ntask: retrieval\n")
    res = cli(*run_args(tmp_path, "--tasks", wds))
    assert res.code == 2 and "Traceback" not in res.err
    assert str(root / "test" / "1.tar") in res.err and "'mute'" in res.err
    assert "no 'txt' member" in res.err


def undecodable_image(root: Path) -> str:
    shard = root / "test" / "1.tar"
    samples = [{"__key__": f"s1{i:03d}", "png": png(1, i), "cls": 1} for i in range(1, 5)]
    samples[1]["png"] = b"\x89PNG\r\n\x1a\n but not an image"
    _rewrite_shard(shard, samples)
    return f"{shard}:s1002.png"


def image_cut_short(root: Path) -> str:
    shard = root / "test" / "3.tar"  # the last shard: s2002, s2003, s2004
    image = _members(shard)[-1]
    assert image.name == "s2004.png"
    shard.write_bytes(shard.read_bytes()[:image.offset_data + image.size // 2])
    return f"{shard}:s2004.png"


@pytest.mark.parametrize("damage", [undecodable_image, image_cut_short],
                         ids=lambda f: f.__name__)
def test_unreadable_image_is_named_or_skipped_and_counted(cli, tmp_path, damage):
    root = make_classification(tmp_path / "data", splits=("test",))
    bad = damage(root)
    wds = task_file(tmp_path, "w", "protocol: wds\nroot: wds_toy\ntask: clustering\n")
    res = cli(*run_args(tmp_path, "--tasks", wds))
    assert res.code == 2 and "Traceback" not in res.err
    assert bad in res.err and "--skip-corrupt" in res.err
    res = cli(*run_args(tmp_path, "--tasks", wds, "--skip-corrupt"))
    assert res.code == 0, res
    rec = records(tmp_path / "out")["w"]
    assert rec["num_samples"] == 14
    assert rec["details"]["skipped_corrupt"] == [bad]
    assert "skipped 1 corrupt image" in res.err


def test_wds_shorthand_on_the_command_line(cli, tmp_path):
    root = make_classification(tmp_path / "data")
    res = cli("run", "--model", "pixel", "--plugin", "itra_test_plugin", "--output",
              tmp_path / "out", "--cache-dir", tmp_path / "cache", "--workers", "0",
              "--no-progress", "--tasks", f"wds:{root}")
    assert res.code == 0, res
    rec = records(tmp_path / "out")["wds/toy"]
    assert rec["main_score"] == "acc1" and rec["num_samples"] == 15
    assert rec["providers"]["task"]["plugin"] == "wds_tasks"


def test_wds_prefix_comes_from_its_plugin(cli, tmp_path):
    """`wds:PATH` is the wds task plugin's prefix (the itra_bench_task_prefixes hook), not a
    case of the host's: disabling the plugin removes it."""
    root = make_classification(tmp_path / "data")
    res = cli("run", "--model", "pixel", "--plugin", "itra_test_plugin", "--output",
              tmp_path / "out", "--no-cache", "--workers", "0", "--no-progress",
              "--disable-plugin", "wds_tasks", "--tasks", f"wds:{root}")
    assert res.code == 2, res
    assert "unknown task" in res.err and not (tmp_path / "out").exists()


def test_skip_corrupt_with_no_image_decodable_says_so(cli, tmp_path):
    root = make_classification(tmp_path / "data", n=2, splits=("test",))
    for shard in sorted((root / "test").glob("*.tar")):
        _rewrite_shard(shard, [{"__key__": m.name.split(".")[0], "png": b"not a png",
                                "cls": 0} for m in _members(shard) if m.name.endswith(".png")])
    res = cli("run", "--model", "pixel", "--plugin", "itra_test_plugin", "--output",
              tmp_path / "out", "--cache-dir", tmp_path / "cache", "--workers", "0",
              "--no-progress", "--tasks", f"wds:{root}", "--skip-corrupt")
    assert res.code == 2, res
    assert "Traceback" not in res.err and "dimension" not in res.err, res.err
    assert "none of the 6 images" in res.err and str(root / "test") in res.err, res.err
