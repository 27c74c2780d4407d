"""The classic suites (tasks/classic/) on small data written in their real on-disk layouts:
CLOOB class folders, and torchvision's CIFAR pickles and STL-10 binaries (checked against
torchvision's own readers)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from itra_bench.errors import MissingDataError, UserError
from itra_bench.results import iter_records
from itra_bench.tasks.classic.torchvision_formats import (
    CifarSplit,
    ClassListFolder,
    STL10Split,
    sorted_class_folders,
)
from itra_bench.threads import torch_threads

CLASSIC = ("--plugin", "itra_test_plugin")
CIFAR100_FINE = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus "
    "butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch "
    "crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house "
    "kangaroo keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle "
    "mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree "
    "plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew "
    "skunk skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank "
    "telephone television tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf "
    "woman worm").split()
CIFAR10_NAMES = "airplane automobile bird cat deer dog frog horse ship truck".split()
STL10_NAMES = "airplane bird car cat deer dog horse monkey ship truck".split()


# ----------------------------------------------------------------------------- data writers

def class_colour(label: int, num_classes: int) -> np.ndarray:
    """A distinct RGB colour per class (a walk through a coarse RGB grid)."""
    steps = int(np.ceil(num_classes ** (1 / 3)))
    r, g, b = label % steps, (label // steps) % steps, label // steps ** 2
    return (np.array([r, g, b]) * (255 // max(steps - 1, 1))).clip(0, 255)


def coloured_images(labels: list[int], num_classes: int, size: int, seed: int) -> np.ndarray:
    """uint8 [N, size, size, 3]: each image its class colour plus noise, with a gradient so
    that rows and columns differ (a transposed reader would not match)."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 40, size)[:, None, None]
    out = []
    for y in labels:
        img = class_colour(y, num_classes)[None, None, :] * 0.8 + ramp
        img = img + rng.integers(0, 25, (size, size, 3))
        out.append(img.clip(0, 255).astype(np.uint8))
    return np.stack(out)


def balanced_labels(num_classes: int, per_class: int, seed: int) -> list[int]:
    labels = [c for c in range(num_classes) for _ in range(per_class)]
    np.random.default_rng(seed).shuffle(labels)
    return labels


def write_cifar(root: Path, variant: str, train_per_class: int, test_per_class: int,
                bytes_keys: bool = False) -> dict[str, tuple[np.ndarray, list[int]]]:
    """torchvision's CIFAR files: pickled dicts of 'data' uint8 [N, 3072] (channel planes) and
    'labels' / 'fine_labels', plus the meta file with the class names."""
    if variant == "cifar10":
        folder, names = root / "cifar-10-batches-py", CIFAR10_NAMES
        train_files = [f"data_batch_{i}" for i in range(1, 6)]
        test_files, meta, lkey, nkey = ["test_batch"], "batches.meta", "labels", "label_names"
    else:
        folder, names = root / "cifar-100-python", CIFAR100_FINE
        train_files, test_files, meta = ["train"], ["test"], "meta"
        lkey, nkey = "fine_labels", "fine_label_names"
    folder.mkdir(parents=True)

    def key(k: str) -> str | bytes:
        return k.encode() if bytes_keys else k

    def dump(path: Path, obj: dict) -> None:
        with open(path, "wb") as f:
            pickle.dump({key(k): v for k, v in obj.items()}, f, protocol=2)

    dump(folder / meta, {nkey: names, **({"coarse_label_names": ["x"]} if variant != "cifar10"
                                          else {"num_cases_per_batch": 10})})
    written = {}
    for split, files, per_class, seed in (("train", train_files, train_per_class, 1),
                                          ("test", test_files, test_per_class, 2)):
        labels = balanced_labels(len(names), per_class, seed)
        images = coloured_images(labels, len(names), 32, seed)
        written[split] = (images, labels)
        for chunk, name in zip(np.array_split(np.arange(len(labels)), len(files)), files,
                               strict=True):
            rows = images[chunk].transpose(0, 3, 1, 2).reshape(len(chunk), 3072)
            entry = {"batch_label": name, lkey: [labels[i] for i in chunk], "data": rows,
                     "filenames": [f"img_{i}.png" for i in chunk]}
            if variant != "cifar10":
                entry["coarse_labels"] = [0] * len(chunk)
            dump(folder / name, entry)
    return written


