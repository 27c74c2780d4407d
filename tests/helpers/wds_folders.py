"""clip-benchmark webdataset folders for evaluation tests, written with webdataset's
``TarWriter`` in clip-benchmark's layout; the same image bytes are also written as an
ImageFolder tree / a caption table, so a ``wds`` number can be compared with the number of
the same images read the established way."""

from __future__ import annotations

import io
from pathlib import Path

import webdataset
from PIL import Image

CLASSES = ("bird", "cat", "dog")


def png(c: int, i: int) -> bytes:
    colour = ((90 * c + 37 * i) % 256, (50 * i + 20 * c) % 256, (255 - 70 * c + 13 * i) % 256)
    img = Image.new("RGB", (16, 16), colour)
    img.putpixel((i % 16, c), (255 - colour[0], 0, 255))
    buf = io.BytesIO()
    img.save(buf, format="png")
    return buf.getvalue()


def write_shards(split_dir: Path, samples: list[dict], per_shard: int) -> None:
    """``samples`` into ``0.tar, 1.tar, ...`` with ``nshards.txt``, as clip-benchmark does."""
    split_dir.mkdir(parents=True)
    chunks = [samples[i:i + per_shard] for i in range(0, len(samples), per_shard)]
    for n, chunk in enumerate(chunks):
        with webdataset.TarWriter(str(split_dir / f"{n}.tar")) as sink:
            for sample in chunk:
                sink.write(sample)
    (split_dir / "nshards.txt").write_text(f"{len(chunks)}\n")


def make_classification(data: Path, n: int = 5, per_shard: int = 4,
                        splits: tuple[str, ...] = ("train", "test")) -> Path:
    """``data/wds_toy`` (webdataset) and ``data/folder`` (ImageFolder) of the same images, in
    the same order (class-major, names sorted)."""
    root = data / "wds_toy"
    root.mkdir(parents=True)
    (root / "classnames.txt").write_text("".join(f"{c}\n" for c in CLASSES))
    (root / "zeroshot_classification_templates.txt").write_text(
        "a photo of a {c}.\na blurry photo of a {c}.\n")
    for s, split in enumerate(splits):
        samples = []
        for c, cls in enumerate(CLASSES):
            folder = data / "folder" / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                image = png(c, i + 10 * s)
                (folder / f"{i:03d}.png").write_bytes(image)
                samples.append({"__key__": f"s{c}{i:03d}", "png": image, "cls": c})
        write_shards(root / split, samples, per_shard)
    return root


def make_retrieval(data: Path, n: int = 6, per_shard: int = 4) -> Path:
    """``data/wds_caps`` (webdataset retrieval) and ``data/caps.tsv`` of the same images."""
    root = data / "wds_caps"
    root.mkdir(parents=True)
    (root / "dataset_type.txt").write_text("retrieval\n")
    (data / "imgs").mkdir()
    rows, samples = ["filepath\ttitle"], []
    for i in range(n):
        image = png(i % 3, i)
        (data / "imgs" / f"{i}.png").write_bytes(image)
        captions = [f"picture number {i}", f"image {i} of {n}"][: 1 + i % 2]
        rows += [f"imgs/{i}.png\t{cap}" for cap in captions]
        samples.append({"__key__": f"s{i:04d}", "webp" if i == 0 else "png": image,
                        "txt": "\n".join(captions)})
    # webp is clip-benchmark's default format; lossless, so the pixels are the PNG's.
    samples[0]["webp"] = _as_webp(samples[0]["webp"])
    (data / "caps.tsv").write_text("\n".join(rows) + "\n")
    write_shards(root / "test", samples, per_shard)
    return root


def _as_webp(png_bytes: bytes) -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(png_bytes)).save(buf, format="webp", lossless=True)
    return buf.getvalue()
