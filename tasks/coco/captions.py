"""COCO caption annotations as retrieval data: the official captions JSON and Karpathy's split.

Both readers expose the images that have at least one caption, in a fixed order, with
``captions`` and ``text_to_image`` aligned (the shape :class:`~itra_bench.generic_tasks.
RetrievalTask` consumes):

- :class:`CocoCaptions` reads ``captions_val2017.json`` (or any file in the COCO captions
  format) with pycocotools. Images are ordered by image id, as torchvision's ``CocoCaptions``
  (and so clip-benchmark) orders them, whatever the order of the JSON's ``images`` list; each
  image's captions keep the order of the JSON's ``annotations`` list.
- :class:`KarpathyCaptions` reads Karpathy's ``dataset_coco.json`` (``{"images": [{"filepath",
  "filename", "split", "sentences": [{"raw", ...}]}]}``) and keeps one split; images keep the
  file's order, captions are each sentence's ``raw`` text.

An image listed without any caption cannot be scored by text retrieval (no caption can find
it), so it is left out and counted in ``uncaptioned``; retrieval runs on the others.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

from itra_bench.datasets.image_source import ImageFiles
from itra_bench.datasets.text_files import check_no_nul, read_json
from itra_bench.errors import MissingDataError, UserError
from itra_bench.fingerprint import files_identity

COCO_LAYOUT = ("{annotations}: COCO captions JSON ({{'images': [{{'id', 'file_name'}}], "
               "'annotations': [{{'image_id', 'caption'}}]}}); images at {images}/<file_name>")
KARPATHY_LAYOUT = ("{file}: Karpathy's caption split ({{'images': [{{'filepath', 'filename', "
                   "'split', 'sentences': [{{'raw'}}]}}]}}), split {split!r} evaluated; "
                   "images at {images}/<filepath>/<filename>")


class CaptionedImages(ImageFiles):
    """Image files with their captions: ``captions[j]`` describes image ``text_to_image[j]``.

    ``uncaptioned`` names the listed images left out for having no caption.
    """

    def __init__(self, kind: str, annotation_file: Path, paths: list[Path],
                 captions: list[list[str]], uncaptioned: list[str]) -> None:
        if not paths:
            raise UserError(f"{annotation_file}: no image with a caption to evaluate")
        self.paths = paths
        self.captions = [c for per_image in captions for c in per_image]
        self.text_to_image = [i for i, per_image in enumerate(captions) for _ in per_image]
        self.uncaptioned = uncaptioned
        self.identity = f"{kind}:" + _images_identity(annotation_file, paths)

    def summary(self) -> dict[str, Any]:
        """JSON-able counts for a result's details."""
        out: dict[str, Any] = {"images_without_captions": len(self.uncaptioned)}
        if self.uncaptioned:
            out["images_without_captions_examples"] = self.uncaptioned[:10]
        return out


def _images_identity(annotation_file: Path, paths: list[Path]) -> str:
    """Identity of the annotation file's location and of each image's path, size and mtime.

    The captions are not part of it: they are encoded, and cached, as texts.
    """
    return files_identity(paths, salt=str(annotation_file.resolve()))


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise MissingDataError(f"{what} not found: {path}")
    return read_json(path, what)


#: JSON types of the fields read, and how to name them in messages.
_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "id": ((int,), "an integer"), "image_id": ((int,), "an integer"),
    "file_name": ((str,), "a string"), "caption": ((str,), "a string"),
    "filename": ((str,), "a string"), "filepath": ((str, type(None)), "a string"),
    "split": ((str,), "a string"), "sentences": ((list,), "a list"), "raw": ((str,), "a string"),
}


def _require(record: Any, keys: tuple[str, ...], where: str, path: Path) -> None:
    """``record`` is an object with ``keys``, each of the JSON type the format gives it."""
    if not isinstance(record, dict):
        raise UserError(f"{path}: {where} must be an object, got {type(record).__name__}")
    missing = [k for k in keys if k not in record]
    if missing:
        raise UserError(f"{path}: {where} lacks key(s) {missing}; it needs {list(keys)}")
    for key in (*keys, "filepath"):
        if key not in record or key not in _TYPES:
            continue
        types, name = _TYPES[key]
        value = record[key]
        if not isinstance(value, types) or isinstance(value, bool):
            raise UserError(f"{path}: {where}.{key} must be {name}, got "
                            f"{type(value).__name__} ({value!r:.60})")
        if isinstance(value, str) and key in ("file_name", "filename", "filepath"):
            check_no_nul(value, f"{path}: {where}.{key}")