def write_stl10(root: Path, train_per_class: int, test_per_class: int
                ) -> dict[str, tuple[np.ndarray, list[int]]]:
    """torchvision's STL-10 binaries: uint8 images stored [3, x, y] (each channel plane
    column-major), labels 1-based, class_names.txt one name per line."""
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    (folder / "class_names.txt").write_text("\n".join(STL10_NAMES) + "\n")
    written = {}
    for split, per_class, seed in (("train", train_per_class, 3), ("test", test_per_class, 4)):
        labels = balanced_labels(10, per_class, seed)
        images = coloured_images(labels, 10, 96, seed)
        written[split] = (images, labels)
        (folder / f"{split}_X.bin").write_bytes(images.transpose(0, 3, 2, 1).tobytes())
        (folder / f"{split}_y.bin").write_bytes((np.array(labels) + 1).astype(np.uint8).tobytes())
    return written


def write_class_folders(split_dir: Path, folders: list[str], labels: list[int],
                        num_classes: int, per_folder: int = 1, empty: tuple[str, ...] = ()
                        ) -> None:
    """A CLOOB-style test set: ``split_dir/<folder>/<image>.png``, folder i coloured as
    class labels[i]."""
    for folder, label in zip(folders, labels, strict=True):
        d = split_dir / folder
        d.mkdir(parents=True)
        if folder in empty:
            continue
        for k, img in enumerate(coloured_images([label] * per_folder, num_classes, 12, label)):
            Image.fromarray(img).save(d / f"{k}.png")


# ------------------------------------------------------------------ torchvision fidelity

def _torchvision_pairs(dataset) -> list[tuple[np.ndarray, int]]:
    return [(np.asarray(img), int(y)) for img, y in dataset]


