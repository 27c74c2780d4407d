"""ELEVATER readers: index (zip@path label) and COCO JSON formats, read from real zips."""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms import PILToTensor

from itra_bench.encoding import _collate, _Decoded
from itra_bench.errors import CorruptImageError, MissingDataError, UserError
from itra_bench.vision_benchmark.cards import parse_card
from itra_bench.vision_benchmark.readers import (
    ElevaterSplit,
    expected_layout,
    missing_files,
    open_split,
)

ROOT = "classification/toy_20240101"


def _card(**over):
    doc = {
        "name": "toy", "num_classes": 3, "type": "multiclass", "metric": "accuracy",
        "format": "index", "root": ROOT, "labelmap": "labels.txt",
        "splits": {"train": {"index": "train.txt", "files": ["train.zip"], "num_images": 6},
                   "test": {"index": "test.txt", "files": ["val.zip"], "num_images": 3}},
        "classnames": ["cat", "dog", "bird"], "templates": ["a photo of a {}."],
    }
    doc.update(over)
    return parse_card(doc, Path("toy.yaml"))


def _pixels(seed: int, size=(6, 5)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def _encode(arr: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def _zip(path: Path, members: dict[str, bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)


@pytest.fixture
def multiclass(tmp_path):
    """train.txt over train.zip (PNGs, one path with spaces), test.txt over val.zip (JPEGs)."""
    root = tmp_path / ROOT
    train = {f"train/img {i}.png" if i == 1 else f"train/{i}.png": _pixels(i) for i in range(6)}
    _zip(root / "train.zip", {k: _encode(v, "PNG") for k, v in train.items()})
    _zip(root / "val.zip", {f"val/{i}.jpg": _encode(_pixels(100 + i), "JPEG") for i in range(3)})
    (root / "train.txt").write_text(
        "".join(f"train.zip@{k} {i % 3}\n" for i, k in enumerate(train)) + "\n"
    )
    (root / "test.txt").write_text("val.zip@val/0.jpg 2\nval.zip@val/1.jpg 0\n"
                                   "val.zip@val/2.jpg 1\n")
    (root / "labels.txt").write_text("Cat\nDog\n\nBird\n")
    return tmp_path, train


def test_multiclass_index_targets_classes_and_pixels(multiclass):
    data_root, train = multiclass
    ds = open_split(_card(), data_root, "train")
    assert isinstance(ds, ElevaterSplit)
    assert len(ds) == 6
    assert ds.targets == [0, 1, 2, 0, 1, 2]
    assert ds.classes == ["Cat", "Dog", "Bird"]  # from labels.txt, blank line skipped
    for i, arr in enumerate(train.values()):
        with ds.open_image(i) as img:
            assert np.array_equal(np.asarray(img.convert("RGB")), arr)  # PNG: lossless
    assert ds.describe(1) == f"{data_root / ROOT / 'train.zip'}@train/img 1.png"
    assert ds.label_matrix().tolist()[:2] == [[1, 0, 0], [0, 1, 0]]

    test = open_split(_card(), data_root, "test")
    assert test.targets == [2, 0, 1]
    assert test.open_image(0).size == (6, 5)
    assert test.identity != ds.identity


def test_classnames_from_card_without_labelmap(multiclass):
    data_root, _ = multiclass
    ds = open_split(_card(labelmap=None), data_root, "test")
    assert ds.classes == ["cat", "dog", "bird"]


def test_plain_file_references_and_backslashes(tmp_path):
    root = tmp_path / ROOT
    (root / "imgs").mkdir(parents=True)
    arr = _pixels(7)
    (root / "imgs" / "a b.png").write_bytes(_encode(arr, "PNG"))
    _zip(root / "val.zip", {"sub/x.png": _encode(_pixels(8), "PNG")})
    (root / "test.txt").write_text("imgs/a b.png 1\nval.zip@sub\\x.png\t2\n")
    ds = open_split(_card(labelmap=None, splits={"test": {"index": "test.txt",
                                                          "files": ["val.zip"],
                                                          "num_images": 2}}),
                    tmp_path, "test")
    assert ds.targets == [1, 2]
    assert np.array_equal(np.asarray(ds.open_image(0)), arr)
    assert np.array_equal(np.asarray(ds.open_image(1)), _pixels(8))


def test_multilabel_index(tmp_path):
    root = tmp_path / "classification/voc"
    _zip(root / "test.zip", {f"{i}.jpg": _encode(_pixels(i), "JPEG") for i in range(3)})
    (root / "test_ic.txt").write_text("test.zip@0.jpg 0,4,7\ntest.zip@1.jpg 2\n"
                                      "test.zip@2.jpg 7,1,7\n")
    card = _card(name="voc", type="multilabel", metric="11point_mAP", num_classes=8,
                 root="classification/voc", labelmap=None,
                 splits={"test": {"index": "test_ic.txt", "files": ["test.zip"],
                                  "num_images": 3}},
                 classnames=[f"c{i}" for i in range(8)])
    ds = open_split(card, tmp_path, "test")
    assert ds.targets == [[0, 4, 7], [2], [1, 7]]
    m = ds.label_matrix()
    assert m.shape == (3, 8) and m.dtype == torch.float32
    assert m[0].nonzero().flatten().tolist() == [0, 4, 7]
    assert m.sum().item() == 6
    assert ds.open_image(2).mode == "RGB"


def _coco_card(**over):
    doc = dict(name="kitti", format="coco", labelmap=None, num_classes=3,
               root="classification/kitti",
               splits={"train": {"index": "train_meta.json", "files": ["train_images.zip"],
                                 "num_images": 4},
                       "test": {"index": "test_meta.json", "files": ["test_images.zip"],
                                "num_images": 4}})
    doc.update(over)
    return _card(**doc)


def test_coco_format(tmp_path):
    root = tmp_path / "classification/kitti"
    arrs = {i: _pixels(200 + i) for i in range(4)}
    _zip(root / "test_images.zip", {f"images/{i}.png": _encode(a, "PNG") for i, a in arrs.items()})
    doc = {
        # categories out of order and 1-based, as ELEVATER writes them
        "categories": [{"id": 3, "name": "far"}, {"id": 1, "name": "near"},
                       {"id": 2, "name": "middle"}],
        # images out of id order; both reference styles: "zip@path" and zip_file + path
        "images": [{"id": 4, "file_name": "test_images.zip@images/3.png", "width": 6},
                   {"id": 1, "file_name": "images/0.png", "zip_file": "test_images.zip"},
                   {"id": 2, "file_name": "test_images.zip@images/1.png"},
                   {"id": 3, "file_name": "images/2.png", "zip_file": "test_images.zip"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 3},
                        {"id": 2, "image_id": 2, "category_id": 1},
                        {"id": 3, "image_id": 3, "category_id": 2},
                        {"id": 4, "image_id": 4, "category_id": 1}],
    }
    (root / "test_meta.json").write_text(json.dumps(doc))
    ds = open_split(_coco_card(), tmp_path, "test")
    assert ds.classes == ["near", "middle", "far"]  # sorted by category id
    assert ds.targets == [2, 0, 1, 0]  # images sorted by id; label = rank of category id
    for i in range(4):
        assert np.array_equal(np.asarray(ds.open_image(i)), arrs[i])

    # Multilabel COCO keeps an image without annotations as a negative (no labels).
    doc["annotations"] = doc["annotations"][:3] + [{"image_id": 1, "category_id": 2}]
    (root / "test_meta.json").write_text(json.dumps(doc))
    ml = open_split(_coco_card(type="multilabel"), tmp_path, "test")
    assert ml.targets == [[1, 2], [0], [1], []]
    # ... but a multiclass image needs exactly one annotation.
    with pytest.raises(UserError, match=r"test_meta.json: image id 1 .*2 annotations"):
        open_split(_coco_card(), tmp_path, "test")


def test_coco_errors_name_file_and_entry(tmp_path):
    root = tmp_path / "classification/kitti"
    _zip(root / "test_images.zip", {"a.png": _encode(_pixels(1), "PNG")})
    cats = [{"id": i, "name": f"c{i}"} for i in (1, 2, 3)]
    cases = [
        ("{not json", r"test_meta.json is not valid JSON"),
        ({"images": [], "categories": cats}, r"'annotations' is missing"),
        ({"images": [{"id": 1}], "annotations": [], "categories": cats},
         r"images\[0\] has no 'file_name'"),
        ({"images": [{"id": 1, "file_name": "test_images.zip@a.png"}],
          "annotations": [{"image_id": 1, "category_id": 9}], "categories": cats},
         r"annotations\[0\] has category_id 9"),
        ({"images": [{"id": 1, "file_name": "test_images.zip@a.png"}],
          "annotations": [{"image_id": 5, "category_id": 1}], "categories": cats},
         r"annotations\[0\] refers to image id 5"),
        ({"images": [], "annotations": [], "categories": cats[:2]}, r"2 categories"),
    ]
    for doc, pattern in cases:
        (root / "test_meta.json").write_text(doc if isinstance(doc, str) else json.dumps(doc))
        with pytest.raises(UserError, match=pattern):
            open_split(_coco_card(), tmp_path, "test")


def test_identity_tracks_files_and_split(multiclass):
    data_root, _ = multiclass
    card = _card()
    before = open_split(card, data_root, "train").identity
    assert open_split(card, data_root, "train").identity == before
    assert open_split(card, data_root, "test").identity != before
    z = data_root / ROOT / "train.zip"
    with zipfile.ZipFile(z, "a") as zf:
        zf.writestr("extra.png", _encode(_pixels(99), "PNG"))
    assert open_split(card, data_root, "train").identity != before
    # A touched (same size) index changes it too.
    idx = data_root / ROOT / "train.txt"
    st = idx.stat()
    after_zip = open_split(card, data_root, "train").identity
    os.utime(idx, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert open_split(card, data_root, "train").identity != after_zip


def test_pickle_drops_open_handles(multiclass):
    data_root, train = multiclass
    ds = open_split(_card(), data_root, "train")
    ds.open_image(0)
    assert ds._zips  # a handle is open in this process
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._zips == {}
    assert clone.identity == ds.identity and clone.targets == ds.targets
    assert np.array_equal(np.asarray(clone.open_image(2)), list(train.values())[2])
    ds.close()
    assert ds._zips == {}


def test_dataloader_workers_decode_from_zip(multiclass):
    data_root, train = multiclass
    ds = open_split(_card(), data_root, "train")
    loader = DataLoader(_Decoded(ds, PILToTensor()), batch_size=4, num_workers=2,
                        collate_fn=_collate)
    seen = {}
    for batch in loader:
        assert batch["failed"] == []
        for img, i in zip(batch["images"], batch["indices"].tolist(), strict=True):
            seen[i] = img.permute(1, 2, 0).numpy()
    assert sorted(seen) == list(range(6))
    for i, arr in enumerate(train.values()):
        assert np.array_equal(seen[i], arr)
    assert ds._zips == {}  # the main process never opened a zip: the workers decoded


@pytest.mark.parametrize("line, what", [
    ("train.zip@train/0.png", "no label after the image path"),
    ("train.zip@train/0.png x", "label 'x' is not"),
    ("train.zip@train/0.png 3", "label 3 is out of range"),
    ("train.zip@train/0.png -1", "label '-1' is not"),
    ("train.zip@train/0.png 0,1", "2 labels for a multiclass dataset"),
])
def test_malformed_index_line(multiclass, line, what):
    data_root, _ = multiclass
    idx = data_root / ROOT / "train.txt"
    idx.write_text("train.zip@train/1.png 0\n\n" + line + "\n")
    with pytest.raises(UserError) as err:
        open_split(_card(), data_root, "train")
    msg = str(err.value)
    assert f"{idx}, line 3: {what}" in msg
    assert repr(line) in msg and "expected '<zip>@<path inside zip> <label>'" in msg


def test_labelmap_length_must_match(multiclass):
    data_root, _ = multiclass
    (data_root / ROOT / "labels.txt").write_text("a\nb\n")
    with pytest.raises(UserError, match=r"labels.txt lists 2 class names.* 3 classes"):
        open_split(_card(), data_root, "train")


def test_missing_files_listed_and_named(tmp_path):
    card = _card()
    root = tmp_path / ROOT
    expect = [root / "train.txt", root / "train.zip", root / "test.txt", root / "val.zip",
              root / "labels.txt"]
    assert missing_files(card, tmp_path) == expect
    assert missing_files(card, tmp_path, ["test"]) == [root / "test.txt", root / "val.zip",
                                                       root / "labels.txt"]
    root.mkdir(parents=True)
    (root / "test.txt").write_text("val.zip@0.jpg 0\n")
    (root / "labels.txt").write_text("a\nb\nc\n")
    assert missing_files(card, tmp_path, ["test"]) == [root / "val.zip"]
    with pytest.raises(MissingDataError) as err:
        open_split(card, tmp_path, "test")
    msg = str(err.value)
    assert str(root / "val.zip") in msg and "test.txt" not in msg.split("Expected")[0]
    assert f"<data root>/{ROOT}/ holding test.txt, val.zip, labels.txt" in msg
    assert expected_layout(card, ["test"]) in msg
    with pytest.raises(UserError, match="no split 'val'.*train, test"):
        missing_files(card, tmp_path, ["val"])


def test_index_pointing_to_unlisted_missing_zip(multiclass):
    data_root, _ = multiclass
    (data_root / ROOT / "test.txt").write_text("other.zip@a.jpg 0\n")
    with pytest.raises(MissingDataError, match=r"refers to the zip file .*other.zip"):
        open_split(_card(), data_root, "test")


def test_missing_member_and_corrupt_image_name_zip_member(multiclass):
    data_root, _ = multiclass
    root = data_root / ROOT
    good = _encode(_pixels(5), "JPEG")
    _zip(root / "val.zip", {"val/0.jpg": b"not an image at all",
                            "val/1.jpg": good[: len(good) // 2]})  # truncated JPEG
    (root / "test.txt").write_text("val.zip@val/0.jpg 0\nval.zip@val/1.jpg 1\n"
                                   "val.zip@val/gone.jpg 2\n")
    ds = open_split(_card(), data_root, "test")
    zip_path = root / "val.zip"
    with pytest.raises(CorruptImageError, match="not a readable image") as err:
        ds.open_image(0)
    assert f"{zip_path}@val/0.jpg" in str(err.value)
    with pytest.raises(CorruptImageError) as err:
        ds.open_image(1)
    assert f"{zip_path}@val/1.jpg" in str(err.value)
    with pytest.raises(MissingDataError, match="no such image in the zip file") as err:
        ds.open_image(2)
    assert f"{zip_path}@val/gone.jpg" in str(err.value)

    # Through the encoder's dataset wrapper the failures come back as data, not crashes.
    items = [_Decoded(ds, PILToTensor())[i] for i in range(3)]
    assert all(x is None and err for x, _, err in items)
