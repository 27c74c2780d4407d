"""The demo's training set: scikit-learn's digits training split as an image-caption CSV."""

from __future__ import annotations

from pathlib import Path

from itra_bench import DigitsSplit, atomic_write_text, captions_for


def write_digits_csv(folder: Path) -> Path:
    """Write ``folder/images/*.png`` and ``folder/train.csv`` (tab-separated ``filepath`` and
    ``title``: one row per image and caption phrasing); returns the CSV's path. The held-out
    split that the ``demo`` suite evaluates is never written."""
    split = DigitsSplit("train")
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(len(split)):
        name = f"digit_{i:04d}.png"
        path = images / name
        if not path.exists():
            split.open_image(i).save(path)
        rows.extend((f"images/{name}", caption) for caption in captions_for(split.targets[i]))
    lines = ["filepath\ttitle"] + [f"{p}\t{c}" for p, c in rows]
    return atomic_write_text(folder / "train.csv", "\n".join(lines) + "\n")