@pytest.mark.parametrize("variant", ["cifar10", "cifar100"])
def test_cifar_reader_matches_torchvision(tmp_path, monkeypatch, variant):
    torchvision = pytest.importorskip("torchvision")
    written = write_cifar(tmp_path, variant, train_per_class=1, test_per_class=1)
    cls = torchvision.datasets.CIFAR10 if variant == "cifar10" else torchvision.datasets.CIFAR100
    # torchvision verifies the real files' md5 (data files and meta); ours are synthetic.
    monkeypatch.setattr(cls, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    for split in ("train", "test"):
        ours = CifarSplit(tmp_path, variant, split)
        theirs = cls(str(tmp_path), train=split == "train", download=False)
        assert ours.classes == theirs.classes
        assert ours.targets == list(theirs.targets) == written[split][1]
        pairs = _torchvision_pairs(theirs)
        assert len(ours) == len(pairs)
        for i, (img, y) in enumerate(pairs):
            assert np.array_equal(np.asarray(ours.open_image(i)), img), (split, i)
            assert np.array_equal(img, written[split][0][i])
            assert ours.targets[i] == y


def test_cifar_reader_accepts_bytes_keys_and_refuses_code(tmp_path):
    written = write_cifar(tmp_path, "cifar10", 1, 1, bytes_keys=True)
    test = CifarSplit(tmp_path, "cifar10", "test")
    assert test.classes == CIFAR10_NAMES and test.targets == written["test"][1]
    assert np.array_equal(np.asarray(test.open_image(3)), written["test"][0][3])
    # The real files were pickled under numpy 1, which names numpy.core (numpy._core since 2).
    for f in (tmp_path / "cifar-10-batches-py").iterdir():
        f.write_bytes(f.read_bytes().replace(b"cnumpy._core.multiarray\n",
                                             b"cnumpy.core.multiarray\n"))
    assert b"numpy.core." in (tmp_path / "cifar-10-batches-py" / "test_batch").read_bytes()
    again = CifarSplit(tmp_path, "cifar10", "test")
    assert np.array_equal(np.asarray(again.open_image(3)), written["test"][0][3])

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({"data": Evil()}, f)
    with pytest.raises(UserError, match="refusing to load builtins.print"):
        CifarSplit(tmp_path, "cifar10", "test")


def test_stl10_reader_matches_torchvision(tmp_path, monkeypatch):
    torchvision = pytest.importorskip("torchvision")
    written = write_stl10(tmp_path, train_per_class=1, test_per_class=1)
    monkeypatch.setattr(torchvision.datasets.STL10, "_check_integrity", lambda self: True)
    for split in ("train", "test"):
        ours = STL10Split(tmp_path, split)
        theirs = torchvision.datasets.STL10(str(tmp_path), split=split, download=False)
        assert ours.classes == theirs.classes == STL10_NAMES
        assert ours.targets == list(theirs.labels) == written[split][1]
        for i, (img, y) in enumerate(_torchvision_pairs(theirs)):
            assert np.array_equal(np.asarray(ours.open_image(i)), img), (split, i)
            assert np.array_equal(img, written[split][0][i])
            assert ours.targets[i] == y
    # Workers get a copy without the memory map, and map the file themselves.
    clone = pickle.loads(pickle.dumps(ours))
    assert clone._images is None
    assert np.array_equal(np.asarray(clone.open_image(0)), written["test"][0][0])


def test_torchvision_format_errors_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(MissingDataError) as err:
        CifarSplit(tmp_path, "cifar10", "train")
    msg = str(err.value)
    assert str(tmp_path / "cifar-10-batches-py" / "data_batch_1") in msg
    assert "torchvision.datasets.CIFAR10(root, download=True)" in msg and "network" in msg
    with pytest.raises(MissingDataError, match=r"cifar-100-python.*test"):
        CifarSplit(tmp_path, "cifar100", "test")
    with pytest.raises(MissingDataError, match=r"stl10_binary/test_X\.bin.*STL10\(root"):
        STL10Split(tmp_path, "test")
    write_stl10(tmp_path, 1, 1)
    x = tmp_path / "stl10_binary" / "test_X.bin"
    x.write_bytes(x.read_bytes()[:-100])
    with pytest.raises(UserError, match="test_X.bin holds .* bytes, not 10 images"):
        STL10Split(tmp_path, "test")


# ------------------------------------------------------------- class folders -> class index

def test_prompts_are_clip_lists_as_clip_benchmark_has_them():
    from itra_bench.tasks.classic.plugin import prompts

    data = prompts()
    sizes = {"imagenet": 1000, "cifar10": 10, "cifar100": 100, "stl10": 10, "birdsnap": 500,
             "country211": 211, "flowers102": 102, "gtsrb": 43, "ucf101": 101,
             "stanford_cars": 196}
    assert {k: len(v["classnames"]) for k, v in data.items()} == sizes
    assert data["cifar100"]["classnames"] == [n.replace("_", " ") for n in CIFAR100_FINE]
    assert data["cifar10"]["classnames"] == CIFAR10_NAMES
    assert data["stl10"]["classnames"] == STL10_NAMES
    # clip-benchmark's packaged copies of the CLIP lists (a test dependency).
    cb = Path(pytest.importorskip("clip_benchmark").__file__).parent / "datasets"
    names = json.loads((cb / "en_classnames.json").read_text())
    temps = json.loads((cb / "en_zeroshot_classification_templates.json").read_text())
    for ours, theirs in [("imagenet", "imagenet1k"), ("country211", "country211"),
                         ("flowers102", "flowers"), ("gtsrb", "gtsrb")]:
        assert data[ours]["classnames"] == names[theirs]
    for ours, theirs in [("imagenet", "imagenet1k"), ("cifar10", "cifar10"),
                         ("cifar100", "cifar100"), ("stl10", "stl10"),
                         ("country211", "country211"), ("flowers102", "flowers"),
                         ("gtsrb", "gtsrb"), ("stanford_cars", "cars")]:
        filled = [t.format("dog") for t in data[ours]["templates"]]
        assert filled == [t.replace("{c}", "dog") for t in temps[theirs]], ours


def test_sorted_folders_follow_imagefolder_and_numbers():
    assert sorted_class_folders(["002", "010", "001"]) == ["001", "002", "010"]
    assert sorted_class_folders(["2", "10", "1"]) == ["1", "2", "10"]  # not "1", "10", "2"
    assert sorted_class_folders(["b", "B", "a"]) == ["B", "a", "b"]  # as ImageFolder (case)


def test_positional_folders_map_to_clip_order(tmp_path):
    """gtsrb-like: unpadded index folders 0..42, the i-th (numerically) is CLIP class i."""
    from itra_bench.tasks.classic.plugin import prompts

    names = prompts()["gtsrb"]["classnames"]
    folders = [str(i) for i in range(43)]
    write_class_folders(tmp_path / "test", folders, list(range(43)), 43)
    split = ClassListFolder(tmp_path / "test", names)
    assert split.classes == names
    assert split.folders["10"] == 10 and split.folders["2"] == 2
    assert [p.parent.name for p, t in zip(split.paths, split.targets, strict=True)
            if t == 10] == ["10"]


def test_folders_named_after_classes_map_by_name(tmp_path):
    from itra_bench.tasks.classic.plugin import prompts

    names = prompts()["ucf101"]["classnames"]
    # UCF101's own folder names, in CamelCase; a partial copy still maps by name.
    write_class_folders(tmp_path / "t", ["YoYo", "ApplyEyeMakeup", "HandstandPushups"],
                        [100, 0, 36], 101)
    split = ClassListFolder(tmp_path / "t", names)
    assert split.folders == {"ApplyEyeMakeup": 0, "HandstandPushups": 36, "YoYo": 100}
    assert split.classes == names


def test_birdsnap_absent_classes_left_out_as_protoclip(tmp_path):
    from itra_bench.tasks.classic.plugin import BIRDSNAP_ABSENT, prompts

    names = prompts()["birdsnap"]["classnames"]
    kept = [c for i, c in enumerate(names) if i not in BIRDSNAP_ABSENT]
    folders = [f"{i:03d}" for i in range(500)]
    # The CLOOB copy with the 9 empty folders removed, and with them left in place.
    removed = [f for i, f in enumerate(folders) if i not in BIRDSNAP_ABSENT]
    write_class_folders(tmp_path / "a", removed, [int(f) for f in removed], 500)
    empty = tuple(folders[i] for i in BIRDSNAP_ABSENT)
    write_class_folders(tmp_path / "b", folders, list(range(500)), 500, empty=empty)
    for d in ("a", "b"):
        split = ClassListFolder(tmp_path / d, names, BIRDSNAP_ABSENT)
        assert split.classes == kept
        # folder 047 holds class 47 ('Black Vulture'), which is entry 46 of the reduced list.
        assert split.classes[split.folders["047"]] == names[47] == "Black Vulture"
        assert all(split.classes[t] == names[int(p.parent.name)]
                   for p, t in zip(split.paths, split.targets, strict=True))
        assert len(split) == 491


def test_wrong_folder_count_is_one_clear_error(tmp_path):
    from itra_bench.tasks.classic.plugin import prompts

    write_class_folders(tmp_path / "test", ["000", "001"], [0, 1], 43)
    with pytest.raises(UserError, match=r"has 2 class folders .* has 43 classes"):
        ClassListFolder(tmp_path / "test", prompts()["gtsrb"]["classnames"])


def test_imagenet_layout_resolution(tmp_path):
    """1000 WordNet-id folders in sorted order are CLIP's 1000 classes; val/ is accepted."""
    from itra_bench.tasks.classic.plugin import classic_tasks, prompts

    tasks = {t.name: t for t in classic_tasks()}
    zs, lin = tasks["zeroshot-imagenet"], tasks["linear-imagenet"]
    assert zs.required_paths(tmp_path, {}) == [tmp_path / "imagenet" / "test"]
    assert lin.required_paths(tmp_path, {}) == [tmp_path / "imagenet" / "train",
                                                tmp_path / "imagenet" / "test"]
    wnids = [f"n{i * 7919 % 10**8:08d}" for i in range(1000)]
    d = tmp_path / "imagenet" / "val"
    for w in wnids:
        (d / w).mkdir(parents=True)
        (d / w / "x.png").write_bytes(b"")  # never decoded here
    assert zs.required_paths(tmp_path, {}) == [d]
    split = zs.data.split(tmp_path, "test")
    assert split.classes == prompts()["imagenet"]["classnames"]
    order = sorted(wnids)
    assert [split.folders[w] for w in order] == list(range(1000))


# ------------------------------------------------------------------------ end to end (CLI)

def _run_args(tmp_path: Path, data_root: Path, *tasks: str) -> list:
    return ["run", "--model", "pixel", *CLASSIC, "--data-root", data_root,
            "--output", tmp_path / "out", "--cache-dir", tmp_path / "cache", "--workers", "0",
            "--no-progress", "--tasks", *tasks]


def _records(out: Path) -> dict[str, dict]:
    return {r["task"]: r for _, r in iter_records(out)}


def test_classic_suites_run_on_small_data(cli, tmp_path):
    from itra_bench.tasks.classic.plugin import BIRDSNAP_ABSENT

    root = tmp_path / "data"
    write_cifar(root, "cifar10", train_per_class=6, test_per_class=3)
    write_cifar(root, "cifar100", train_per_class=3, test_per_class=1)
    write_stl10(root, train_per_class=6, test_per_class=2)
    # CIFAR-10 also as a CLOOB-style folder copy, named by class: the zero-shot task uses it.
    write_class_folders(root / "cifar10" / "test", CIFAR10_NAMES, list(range(10)), 10, 2)
    write_class_folders(root / "gtsrb" / "test", [f"{i:05d}" for i in range(43)],
                        list(range(43)), 43)
    present = [i for i in range(500) if i not in BIRDSNAP_ABSENT]
    write_class_folders(root / "birdsnap" / "test", [f"{i:03d}" for i in present], present,
                        500)
    write_class_folders(root / "ucf101" / "testlist01", [f"{i:03d}" for i in range(101)],
                        list(range(101)), 101)

    # The probe's thousands of tiny L-BFGS steps run ~10x faster on one thread on a CPU.
    with torch_threads(1):
        res = cli(*_run_args(tmp_path, root, "zeroshot-cifar10", "zeroshot-cifar100",
                             "zeroshot-stl10", "zeroshot-gtsrb", "zeroshot-birdsnap",
                             "zeroshot-ucf101", "linear-classic", "--skip-missing"))
    assert res.code == 0, res
    recs = _records(tmp_path / "out")
    assert set(recs) == {"zeroshot-cifar10", "zeroshot-cifar100", "zeroshot-stl10",
                         "zeroshot-gtsrb", "zeroshot-birdsnap", "zeroshot-ucf101",
                         "linear-cifar10", "linear-cifar100", "linear-stl10"}
    assert "linear-imagenet" in res.out + res.err  # skipped: its folders are missing
    expected = {"zeroshot-cifar10": 20, "zeroshot-cifar100": 100, "zeroshot-stl10": 20,
                "zeroshot-gtsrb": 43, "zeroshot-birdsnap": 491, "zeroshot-ucf101": 101,
                "linear-cifar10": 30, "linear-cifar100": 100, "linear-stl10": 20}
    assert {k: r["num_samples"] for k, r in recs.items()} == expected
    for r in recs.values():
        assert r["main_score"] == "acc1" and 0.0 <= r["main_score_value"] <= 1.0
    # Colour-coded classes: a linear probe on pixels is far above chance.
    assert recs["linear-cifar10"]["main_score_value"] > 0.6
    assert recs["linear-stl10"]["main_score_value"] > 0.6
    assert recs["linear-cifar100"]["main_score_value"] > 0.1  # chance: 0.01


def test_missing_torchvision_files_stop_the_run_with_the_layout(cli, tmp_path):
    res = cli(*_run_args(tmp_path, tmp_path / "empty", "linear-cifar10", "zeroshot-stl10"))
    assert res.code == 2
    err = " ".join(res.err.split())
    assert "cifar-10-batches-py/data_batch_1" in err
    assert "torchvision.datasets.CIFAR10(DATA_ROOT, download=True)" in err
    assert "stl10_binary/test_X.bin" in err
    assert "Traceback" not in res.err


def test_suites_and_names_are_registered():
    from itra_bench.registry import load_registry

    registry = load_registry(["itra_bench.tasks.classic.plugin"])
    assert registry.suites["zeroshot-classic"] == [
        "zeroshot-imagenet", "zeroshot-cifar10", "zeroshot-cifar100", "zeroshot-stl10",
        "zeroshot-birdsnap", "zeroshot-country211", "zeroshot-flowers102", "zeroshot-gtsrb",
        "zeroshot-ucf101", "zeroshot-stanford-cars"]
    assert registry.suites["linear-classic"] == [
        "linear-imagenet", "linear-cifar10", "linear-cifar100", "linear-stl10"]
    assert registry.aliases["zeroshot-stanford_cars"] == "zeroshot-stanford-cars"
