"""The layout of a clip-benchmark webdataset folder: its files' names and the members of a
sample (what ``clip_benchmark_export_wds`` writes and its ``build_wds_dataset`` reads), and
the reading of a split's shard count."""

from __future__ import annotations

from itra_bench import UserError

#: Image members in the order clip-benchmark looks for them.
IMAGE_KEYS = ("webp", "png", "jpg", "jpeg")
LABEL_KEY = "cls"
CAPTION_KEY = "txt"
CLASSNAMES = "classnames.txt"
TEMPLATES = "zeroshot_classification_templates.txt"
DATASET_TYPE = "dataset_type.txt"
NSHARDS = "nshards.txt"

LAYOUT = (f"ROOT/{CLASSNAMES}, ROOT/{TEMPLATES} and ROOT/<split>/{NSHARDS} with shards "
          "ROOT/<split>/0.tar .. <N-1>.tar (clip-benchmark's webdataset layout; samples hold an "
          f"image ({' / '.join(IMAGE_KEYS)}) and a label ({LABEL_KEY}) or captions "
          f"({CAPTION_KEY}, one a line))")


def shard_count(text: str, where: str) -> int:
    """The number of shards that the ``nshards.txt`` at ``where`` holds as ``text``."""
    text = text.strip()
    try:
        count = int(text)
    except ValueError:
        count = -1
    if count < 1:
        raise UserError(f"{where}: expected the number of shards (a positive integer), got "
                        f"{text[:40]!r}.")
    return count
