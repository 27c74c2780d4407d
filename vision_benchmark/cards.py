"""Dataset cards: one YAML file per dataset, holding everything a task needs to know about it.

A card is data, not code: adding a dataset is adding a file to ``cards/`` (or passing the path
of a card file). The on-disk fields (root folder, index and zip files per split, label map,
format) are those of ELEVATER's dataset registry, so a data root downloaded for ELEVATER is
read as it is.

Card fields::

    name: cifar-10                      # ELEVATER's dataset name
    aliases: [cifar10]                  # short config names users type
    suites: [elevater]
    type: multiclass                    # multiclass | multilabel
    num_classes: 10
    metric: accuracy                    # accuracy | mean_per_class | 11point_mAP | roc_auc
    format: index                       # index (``zip@path label`` lines) | coco (COCO JSON)
    root: classification/cifar_10_20211007   # under --data-root
    labelmap: labels.txt                # optional (index format), relative to root
    splits:
      train: {index: train.txt, files: [train.zip], num_images: 50000}
      test:  {index: test.txt,  files: [val.zip],   num_images: 10000}
    classnames: [airplane, automobile, ...]     # len == num_classes
    templates: ["a photo of a {}.", ...]        # '{}' is the class name
    source: one line naming where class names and templates come from
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from itra_bench.errors import UnknownNameError, UserError

CARDS_DIR = Path(__file__).parent / "cards"
TYPES = ("multiclass", "multilabel")
METRICS = ("accuracy", "mean_per_class", "11point_mAP", "roc_auc")
FORMATS = ("index", "coco")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SplitFiles:
    """One split on disk: its index file (or COCO JSON) and the zip files it points into."""

    index: str
    files: tuple[str, ...] = ()
    num_images: int | None = None


@dataclass(frozen=True)
class DatasetCard:
    """Everything itra-bench needs to know about one classification dataset."""

    name: str
    num_classes: int
    type: str
    metric: str
    format: str
    root: str
    splits: dict[str, SplitFiles]
    classnames: tuple[str, ...]
    templates: tuple[str, ...]
    aliases: tuple[str, ...] = ()
    suites: tuple[str, ...] = ()
    labelmap: str | None = None
    source: str = ""
    path: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

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
            spec = self.splits[s]
            out += [root / spec.index, *(root / f for f in spec.files)]
        if self.labelmap:
            out.append(root / self.labelmap)
        return list(dict.fromkeys(out))


_REQUIRED = ("name", "num_classes", "type", "metric", "format", "root", "splits",
             "classnames", "templates")
_OPTIONAL = ("aliases", "suites", "labelmap", "source", "extra")


def _fail(path: Path, msg: str) -> UserError:
    return UserError(f"dataset card {path}: {msg}")


def parse_card(doc: Any, path: Path) -> DatasetCard:
    """Validate a card's YAML document; every problem names the file and the field."""
    if not isinstance(doc, dict):
        raise _fail(path, "expected a mapping of fields")
    for key in doc:
        if key not in _REQUIRED + _OPTIONAL:
            close = difflib.get_close_matches(str(key), _REQUIRED + _OPTIONAL, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise _fail(path, f"unknown field {key!r}{hint}")
    for key in _REQUIRED:
        if key not in doc:
            raise _fail(path, f"missing field {key!r}")
    for key, allowed in (("type", TYPES), ("metric", METRICS), ("format", FORMATS)):
        if doc[key] not in allowed:
            raise _fail(path, f"field {key!r} is {doc[key]!r}; use one of {', '.join(allowed)}")
    if not isinstance(doc["num_classes"], int) or doc["num_classes"] < 2:
        raise _fail(path, "field 'num_classes' must be an integer >= 2")
    if not isinstance(doc["splits"], dict) or "test" not in doc["splits"]:
        raise _fail(path, "field 'splits' must map split names (train, val, test) to "
                          "{index, files}; a 'test' split is required")
    splits = {}
    for name, spec in doc["splits"].items():
        if name not in SPLITS:
            raise _fail(path, f"split {name!r} is not one of {', '.join(SPLITS)}")
        if not isinstance(spec, dict) or "index" not in spec:
            raise _fail(path, f"split {name!r} needs an 'index' file")
        files = spec.get("files", [])
        if isinstance(files, str):
            files = [files]
        splits[name] = SplitFiles(str(spec["index"]), tuple(files), spec.get("num_images"))
    classnames = doc["classnames"]
    if not isinstance(classnames, list) or len(classnames) != doc["num_classes"]:
        got = len(classnames) if isinstance(classnames, list) else type(classnames).__name__
        raise _fail(path, f"field 'classnames' must list {doc['num_classes']} names "
                          f"(num_classes), got {got}")
    templates = doc["templates"]
    if not isinstance(templates, list) or not templates:
        raise _fail(path, "field 'templates' must be a non-empty list")
    for t in templates:
        if "{}" not in str(t):
            raise _fail(path, f"template {t!r} has no '{{}}' slot for the class name")
    return DatasetCard(
        name=str(doc["name"]), num_classes=doc["num_classes"],
        type=doc["type"], metric=doc["metric"], format=doc["format"], root=str(doc["root"]),
        splits=splits, classnames=tuple(str(c) for c in classnames),
        templates=tuple(str(t) for t in templates),
        aliases=tuple(doc.get("aliases") or ()), suites=tuple(doc.get("suites") or ()),
        labelmap=doc.get("labelmap"), source=str(doc.get("source") or ""), path=str(path),
        extra=dict(doc.get("extra") or {}))


def load_card(path: str | Path) -> DatasetCard:
    """Read and validate one card file."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"dataset card {path} cannot be read: {exc}") from exc
    except yaml.YAMLError as exc:
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
        raise UnknownNameError("dataset", name, by_name)
    return by_name[name]
