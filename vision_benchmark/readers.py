"""Readers of ELEVATER's classification datasets, as its download leaves them on disk.

Two formats, both as Microsoft's ``vision-datasets`` package (which ELEVATER's toolkit uses)
reads them; images are read straight out of the zip files, never extracted.

**Index format** (``format: index`` on the card; vision-datasets calls it "iris"). Source:
``vision_datasets/common/data_manifest/iris_data_manifest_adaptor.py`` (``IrisManifestAdaptor``;
``vision_datasets/common/data_manifest.py`` in the 0.2 releases ELEVATER pinned):

- one line per image, ``<zip>@<path inside zip> <labels>``; the line is stripped, blank lines are
  skipped, and it is split at its *last* space only, because the image path may hold spaces
  (we split at the last whitespace, so a tab separator works too);
- labels are 0-based class indices, comma-separated for multilabel (``0,4,7``);
- the image reference is relative to the dataset's root folder; ``<zip>@<member>`` is split at
  the first ``@`` (``vision_datasets/common/data_reader/file_reader.py``, ``FileReader.open``)
  and a reference without ``@`` is a plain file; backslashes become ``/``;
- the label map (``labels.txt`` / ``labelmap.txt``) has one class name per line, in label order,
  stripped, blank lines skipped.

Where vision-datasets would accept a line with no label part (an unlabeled image), we refuse it:
a classification benchmark cannot score an image without a label, and a missing label is far
more often a broken file than an intended negative.

**COCO format** (``format: coco``). Source: ``vision_datasets/common/data_manifest/
coco_manifest_adaptor.py`` and ``vision_datasets/image_classification/coco_manifest_adaptor.py``
(``CocoManifestAdaptor`` in ``vision_datasets/common/data_manifest.py`` of the 0.2 releases):

- the split's index file is a JSON object with ``images`` (``id``, ``file_name``, optional
  ``zip_file``), ``annotations`` (``image_id``, ``category_id``) and ``categories`` (``id``,
  ``name``);
- the image reference is ``zip_file + "@" + file_name`` when ``zip_file`` is given, else
  ``file_name`` itself (which may already read ``images.zip@path``), relative to the root folder;
- categories are sorted by ``id`` and a category's label is its position in that order (the 0.2
  releases subtract the smallest id, which is the same for ELEVATER's contiguous 1-based ids);
  class names are the category names in that order;
- images are sorted by ``id``; an image without annotations is kept with no label (a negative
  image). We keep that for multilabel datasets; for multiclass ones an image needs exactly one
  annotation (recent vision-datasets also refuses a second one), else it is an error.

Targets: ``list[int]`` for multiclass datasets, ``list[list[int]]`` (sorted, no duplicates) for
multilabel ones; ``label_matrix()`` gives the ``[N, C]`` 0/1 matrix for either.
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from itra_bench.datasets.image_source import ImageSource
from itra_bench.errors import CorruptImageError, MissingDataError, UserError
from itra_bench.fingerprint import files_identity
from itra_bench.paths import is_existing_file
from itra_bench.vision_benchmark.cards import DatasetCard

if TYPE_CHECKING:
    import torch

__all__ = ["ElevaterSplit", "expected_layout", "missing_files", "open_split"]


def _check_splits(card: DatasetCard, splits: Iterable[str]) -> list[str]:
    splits = list(splits)
    for s in splits:
        if s not in card.splits:
            raise UserError(
                f"dataset {card.name!r} has no split {s!r}; its card ({card.path or 'built-in'}) "
                f"defines {', '.join(card.splits)}"
            )
    return splits


def expected_layout(card: DatasetCard, splits: Sequence[str] | None = None) -> str:
    """One line describing the files a dataset's splits need under the data root."""
    splits = _check_splits(card, card.splits if splits is None else splits)
    names: list[str] = []
    for s in splits:
        spec = card.splits[s]
        names += [spec.index, *spec.files]
    if card.labelmap:
        names.append(card.labelmap)
    names = list(dict.fromkeys(names))
    return f"<data root>/{card.root}/ holding {', '.join(names)} (as ELEVATER's download leaves it)"


