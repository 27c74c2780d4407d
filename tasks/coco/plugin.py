"""COCO image-text retrieval: R@1/5/10 in both directions and their mean.

``coco2017-retrieval``: the 5,000 images of COCO 2017 val with all their captions, read from
the official ``captions_val2017.json``. ``coco-karpathy-5k``: the standard 5k test split of
Karpathy's ``dataset_coco.json`` (the 2014 images that CLIP-like papers report on). Both are in
suite ``coco`` and run the shared retrieval protocol (``itra_bench.protocols.retrieval``);
their cards are ``tasks/coco/cards/coco2017-retrieval.yaml`` and ``coco-karpathy-5k.yaml``.

Task files can point the same readers at other files of these formats::

    name: my-coco
    task_type: coco_captions       # annotations + images
    annotations: coco2017/annotations/captions_val2017.json
    images: coco2017/val2017

    name: my-karpathy
    task_type: karpathy_captions   # file + images (+ split)
    file: coco/dataset_coco.json
    images: coco
    split: test

An image that has no caption is left out (text retrieval cannot score it) and counted in the
result's ``images_without_captions``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from itra_bench import hookimpl
from itra_bench.context import RunContext
from itra_bench.errors import UserError
from itra_bench.generic_tasks import RetrievalTask
from itra_bench.task import Task, TaskResult
from itra_bench.task_fields import build, file_key, read_keys
from itra_bench.tasks import load_cards
from itra_bench.tasks.coco.captions import (
    COCO_LAYOUT,
    KARPATHY_LAYOUT,
    CaptionedImages,
    CocoCaptions,
    KarpathyCaptions,
)

if TYPE_CHECKING:
    from itra_bench.model import EncoderModel

#: This benchmark's YAML cards: its built-in tasks.
CARDS_DIR = Path(__file__).parent / "cards"
KARPATHY_SPLITS = ("train", "restval", "val", "test")


@dataclass
class CocoCaptionData:
    """A COCO captions JSON and its image folder, relative to ``--data-root``."""

    annotations: str = file_key(help="the captions JSON (captions_val2017.json)")
    images: str = file_key(help="the folder of the images the JSON names")

    @property
    def layout(self) -> str:
        return COCO_LAYOUT.format(annotations=self.annotations, images=self.images)

    def load(self, data_root: Path) -> CocoCaptions:
        return CocoCaptions(Path(data_root) / self.annotations, Path(data_root) / self.images)

    def required_paths(self, data_root: Path) -> list[Path]:
        return [Path(data_root) / self.annotations, Path(data_root) / self.images]


@dataclass
class KarpathyCaptionData:
    """One split of a Karpathy caption file and the folder its ``filepath`` values are under."""

    file: str = file_key(help="Karpathy's caption file (dataset_coco.json)")
    images: str = file_key(help="the folder that the file's image paths are under")
    split: str = file_key("test", help="train | restval | val | test")

    @property
    def layout(self) -> str:
        return KARPATHY_LAYOUT.format(file=self.file, images=self.images, split=self.split)

    def load(self, data_root: Path) -> KarpathyCaptions:
        return KarpathyCaptions(Path(data_root) / self.file, Path(data_root) / self.images,
                                self.split)

    def required_paths(self, data_root: Path) -> list[Path]:
        return [Path(data_root) / self.file, Path(data_root) / self.images]


@dataclass
class _Loaded:
    """Caption data already read, so the retrieval run and its details share one parse."""

    source: CaptionedImages
    layout: str

    def load(self, data_root: Path) -> CaptionedImages:
        return self.source

    def required_paths(self, data_root: Path) -> list[Path]:
        return []


@dataclass
class CaptionRetrievalTask(RetrievalTask):
    """The shared retrieval task, with the count of uncaptioned images in its details."""

    def run(self, model: EncoderModel, ctx: RunContext) -> TaskResult:
        source = self.data.load(ctx.data_root)
        result = RetrievalTask.run(replace(self, data=_Loaded(source, self.layout)), model, ctx)
        result.details.update(source.summary())
        return result


def coco_captions_task(doc: dict[str, Any], path: Path) -> Task:
    """Task-file factory of the task type ``coco_captions``: the keys of the task and its
    data."""
    values = read_keys((CaptionRetrievalTask, CocoCaptionData), doc, path,
                       "task type coco_captions")
    return build(CaptionRetrievalTask, values, data=build(CocoCaptionData, values))


def karpathy_captions_task(doc: dict[str, Any], path: Path) -> Task:
    """Task-file factory of the task type ``karpathy_captions``: the keys of the task and its
    data."""
    values = read_keys((CaptionRetrievalTask, KarpathyCaptionData), doc, path,
                       "task type karpathy_captions")
    if values["split"] not in KARPATHY_SPLITS:
        raise UserError(f"{path}: key 'split' must be one of {KARPATHY_SPLITS}, "
                        f"got {values['split']!r}")
    return build(CaptionRetrievalTask, values, data=build(KarpathyCaptionData, values))


FACTORIES: dict[str, Callable[[dict[str, Any], Path], Task]] = {
    "coco_captions": coco_captions_task,
    "karpathy_captions": karpathy_captions_task,
}


@hookimpl
def itra_bench_tasks() -> list[Task]:
    return load_cards(CARDS_DIR, FACTORIES)


@hookimpl
def itra_bench_task_file_protocols() -> dict[str, Callable[[dict[str, Any], Path], Task]]:
    return dict(FACTORIES)

