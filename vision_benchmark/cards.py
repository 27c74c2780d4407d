"""Dataset cards: one YAML file per dataset, holding everything a task needs to know about it.

A card is data, not code: adding a dataset is adding a file to ``cards/`` (or passing the path
of a card file). The on-disk fields (root folder, index and zip files per split, label map,
format) are those of ELEVATER's dataset registry, so a data root downloaded for ELEVATER is
read as it is.

Card fields (the fields of :class:`DatasetCard`, and per split of :class:`SplitFiles`, whose
:func:`itra_bench.task_fields.key_rows` lists them with their help)::

    name: cifar-10                      # ELEVATER's dataset name
    task_type: elevater                 # makes the card a task file (--tasks card.yaml)
    aliases: [cifar10]                  # short config names users type
    suites: [elevater]
    type: multiclass                    # multiclass | multilabel
    num_classes: 10
    metric: accuracy                    # accuracy | mean_per_class | 11point_mAP | roc_auc
                                        # (ELEVATER's names; acc1, mean-per-class and
                                        # mean_per_class_recall_present are accepted)
    format: index                       # index (``zip@path label`` lines) | coco (COCO JSON)
    root: classification/cifar_10_20211007   # under --data-root
    labelmap: labels.txt                # optional (index format), relative to root
    splits:
      train: {index: train.txt, files: [train.zip], num_images: 50000}
      test:  {index: test.txt,  files: [val.zip],   num_images: 10000}
                                        # num_images: the images the index lists (checked
                                        # on every read: a truncated index is refused; 0:
                                        # the split is not distributed, as ImageNet's train);
                                        # files: [] when the index names plain image files
    classnames: [airplane, automobile, ...]     # len == num_classes
    templates: ["a photo of a {}.", ...]        # '{}' is the class name
    source: one line naming where class names and templates come from
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from itra_bench.datasets.text_files import load_yaml
from itra_bench.errors import UnknownNameError, UserError
from itra_bench.task import BOOKKEEPING
from itra_bench.task_fields import build, file_key, from_file, not_from_file, read_keys
from itra_bench.vocabulary import current_task_file

CARDS_DIR = Path(__file__).parent / "cards"
TYPES = ("multiclass", "multilabel")
METRICS = ("accuracy", "mean_per_class", "11point_mAP", "roc_auc")
FORMATS = ("index", "coco")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SplitFiles:
    """One split on disk: its index file (or COCO JSON) and the zip files it points into. Its
    fields are the keys of a split of a card's ``splits``."""

    index: str = file_key(help="the index file (format index) or COCO JSON, relative to root")
    files: tuple[str, ...] = file_key((), help="the zip files the index points into ([]: it "
                                      "names plain image files); one may be given as a string")
    num_images: int | None = file_key(None, required=True, help="the images the index lists "
                                      "(checked on every read; 0: not distributed)")


@dataclass(frozen=True, kw_only=True)
class DatasetCard:
    """Everything itra-bench needs to know about one classification dataset. Its fields are
    the keys of a card file (see the module), in order."""

    name: str = file_key(help="ELEVATER's dataset name")
    #: Always ``elevater``: the key makes a card a task file (``--tasks card.yaml``).
    task_type: str = file_key("elevater", help="elevater (a card is a task file of it; "
                              "`protocol:` is the key's old name)", metadata=BOOKKEEPING)
    aliases: tuple[str, ...] = file_key((), help="short config names users type")
    suites: tuple[str, ...] = file_key((), help="the suites the dataset's task is a member of")
    type: str = file_key(help=" | ".join(TYPES))
    num_classes: int = file_key(help="the number of classes (>= 2)")
    metric: str = file_key(help=f"{' | '.join(METRICS)} (ELEVATER's names; acc1, "
                           "mean-per-class and mean_per_class_recall_present are accepted)")
    format: str = file_key(help="index (zip@path label lines) | coco (COCO JSON)")
    root: str = file_key(help="the dataset's folder, under --data-root")
    labelmap: str | None = file_key(None, help="the label map (format index), relative to root")
    splits: dict[str, SplitFiles] = file_key(help="split (train, val, test) -> {index, files, "
                                             "num_images}; test is required")
    classnames: tuple[str, ...] = file_key(help="the class names, num_classes of them")
    templates: tuple[str, ...] = file_key(help="prompt templates, '{}' the class name")
    source: str = file_key("", help="where the class names and templates come from")
    # Where the card lies names it in messages; it is no part of what the task computes (the
    # same card in another checkout or environment is the same task).
    path: str = not_from_file("", metadata=BOOKKEEPING)
    extra: dict[str, Any] = file_key(default_factory=dict, help="anything else the dataset "
                                     "needs (fer-2013: classname_synonyms)")

    @property
    def multilabel(self) -> bool:
        """Whether an image may carry several labels."""
        return self.type == "multilabel"

    def split_root(self, data_root: str | Path) -> Path:
        """The dataset's folder under ``data_root``."""
        return Path(data_root) / self.root

    def required_files(self, data_root: str | Path, splits: list[str]) -> list[Path]:
        """Every file the given splits need: index files, zips, label map."""
        root = self.split_root(data_root)
        out: list[Path] = []
        for s in splits:
            if s not in self.splits:
                raise UserError(
                    f"dataset {self.name!r} has no {s!r} split: its card "
                    f"({self.path or 'built-in'}) defines {', '.join(self.splits)}"
                    + ("; run it with --mode zeroshot" if s == "train" else ""))
            spec = self.splits[s]
            out += [root / spec.index, *(root / f for f in spec.files)]
        if self.labelmap:
            out.append(root / self.labelmap)
        return list(dict.fromkeys(out))


