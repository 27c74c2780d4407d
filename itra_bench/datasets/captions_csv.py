"""Image-caption tables in the trainer's CSV format (``filepath`` and ``title`` columns).

Several rows may share an image: each row is one caption of it. Relative image paths are
resolved against the CSV file's folder. The file is UTF-8 (a byte-order mark is allowed);
quoting follows the csv module (a field may be quoted with ``"``, a quote inside it doubled).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from itra_bench.datasets.image_source import ImageFiles
from itra_bench.datasets.text_files import check_no_nul, csv_records
from itra_bench.errors import MissingDataError, UserError
from itra_bench.fingerprint import files_identity


class CaptionsCSV(ImageFiles):
    """Unique images of a caption table, with ``captions`` and ``text_to_image`` aligned."""

    def __init__(self, path: str | Path, separator: str = "\t", img_key: str = "filepath",
                 caption_key: str = "title") -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise MissingDataError(
                f"caption table not found: {self.path}. Expected a {_sep_name(separator)}-"
                f"separated file with a header naming the columns {img_key!r} and {caption_key!r}."
            )
        self.paths: list[Path] = []
        self.captions: list[str] = []
        self.text_to_image: list[int] = []
        index_of: dict[str, int] = {}
        records = csv_records(self.path, separator)
        _, header = next(records, (1, None))
        if header is None:
            raise UserError(f"{self.path} is empty; it needs a header line and caption rows.")
        missing = [k for k in (img_key, caption_key) if k not in header]
        if missing:
            raise UserError(
                f"{self.path}, line 1: header {header} lacks column(s) {missing}. Name the "
                f"columns {img_key!r} and {caption_key!r}, or set img_key / caption_key "
                f"(and separator, now {separator!r})."
            )
        ii, ci = header.index(img_key), header.index(caption_key)
        for line_no, row in records:
            if not row:
                continue
            if len(row) != len(header):
                raise UserError(
                    f"{self.path}, line {line_no}: expected {len(header)} "
                    f"{_sep_name(separator)}-separated fields, found {len(row)}. "
                    "Quote fields that contain the separator."
                )
            file = check_no_nul(row[ii], f"{self.path}, line {line_no}")
            caption = row[ci]
            if file not in index_of:
                index_of[file] = len(self.paths)
                p = Path(file)
                self.paths.append(p if p.is_absolute() else self.path.parent / p)
            self.captions.append(caption)
            self.text_to_image.append(index_of[file])
        if not self.captions:
            raise UserError(f"{self.path} has a header but no caption rows.")
        # The table's bytes (captions, order) and every image's path, size and mtime.
        table = hashlib.sha256(self.path.read_bytes()).hexdigest()
        self.identity = "captions:" + files_identity(
            self.paths, salt=f"{self.path.resolve()}\0{table}")


def _sep_name(separator: str) -> str:
    return {"\t": "tab", ",": "comma"}.get(separator, repr(separator))