def missing_files(card: DatasetCard, data_root: str | Path,
                  splits: Sequence[str] | None = None) -> list[Path]:
    """The index files, zip files and label map of ``splits`` (all splits by default) that
    are not present under ``data_root``; empty when the dataset is complete."""
    splits = _check_splits(card, card.splits if splits is None else splits)
    return [p for p in card.required_files(data_root, splits) if not p.is_file()]


def open_split(card: DatasetCard, data_root: str | Path, split: str) -> ElevaterSplit:
    """One split of an ELEVATER dataset as an image source with ``targets`` and ``classes``."""
    return ElevaterSplit(card, data_root, split)


class ElevaterSplit(ImageSource):
    """The images and labels of one split of an ELEVATER dataset, read from its zip files.

    Attributes: ``card``, ``split``, ``root`` (the dataset folder), ``index_path``,
    ``classes`` (class names in label order), ``targets`` (``list[int]`` for multiclass,
    ``list[list[int]]`` for multilabel), ``multilabel``, ``num_classes``, ``identity``.

    Picklable: open zip handles stay in the process that opened them, so each DataLoader
    worker opens its own.
    """

    def __init__(self, card: DatasetCard, data_root: str | Path, split: str) -> None:
        _check_splits(card, [split])
        self.card = card
        self.split = split
        self.multilabel = card.multilabel
        self.num_classes = card.num_classes
        self.root = card.split_root(data_root).absolute()
        spec = card.splits[split]
        self.index_path = self.root / spec.index
        if spec.num_images == 0:
            raise UserError(
                f"dataset {card.name!r}: its card ({card.path or 'built-in'}) says split "
                f"{split!r} is not distributed (num_images: 0), so it cannot be read; use "
                "another --mode, or a card of your own that states the split's image count"
            )
        absent = missing_files(card, data_root, [split])
        if absent:
            raise MissingDataError(
                f"dataset {card.name!r}, split {split!r}: file not found: "
                f"{', '.join(str(p) for p in absent)}. Expected layout: "
                f"{expected_layout(card, [split])}. Pass the folder that holds "
                f"{card.root.split('/')[0]}/ as --data-root."
            )
        # Per image: which zip (position in _zip_paths; -1 for a plain file) and which member.
        self._zip_paths: list[Path] = []
        self._where: list[int] = []
        self._members: list[str] = []
        self.targets: list[int] | list[list[int]] = []
        self._zips: dict[tuple[int, Path], zipfile.ZipFile] = {}
        zip_pos: dict[str, int] = {}

        def add(ref: str) -> None:
            ref = ref.replace("\\", "/")
            if "@" in ref:
                zip_name, member = ref.split("@", 1)
                if zip_name not in zip_pos:
                    zip_pos[zip_name] = len(self._zip_paths)
                    self._zip_paths.append(self.root / zip_name)
                self._where.append(zip_pos[zip_name])
            else:
                member = ref
                self._where.append(-1)
            self._members.append(member)

        if card.format == "coco":
            refs, labels, self.classes = _read_coco(self.index_path, card)
            used = [self.index_path]
        else:
            refs, labels = _read_index(self.index_path, card)
            if card.labelmap:
                self.classes = _read_labelmap(self.root / card.labelmap, card)
                used = [self.index_path, self.root / card.labelmap]
            else:
                self.classes = list(card.classnames)
                used = [self.index_path]
        for ref in refs:
            add(ref)
        self.targets = labels if self.multilabel else [lab[0] for lab in labels]

        # A zip the index points into that the card does not name must exist too.
        for p in self._zip_paths:
            if not is_existing_file(p):
                raise MissingDataError(
                    f"dataset {card.name!r}, split {split!r}: {self.index_path} refers to the "
                    f"zip file {p}, which does not exist. Expected layout: "
                    f"{expected_layout(card, [split])}."
                )
        _check_count(self.index_path, card, split, len(refs))
        # Identity: path, size and mtime of every file the split reads, so a re-downloaded or
        # edited zip or index is never served stale cached features; the split name keeps two
        # splits sharing one zip (and one index) apart.
        files = list(dict.fromkeys([*used, *(self.root / f for f in spec.files),
                                    *self._zip_paths]))
        files += [self.root / m for w, m in zip(self._where, self._members, strict=True)
                  if w < 0]
        ident = files_identity(files, salt=f"{card.name}\0{split}\0{card.format}")
        self.identity = f"elevater:{card.name}:{split}:{ident}"

    def __len__(self) -> int:
        return len(self._members)

    def describe(self, index: int) -> str:
        """``<zip path>@<member>`` (or the plain file's path) of image ``index``."""
        where, member = self._where[index], self._members[index]
        if where < 0:
            return str(self.root / member)
        return f"{self._zip_paths[where]}@{member}"

    def _zip(self, where: int) -> zipfile.ZipFile:
        # Keyed by pid: after a fork the child inherits the parent's entries, but a ZipFile
        # shares its file offset with the parent's, so each process must open its own.
        path = self._zip_paths[where]
        key = (os.getpid(), path)
        zf = self._zips.get(key)
        if zf is None:
            try:
                zf = zipfile.ZipFile(path)
            except (OSError, zipfile.BadZipFile) as exc:
                raise MissingDataError(
                    f"{path} cannot be opened as a zip file ({exc}); download it again"
                ) from exc
            self._zips[key] = zf
        return zf

    def missing_images(self) -> list[str]:
        """One line per zip file (or the dataset folder) that lacks images the index lists;
        empty when every image is there. Reads the zips' directories, not the images."""
        problems: list[str] = []
        for where, path in [*enumerate(self._zip_paths), (-1, self.root)]:
            wanted = [m for w, m in zip(self._where, self._members, strict=True) if w == where]
            if not wanted:
                continue
            if where < 0:
                absent = [m for m in wanted if not is_existing_file(self.root / m)]
            else:
                try:
                    with zipfile.ZipFile(path) as zf:
                        present = set(zf.namelist())
                except (OSError, zipfile.BadZipFile) as exc:
                    problems.append(f"{path} cannot be opened as a zip file ({exc}); "
                                    "download it again")
                    continue
                absent = [m for m in wanted if m not in present]
            if absent:
                shown = ", ".join(repr(m) for m in absent[:3])
                more = f" and {len(absent) - 3} more" if len(absent) > 3 else ""
                container = f"the zip file {path}" if where >= 0 else f"the folder {path}"
                problems.append(
                    f"{len(absent)} of the {len(wanted)} images that {self.index_path} lists "
                    f"in {container} are not there: {shown}{more}. The download or extraction "
                    "is incomplete: download and extract the dataset again")
        return problems

    def open_image(self, index: int) -> Image.Image:
        """Image ``index``, fully decoded; errors name ``<zip>@<member>``."""
        where, member = self._where[index], self._members[index]
        try:
            if where < 0:
                data = (self.root / member).read_bytes()
            else:
                data = self._zip(where).read(member)
        except (KeyError, FileNotFoundError) as exc:
            container = "zip file" if where >= 0 else "dataset folder"
            raise MissingDataError(
                f"{self.describe(index)}: no such image in the {container} (listed in "
                f"{self.index_path}); the download may be incomplete"
            ) from exc
        except (OSError, zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise CorruptImageError(f"{self.describe(index)}: cannot be read ({exc})") from exc
        try:
            img = Image.open(io.BytesIO(data))
            # Decode now, so a truncated image fails here, where its name is known.
            img.load()
        except Exception as exc:  # PIL raises many kinds for bad image data
            raise CorruptImageError(
                f"{self.describe(index)}: not a readable image ({type(exc).__name__}: {exc})"
            ) from exc
        return img

    def label_matrix(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """``[N, num_classes]`` matrix with 1 where image ``n`` carries class ``c`` (one-hot
        rows for multiclass datasets); float32 unless ``dtype`` says otherwise."""
        import torch

        out = torch.zeros(len(self), self.num_classes,
                          dtype=torch.float32 if dtype is None else dtype)
        for n, labels in enumerate(self.targets):
            out[n, labels] = 1
        return out

    def close(self) -> None:
        """Close the zip files this process opened."""
        pid = os.getpid()
        for key in [k for k in self._zips if k[0] == pid]:
            self._zips.pop(key).close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_zips"] = {}  # open handles never cross a process boundary
        return state


# ---------------------------------------------------------------------------------------------
# Parsing


def _check_count(index_path: Path, card: DatasetCard, split: str, found: int) -> None:
    """Refuse an index that lists another number of images than the card states: a cut or
    edited file would otherwise be scored on the images it still lists."""
    expected = card.splits[split].num_images
    if expected is not None and found != expected:
        raise UserError(
            f"{index_path} lists {found} images, but the card of dataset {card.name!r} "
            f"({card.path or 'built-in'}) says split {split!r} has {expected} (num_images): "
            "the file is truncated or was edited. Download and extract the dataset again "
            "(for a dataset of your own, correct num_images in its card)."
        )


def _read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file (a byte-order mark is skipped), split at ``\\n``."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path} cannot be read ({exc})") from exc
    try:
        # utf-8-sig: files saved by some Windows editors start with a byte-order mark.
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise UserError(
            f"{path}, line {line}: not UTF-8 text (byte {data[exc.start]:#04x}); the file is "
            "damaged or not an ELEVATER file: download and extract the dataset again"
        ) from None
    return text.split("\n")


def _read_labelmap(path: Path, card: DatasetCard) -> list[str]:
    names = [s for s in (line.strip() for line in _read_lines(path)) if s]
    if len(names) != card.num_classes:
        raise UserError(
            f"label map {path} lists {len(names)} class names, but dataset {card.name!r} has "
            f"{card.num_classes} classes (num_classes in its card {card.path or ''}); it needs "
            "one class name per line, in label order"
        )
    return names


_LABELS = re.compile(r"[0-9]{1,9}(,[0-9]{1,9})*", re.ASCII)


def _check_ref(ref: str) -> str | None:
    """What is wrong with an image reference (``<zip>@<member>`` or a file path), if anything."""
    if "\x00" in ref:
        return "a NUL character in the image path"
    if "@" in ref:
        zip_name, member = ref.split("@", 1)
        if not zip_name.strip() or not member.strip():
            return "no image path (a zip name and a path inside it) before the label"
    return None


def _read_index(path: Path, card: DatasetCard) -> tuple[list[str], list[list[int]]]:
    """Image references and label lists of an index file, in file order."""
    if card.multilabel:
        expected = ("'<zip>@<path inside zip> <labels>' with comma-separated 0-based labels "
                    f"below {card.num_classes}, e.g. 'train.zip@img/1.jpg 0,4,7'")
    else:
        expected = (f"'<zip>@<path inside zip> <label>' with one 0-based label below "
                    f"{card.num_classes}, e.g. 'train.zip@img/1.jpg 3'")
    refs: list[str] = []
    labels: list[list[int]] = []
    first_line: dict[str, int] = {}

    def bad(line_no: int, line: str, what: str) -> UserError:
        return UserError(f"{path}, line {line_no}: {what} in {line!r}; expected {expected}")

    for line_no, raw in enumerate(_read_lines(path), start=1):
        line = raw.strip()
        if not line:
            continue
        parts = line.rsplit(None, 1)  # the last whitespace: the path itself may hold spaces
        if len(parts) != 2:
            raise bad(line_no, line, "no label after the image path")
        ref, label_text = parts
        problem = _check_ref(ref)
        if problem:
            raise bad(line_no, line, problem)
        # ASCII digits only: int() would also take '+3', '1_0' and other scripts' digits.
        if not _LABELS.fullmatch(label_text):
            raise bad(line_no, line, f"label {label_text!r} is not a (comma-separated list "
                      "of) non-negative integer(s)")
        labs = [int(x) for x in label_text.split(",")]
        for lab in labs:
            if not 0 <= lab < card.num_classes:
                raise bad(line_no, line, f"label {lab} is out of range")
        if not card.multilabel and len(labs) != 1:
            raise bad(line_no, line, f"{len(labs)} labels for a multiclass dataset")
        key = ref.replace("\\", "/")
        if key in first_line:
            raise UserError(
                f"{path}, lines {first_line[key]} and {line_no} list the same image {ref!r}; "
                "an image is listed once (with all its labels, comma-separated): the file "
                "was edited or damaged, download and extract the dataset again")
        first_line[key] = line_no
        refs.append(ref)
        labels.append(labs if len(labs) == 1 else sorted(set(labs)))
    return refs, labels


def _read_coco(path: Path, card: DatasetCard) -> tuple[list[str], list[list[int]], list[str]]:
    """Image references, label lists and class names of a COCO JSON, images sorted by id."""
    try:
        doc = json.loads(path.read_bytes().decode("utf-8-sig"))
    except OSError as exc:
        raise UserError(f"{path} cannot be read ({exc})") from exc
    except (ValueError, RecursionError) as exc:  # JSON and UTF-8 errors are ValueErrors
        raise UserError(f"{path} is not valid JSON ({exc}); the file is damaged: download "
                        "and extract the dataset again") from None

    def bad(what: str) -> UserError:
        return UserError(
            f"{path}: {what}. Expected a COCO JSON with 'images' [{{id, file_name, zip_file?}}], "
            "'annotations' [{image_id, category_id}] and 'categories' [{id, name}]"
        )

    if not isinstance(doc, dict):
        raise bad("the top level is not an object")
    for key in ("images", "annotations", "categories"):
        if not isinstance(doc.get(key), list):
            raise bad(f"field {key!r} is missing or not a list")

    def field(kind: str, i: int, entry: Any, key: str, types: tuple[type, ...] = (int,)
              ) -> Any:
        if not isinstance(entry, dict) or key not in entry:
            raise bad(f"{kind}[{i}] has no {key!r}")
        value = entry[key]
        if not isinstance(value, types) or isinstance(value, bool):
            want = " or ".join(t.__name__ for t in types)
            raise bad(f"{kind}[{i}] has {key!r} {value!r}, not a {want}")
        return value

    cats = [(field("categories", i, c, "id"), field("categories", i, c, "name", (str,)))
            for i, c in enumerate(doc["categories"])]
    cats.sort(key=lambda c: c[0])
    label_of = {cid: pos for pos, (cid, _) in enumerate(cats)}
    if len(label_of) != len(cats):
        raise bad("two categories share an id")
    if len(cats) != card.num_classes:
        raise bad(f"it has {len(cats)} categories, but dataset {card.name!r} has "
                  f"{card.num_classes} classes (num_classes in its card)")

    images: dict[Any, str] = {}
    seen: dict[str, Any] = {}
    for i, img in enumerate(doc["images"]):
        image_id = field("images", i, img, "id", (int, str))
        ref = field("images", i, img, "file_name", (str,))
        if img.get("zip_file"):
            ref = f"{field('images', i, img, 'zip_file', (str,))}@{ref}"
        problem = _check_ref(ref) or ("" if ref.strip() else "an empty file_name")
        if problem:
            raise bad(f"images[{i}] has {problem}")
        if image_id in images:
            raise bad(f"images[{i}] repeats the id {image_id!r}")
        key = ref.replace("\\", "/")
        if key in seen:
            raise bad(f"images with ids {seen[key]!r} and {image_id!r} are the same image "
                      f"{ref!r}; the file was edited or damaged, download it again")
        seen[key] = image_id
        images[image_id] = ref

    by_image: dict[Any, list[int]] = {k: [] for k in images}
    for i, ann in enumerate(doc["annotations"]):
        image_id = field("annotations", i, ann, "image_id", (int, str))
        cat = field("annotations", i, ann, "category_id")
        if image_id not in by_image:
            raise bad(f"annotations[{i}] refers to image id {image_id!r}, which is not in "
                      "'images'")
        if cat not in label_of:
            raise bad(f"annotations[{i}] has category_id {cat!r}, which is not in 'categories'")
        by_image[image_id].append(label_of[cat])

    try:
        order = sorted(images)
    except TypeError:  # mixed id types: keep the file's order
        order = list(images)
    refs: list[str] = []
    labels: list[list[int]] = []
    for image_id in order:
        labs = sorted(set(by_image[image_id]))
        if not card.multilabel and len(by_image[image_id]) != 1:
            raise bad(f"image id {image_id!r} ({images[image_id]}) has "
                      f"{len(by_image[image_id])} annotations; a multiclass dataset needs "
                      "exactly one per image")
        refs.append(images[image_id])
        labels.append(labs)
    return refs, labels, [name for _, name in cats]
