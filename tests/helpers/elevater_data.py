"""Writes small synthetic ELEVATER datasets in a card's real on-disk layout (zips + index
files or COCO JSON), with images whose colour encodes their class."""

from __future__ import annotations

import io
import json
import zipfile
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from itra_bench.vision_benchmark.cards import DatasetCard


def _png(colour: np.ndarray, rng: np.random.Generator) -> bytes:
    pixels = np.clip(colour + rng.normal(0, 8, size=(16, 16, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _labels(card: DatasetCard, i: int, rng: np.random.Generator) -> list[int]:
    first = i % card.num_classes
    if card.multilabel and rng.random() < 0.5:
        second = int(rng.integers(card.num_classes))
        return sorted({first, second})
    return [first]


def write_dataset(card: DatasetCard, data_root: Path, per_class: int = 4, seed: int = 0
                  ) -> dict[str, list[list[int]]]:
    """Write every split of ``card`` under ``data_root``; returns the labels per split."""
    rng = np.random.default_rng(seed)
    palette = rng.uniform(0, 255, size=(card.num_classes, 3))
    root = data_root / card.root
    root.mkdir(parents=True, exist_ok=True)
    zips: dict[str, dict[str, bytes]] = defaultdict(dict)
    out: dict[str, list[list[int]]] = {}
    for split, spec in card.splits.items():
        zip_name = spec.files[0]
        count = per_class * card.num_classes
        labels = [_labels(card, i, rng) for i in range(count)]
        members = []
        for i, labs in enumerate(labels):
            member = f"{split}/img {i}.png"  # a space, as real paths may hold
            zips[zip_name][member] = _png(palette[labs].mean(axis=0), rng)
            members.append(member)
        out[split] = labels
        if card.format == "coco":
            doc = {
                "categories": [{"id": c + 1, "name": n} for c, n in enumerate(card.classnames)],
                "images": [{"id": i + 1, "file_name": f"{zip_name}@{m}", "width": 16,
                            "height": 16} for i, m in enumerate(members)],
                "annotations": [{"id": len(labels) * k + i + 1, "image_id": i + 1,
                                 "category_id": lab + 1}
                                for i, labs in enumerate(labels) for k, lab in enumerate(labs)],
            }
            (root / spec.index).write_text(json.dumps(doc))
        else:
            lines = [f"{zip_name}@{m} {','.join(map(str, labs))}"
                     for m, labs in zip(members, labels, strict=True)]
            (root / spec.index).write_text("\n".join(lines) + "\n")
    for zip_name, members in zips.items():
        with zipfile.ZipFile(root / zip_name, "w") as zf:
            for member, data in members.items():
                zf.writestr(member, data)
    if card.labelmap:
        (root / card.labelmap).write_text("\n".join(card.classnames) + "\n")
    return out
