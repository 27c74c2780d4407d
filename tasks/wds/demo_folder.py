"""The demo digits as a clip-benchmark webdataset folder, to try ``--tasks wds:`` (from a path
or a URL) with no download: ``python -m itra_bench.tasks.wds.demo_folder FOLDER``."""

from __future__ import annotations

import io
import sys
from pathlib import Path

from itra_bench import DigitsSplit
from itra_bench.tasks.wds.layout import CLASSNAMES, NSHARDS, TEMPLATES

#: The demo's zero-shot prompts, in clip-benchmark's template syntax.
DEMO_TEMPLATES = ("a handwritten digit {c}.", "a photo of the number {c}.")


def write_demo_folder(root: str | Path, per_shard: int = 128) -> Path:
    """Write the digits' ``train`` and ``test`` splits (PNG images, ``cls`` labels) into
    ``root`` in clip-benchmark's layout; returns ``root``."""
    import webdataset

    root = Path(root)
    for split in ("train", "test"):
        data = DigitsSplit(split)
        (root / split).mkdir(parents=True, exist_ok=True)
        shards = 0
        for start in range(0, len(data), per_shard):
            with webdataset.TarWriter(str(root / split / f"{shards}.tar")) as sink:
                for i in range(start, min(start + per_shard, len(data))):
                    png = io.BytesIO()
                    data.open_image(i).save(png, format="png")
                    sink.write({"__key__": f"s{i:06d}", "png": png.getvalue(),
                                "cls": data.targets[i]})
            shards += 1
        (root / split / NSHARDS).write_text(f"{shards}\n")
    (root / CLASSNAMES).write_text("".join(f"{c}\n" for c in DigitsSplit("test").classes))
    (root / TEMPLATES).write_text("".join(f"{t}\n" for t in DEMO_TEMPLATES))
    return root


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m itra_bench.tasks.wds.demo_folder FOLDER")
    print(write_demo_folder(sys.argv[1]))
