"""Writes small synthetic ELEVATER datasets in a card's real on-disk layout (zips + index
files or COCO JSON), with images whose colour encodes their class."""

from __future__ import annotations

import io
import json
import zipfile
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from itra_bench.vision_benchmark.cards import DatasetCard, find_card


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


def tiny_card(card: DatasetCard, per_class: int = 4) -> DatasetCard:
    """``card`` with the image counts of the data :func:`write_dataset` writes for it
    (``per_class * num_classes`` per split), so the readers' count check passes."""
    count = per_class * card.num_classes
    return replace(card, splits={s: replace(spec, num_images=count)
                                 for s, spec in card.splits.items()})


def use_tiny_cards(monkeypatch, names: Iterable[str], per_class: int = 4) -> None:
    """Make the built-in cards ``names`` describe tiny datasets (see :func:`tiny_card`) for the
    rest of the test: the registry's ELEVATER tasks, ``find_card`` and ``submit`` use them."""
    import itra_bench.vision_benchmark.cards as cards_module
    import itra_bench.vision_benchmark.plugin as elevater_plugin

    real = cards_module.builtin_cards()
    tiny = {find_card(n).name: tiny_card(find_card(n), per_class) for n in names}
    patched = tuple(tiny.get(c.name, c) for c in real)
    monkeypatch.setattr(cards_module, "builtin_cards", lambda: patched)
    monkeypatch.setattr(elevater_plugin, "builtin_cards", lambda: patched)


def write_dataset(card: DatasetCard, data_root: Path, per_class: int = 4, seed: int = 0,
                  splits: Iterable[str] | None = None, use_card_counts: bool = False
                  ) -> dict[str, list[list[int]]]:
    """Write the splits of ``card`` (all by default) under ``data_root``; returns the labels
    per split.

    Each split holds ``per_class * num_classes`` images (image ``i`` has class
    ``i % num_classes``), or the card's own ``num_images`` with ``use_card_counts``; the card's
    counts must match for the readers to accept the data (:func:`tiny_card`). A split whose
    card lists no zip file gets plain image files, referenced without ``@``.
    """
    rng = np.random.default_rng(seed)
    palette = rng.uniform(0, 255, size=(card.num_classes, 3))
    root = data_root / card.root
    root.mkdir(parents=True, exist_ok=True)
    zips: dict[str, dict[str, bytes]] = defaultdict(dict)
    out: dict[str, list[list[int]]] = {}
    for split in (card.splits if splits is None else splits):
        spec = card.splits[split]
        zip_name = spec.files[0] if spec.files else None
        count = spec.num_images if use_card_counts else per_class * card.num_classes
        labels = [_labels(card, i, rng) for i in range(count)]
        refs = []
        for i, labs in enumerate(labels):
            member = f"{split}/img {i}.png"  # a space, as real paths may hold
            data = _png(palette[labs].mean(axis=0), rng)
            if zip_name is None:
                (root / split).mkdir(exist_ok=True)
                (root / member).write_bytes(data)
                refs.append(member)
            else:
                zips[zip_name][member] = data
                refs.append(f"{zip_name}@{member}")
        out[split] = labels
        if card.format == "coco":
            doc = {
                "categories": [{"id": c + 1, "name": n} for c, n in enumerate(card.classnames)],
                "images": [{"id": i + 1, "file_name": ref, "width": 16,
                            "height": 16} for i, ref in enumerate(refs)],
                "annotations": [{"id": len(labels) * k + i + 1, "image_id": i + 1,
                                 "category_id": lab + 1}
                                for i, labs in enumerate(labels) for k, lab in enumerate(labs)],
            }
            (root / spec.index).write_text(json.dumps(doc))
        else:
            lines = [f"{ref} {','.join(map(str, labs))}"
                     for ref, labs in zip(refs, labels, strict=True)]
            (root / spec.index).write_text("\n".join(lines) + "\n")
    for zip_name, members in zips.items():
        with zipfile.ZipFile(root / zip_name, "w") as zf:
            for member, data in members.items():
                zf.writestr(member, data)
    if card.labelmap:
        (root / card.labelmap).write_text("\n".join(card.classnames) + "\n")
    return out
