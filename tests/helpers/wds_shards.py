"""WebDataset shards for trainer tests, written from the trainer's CSV format.

``csv_to_shards`` is the recipe docs/training/shards.md shows (webdataset's ``ShardWriter``),
so the tests run it as users would (tests/test_wds_train.py holds it to the page's code).
"""

from __future__ import annotations

import csv
import io
import tarfile
from pathlib import Path

import webdataset as wds


def csv_to_shards(src: Path, pattern: str, maxcount: int) -> list[Path]:
    """The docs' recipe: every row of the tab-separated CSV ``src`` (``filepath``,
    ``title``) becomes a sample ``{key}.png`` + ``{key}.txt``; ``pattern`` such as
    ``shards/%05d.tar``, ``maxcount`` samples a shard. Returns the shards written."""
    with wds.ShardWriter(pattern, maxcount=maxcount, verbose=0) as sink:
        with src.open(encoding="utf-8-sig", newline="") as f:
            for i, row in enumerate(csv.DictReader(f, delimiter="\t")):
                image = src.parent / row["filepath"]
                sink.write({"__key__": f"{i:09d}",
                            image.suffix[1:].lower(): image.read_bytes(),
                            "txt": row["title"]})
    return sorted(Path(pattern).parent.glob("*.tar"))


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """A plain tar of ``(name, data)`` members, in order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def png(seed: int) -> bytes:
    """A small valid PNG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (seed % 256, (7 * seed) % 256, 90)).save(buf, format="png")
    return buf.getvalue()


def digits_shards(folder: Path, rows: int, per_shard: int) -> list[Path]:
    """``folder/shards/00000.tar ..``: ``rows`` digits (``train_data.digits_csv``) written by
    the docs' recipe, ``per_shard`` samples a shard. Returns the shards written."""
    from train_data import digits_csv

    csv = digits_csv(folder, rows)
    (folder / "shards").mkdir()
    return csv_to_shards(csv, str(folder / "shards" / "%05d.tar"), per_shard)
