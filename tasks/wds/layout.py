"""The layout of a clip-benchmark webdataset folder: its files' names and the members of a
sample (what ``clip_benchmark_export_wds`` writes and its ``build_wds_dataset`` reads)."""

from __future__ import annotations

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