#: What a card's file describes, in messages.
WHAT = ("an ELEVATER dataset card (task type elevater; fields: "
        "itra_bench/vision_benchmark/cards.py)")


def _fail(path: Path, msg: str) -> UserError:
    return UserError(f"dataset card {path}: {msg}")


def parse_card(doc: Any, path: Path) -> DatasetCard:
    """Validate a card's YAML document; every problem names the file and the field.

    The same document is a task file of task type ``elevater`` (``--tasks my-card.yaml``);
    ``task_type`` may be left out of a card under ``cards/``. ``protocol``, its old name, is
    read as it, with a note.
    """
    from itra_bench.protocols.templates import fill_template
    from itra_bench.vision_benchmark.metric_names import canonical_metric

    if not isinstance(doc, dict):
        raise _fail(path, f"expected a mapping of fields, got {type(doc).__name__}")
    values = read_keys(DatasetCard, current_task_file(doc, path), path, WHAT)
    if values["task_type"] != "elevater":
        raise _fail(path, f"field 'task_type' is {values['task_type']!r}; a dataset card has "
                          "task type elevater")
    metric = canonical_metric(values["metric"])
    for key, value, allowed in (("type", values["type"], TYPES), ("metric", metric, METRICS),
                                ("format", values["format"], FORMATS)):
        if value not in allowed:
            aliases = " (or an alias: acc1, mean-per-class, mean_per_class_recall_present)" \
                if key == "metric" else ""
            raise _fail(path, f"field {key!r} is {values[key]!r}; use one of "
                              f"{', '.join(allowed)}{aliases}")
    num_classes = values["num_classes"]
    if num_classes < 2:
        raise _fail(path, f"field 'num_classes' must be an integer >= 2, got {num_classes}")
    for key in ("name", "root"):
        if not values[key].strip():
            raise _fail(path, f"field {key!r} is empty")
    if "test" not in values["splits"]:
        raise _fail(path, "field 'splits' must map split names (train, val, test) to "
                          "{index, files, num_images}; a 'test' split is required")
    splits = {}
    for name, spec in values["splits"].items():
        if name not in SPLITS:
            raise _fail(path, f"split {name!r} is not one of {', '.join(SPLITS)}")
        if not isinstance(spec, dict):
            raise _fail(path, f"split {name!r} must be a mapping {{index, files, num_images}}, "
                              f"got {type(spec).__name__}")
        if isinstance(spec.get("files"), str):  # one file, named as a string
            spec = {**spec, "files": [spec["files"]]}
        files = spec.get("files")
        if isinstance(files, list) and not all(isinstance(f, str) and f for f in files):
            raise _fail(path, f"split {name!r}: 'files' must be a list of file names")
        split = from_file(SplitFiles, spec, path, f"split {name!r} of a dataset card")
        if not split.index:
            raise _fail(path, f"split {name!r}: 'index' is empty")
        if split.num_images < 0:
            raise _fail(path, f"split {name!r}: 'num_images' must be the number of images "
                              f"its index lists (0: not distributed), got {split.num_images}")
        splits[name] = split
    classnames = values["classnames"]
    if len(classnames) != num_classes:
        raise _fail(path, f"field 'classnames' must list {num_classes} names "
                          f"(num_classes), got {len(classnames)}")
    templates = values["templates"]
    if not templates:
        raise _fail(path, "field 'templates' must be a non-empty list")
    for t in templates:
        try:
            fill_template(t, "x")
        except ValueError as exc:
            raise _fail(path, f"template {t!r}: {exc}") from None
    return build(DatasetCard, values, metric=metric, splits=splits, path=str(path),
                 extra=dict(values["extra"]))


def load_card(path: str | Path) -> DatasetCard:
    """Read and validate one card file."""
    path = Path(path)
    try:
        doc = load_yaml(path.read_text(encoding="utf-8-sig"), shipped=path.parent == CARDS_DIR)
    except OSError as exc:
        raise UserError(f"dataset card {path} cannot be read: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise _fail(path, f"not UTF-8 text ({exc}); save it as UTF-8") from exc
    except (yaml.YAMLError, RecursionError) as exc:
        raise _fail(path, f"not valid YAML ({exc})") from exc
    return parse_card(doc, path)


@lru_cache(maxsize=1)
def builtin_cards() -> tuple[DatasetCard, ...]:
    """The cards shipped in ``cards/``, sorted by name."""
    return tuple(sorted((load_card(p) for p in CARDS_DIR.glob("*.yaml")), key=lambda c: c.name))


def find_card(name: str) -> DatasetCard:
    """A built-in card by its name or one of its aliases."""
    by_name = {}
    for card in builtin_cards():
        for key in (card.name, *card.aliases):
            by_name[key] = card
    if name not in by_name:
        cards = {card.name for card in by_name.values()}
        raise UnknownNameError("dataset", name, cards, also={"alias": set(by_name) - cards})
    return by_name[name]