class CocoCaptions(CaptionedImages):
    """A COCO captions file (e.g. ``captions_val2017.json``) and its image folder."""

    def __init__(self, annotation_file: str | Path, image_root: str | Path) -> None:
        from pycocotools.coco import COCO

        path, root = Path(annotation_file), Path(image_root)
        what = "a COCO captions file ({'images': [...], 'annotations': [...]})"
        doc = _read_json(path, what)
        if not isinstance(doc, dict):
            raise UserError(f"{path}: expected {what}, got a JSON {type(doc).__name__}")
        for key in ("images", "annotations"):
            if not isinstance(doc.get(key), list):
                raise UserError(f"{path}: key {key!r} must hold a list; expected {what}")
        image_ids: set[int] = set()
        for n, image in enumerate(doc["images"]):
            _require(image, ("id", "file_name"), f"images[{n}]", path)
            if image["id"] in image_ids:
                # pycocotools would keep the last one silently.
                raise UserError(f"{path}: images[{n}] repeats image id {image['id']}; each "
                                "image must be listed once")
            image_ids.add(image["id"])
        ann_ids: set[int] = set()
        for n, ann in enumerate(doc["annotations"]):
            _require(ann, ("id", "image_id", "caption"), f"annotations[{n}]", path)
            if ann["id"] in ann_ids:
                # pycocotools would give both captions the text of the last one.
                raise UserError(f"{path}: annotations[{n}] repeats annotation id {ann['id']}; "
                                "each caption needs its own id")
            ann_ids.add(ann["id"])
            if ann["image_id"] not in image_ids:
                raise UserError(f"{path}: annotations[{n}] (id {ann['id']}) refers to image_id "
                                f"{ann['image_id']}, which 'images' does not list")
        # pycocotools announces its progress on stdout, which is the CLI's result table.
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO()
            coco.dataset = doc
            coco.createIndex()
        paths: list[Path] = []
        captions: list[list[str]] = []
        uncaptioned: list[str] = []
        for image_id in sorted(coco.imgs):
            info = coco.imgs[image_id]
            texts = [str(a["caption"]) for a in coco.loadAnns(coco.getAnnIds(imgIds=image_id))]
            if not texts:
                uncaptioned.append(str(info["file_name"]))
                continue
            paths.append(root / info["file_name"])
            captions.append(texts)
        super().__init__("coco-captions", path, paths, captions, uncaptioned)


class KarpathyCaptions(CaptionedImages):
    """One split (``test``, ``val``, ``train`` or ``restval``) of Karpathy's ``dataset_*.json``."""

    def __init__(self, split_file: str | Path, image_root: str | Path, split: str = "test"
                 ) -> None:
        path, root = Path(split_file), Path(image_root)
        what = "Karpathy's caption split ({'images': [{'filepath', 'filename', 'split', " \
               "'sentences'}]})"
        doc = _read_json(path, what)
        if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
            raise UserError(f"{path}: expected {what}")
        paths: list[Path] = []
        captions: list[list[str]] = []
        uncaptioned: list[str] = []
        splits: set[str] = set()
        for n, image in enumerate(doc["images"]):
            _require(image, ("filename", "split", "sentences"), f"images[{n}]", path)
            splits.add(str(image["split"]))
            if image["split"] != split:
                continue
            # Flickr30k's and Flickr8k's files have no filepath: images sit in the root.
            rel = Path(image.get("filepath") or "") / image["filename"]
            texts = []
            for s, sentence in enumerate(image["sentences"]):
                _require(sentence, ("raw",), f"images[{n}].sentences[{s}]", path)
                texts.append(str(sentence["raw"]))
            if not texts:
                uncaptioned.append(str(rel))
                continue
            paths.append(root / rel)
            captions.append(texts)
        if not paths and not uncaptioned:
            raise UserError(f"{path}: no image has split {split!r}; the file's splits are "
                            f"{sorted(splits)}")
        super().__init__(f"karpathy-{split}", path, paths, captions, uncaptioned)
