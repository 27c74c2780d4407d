"""Training data: an image-caption CSV (the ITRA / open_clip format) as a Dataset."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from itra_bench import (
    CorruptImageError,
    MissingDataError,
    UserError,
    check_no_nul,
    csv_records,
    is_existing_file,
    to_rgb,
)


def _separator_name(sep: str) -> str:
    return {"\t": "tab", ",": "comma", ";": "semicolon", " ": "space"}.get(sep, repr(sep))


class CsvImageText(Dataset):
    """Rows of (image path, caption) from a CSV with a header line.

    Relative image paths are taken from the CSV's folder. Every path is checked when the
    file is read, so a missing image stops the run before training, naming its row. The file
    is UTF-8 (a byte-order mark is allowed); a bad byte or broken quoting names its line.
    """

    def __init__(self, path: str | Path, image_key: str = "filepath", caption_key: str = "title",
                 separator: str = "\t", transform: Callable[[Image.Image], torch.Tensor] | None
                 = None, teacher_transform: Callable[[Image.Image], torch.Tensor] | None = None
                 ) -> None:
        self.path = Path(path)
        self.teacher_transform = teacher_transform
        if not self.path.is_file():
            raise MissingDataError(f"--train-data {self.path}: no such file")
        self.transform = transform
        self.images: list[Path] = []
        self.captions: list[str] = []
        self.rows: list[int] = []  # 1-based line numbers, for messages
        records = csv_records(self.path, separator)
        _, header = next(records, (1, None))
        if header is None:
            raise UserError(f"{self.path}: the file is empty; expected a header line with "
                            f"columns {image_key!r} and {caption_key!r}")
        for key, flag in ((image_key, "--csv-img-key"), (caption_key, "--csv-caption-key")):
            if key not in header:
                raise UserError(
                    f"{self.path}, line 1: no column {key!r} ({flag}); the header "
                    f"({_separator_name(separator)}-separated, --csv-separator) has columns "
                    f"{header}")
        img_col, cap_col = header.index(image_key), header.index(caption_key)
        base = self.path.parent
        for line, row in records:
            if not row:
                continue
            if len(row) <= max(img_col, cap_col):
                raise UserError(f"{self.path}, line {line}: {len(row)} column(s), the "
                                f"header has {len(header)}")
            image = Path(check_no_nul(row[img_col], f"{self.path}, line {line}"))
            image = image if image.is_absolute() else base / image
            if not is_existing_file(image):
                raise MissingDataError(f"{self.path}, line {line}: image {image} does not "
                                       "exist (relative paths are read from the CSV's "
                                       "folder)")
            self.images.append(image)
            self.captions.append(row[cap_col])
            self.rows.append(line)
        if not self.images:
            raise UserError(f"{self.path}: no data rows after the header; the training set "
                            "is empty")

    def __len__(self) -> int:
        return len(self.images)

    def open_image(self, index: int) -> Image.Image:
        """Row ``index``'s image, decoded as evaluation decodes it (``to_rgb``); a clear
        error names the row if it cannot be."""
        path = self.images[index]
        where = f"{self.path}, line {self.rows[index]}"
        try:
            # PIL only warns between MAX_IMAGE_PIXELS and twice that; a training image that
            # large is refused like a bigger one.
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as img:
                    return to_rgb(img)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise CorruptImageError(
                f"{where}: image {path} is refused as a possible decompression bomb ({exc}). "
                "Downscale the image or remove the row.") from exc
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise CorruptImageError(f"{where}: cannot decode image {path}: {exc}. Remove the "
                                    "row or replace the file.") from exc

    def __getitem__(self, index: int) -> tuple[Any, Any, str, int] | DecodeFailure:
        """(image for the model, image for the teacher or None, caption, index), or a
        :class:`DecodeFailure` for an image that cannot be decoded."""
        try:
            img = self.open_image(index)
        except CorruptImageError as exc:
            return DecodeFailure(str(exc))
        teacher = self.teacher_transform(img) if self.teacher_transform else None
        return (self.transform(img) if self.transform else img), teacher, \
            self.captions[index], index


class DecodeFailure(NamedTuple):
    """An image that could not be decoded, passed on as data: raised in a DataLoader worker,
    the error would reach the user wrapped in the worker's traceback. The trainer raises it."""

    message: str


class Batch(NamedTuple):
    """A training batch: images, the teacher's images (or None), captions, row indices
    (sample ids for webdataset shards); for shards also what the worker skipped
    (``--skip-corrupt``) since its last batch, and how many samples it read a second time
    this epoch."""

    images: torch.Tensor
    teacher_images: torch.Tensor | None
    texts: list[str]
    indices: torch.Tensor
    skipped: tuple[str, ...] = ()
    repeats: int = 0


def collate(items: list[tuple[Any, Any, str, int] | DecodeFailure]) -> Batch | DecodeFailure:
    """Stack images; keep captions as strings (towers tokenise them themselves). A batch with
    an undecodable image is its first :class:`DecodeFailure`."""
    failure = next((item for item in items if isinstance(item, DecodeFailure)), None)
    if failure is not None:
        return failure
    images, teacher, captions, indices = zip(*items, strict=True)
    return Batch(torch.stack(images), None if teacher[0] is None else torch.stack(teacher),
                 list(captions), torch.tensor(indices))
