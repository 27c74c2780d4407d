"""The classic image suite of the ProtoCLIP / ITRA evaluation code, as named tasks.

``zeroshot-classic``: zero-shot classification with CLIP's class names and prompt templates
on ImageNet, CIFAR-10, CIFAR-100, STL-10, Birdsnap, Country211, Flowers102, GTSRB, UCF101
(middle frames) and Stanford Cars. ``linear-classic``: linear probe on ImageNet, CIFAR-10,
CIFAR-100 and STL-10.

Data layouts under ``--data-root`` follow that code (megvii-research/protoclip
``src/training/evaluations/zero_shot.py`` and ``linear_eval.py``):

- the CLOOB preprocessed test sets (ml-jku/cloob README, "Downstream Tasks"):
  ``<name>/test/<class folder>/<image>``, read as ``torchvision.datasets.ImageFolder`` reads
  them: the i-th class folder in sorted order is the i-th class of CLIP's list. UCF101's zip
  unpacks to ``ucf101/testlist01`` (ProtoCLIP appends ``list01``), which is looked for first.
- ImageNet as an ImageFolder tree of WordNet-id folders, ``imagenet/train`` and
  ``imagenet/test`` (the ILSVRC2012 validation images; ``imagenet/val`` is accepted too).
- CIFAR-10, CIFAR-100 and STL-10 as torchvision downloads them, directly under
  ``--data-root`` (ProtoCLIP passes its data folder as torchvision's ``root``). Their zero-shot
  tasks read ``<name>/test/<class>/`` folders when present, else torchvision's files.

Class names and templates are data: ``tasks/classic/prompts.json`` (copied from
clip-benchmark and from CLIP's ``data/prompts.md``; each entry names its source).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from itra_bench import hookimpl
from itra_bench.datasets.image_source import ImageSource
from itra_bench.errors import UserError
from itra_bench.generic_tasks import ClassificationTask
from itra_bench.task import Task
from itra_bench.tasks.classic.torchvision_formats import (
    CIFAR_FILES,
    CifarSplit,
    ClassListFolder,
    STL10Split,
    cifar_layout,
    cifar_required_paths,
    stl10_layout,
    stl10_required_paths,
)

PROMPTS_FILE = Path(__file__).parent / "prompts.json"
ZEROSHOT_SUITE = "zeroshot-classic"
LINEAR_SUITE = "linear-classic"

#: Birdsnap classes with no test image in the CLOOB copy (cloob issue #10); ProtoCLIP leaves
#: them out of the zero-shot classifier, and so do we when their folders are empty or gone.
BIRDSNAP_ABSENT = (46, 66, 123, 299, 302, 351, 403, 436, 465)


@lru_cache(maxsize=1)
def prompts() -> dict[str, dict[str, Any]]:
    """Per dataset folder name: ``classnames`` (in class-index order) and ``templates``."""
    return json.loads(PROMPTS_FILE.read_text(encoding="utf-8"))["datasets"]


@dataclass
class ClassFolderData:
    """A dataset stored as class-folder trees ``<data-root>/<name>/<split folder>/<class>/``.

    ``split_folders`` lists, per split, the folder names accepted (the first present is
    used); folders map to ``classnames`` as :class:`ClassListFolder` describes.
    """

    name: str
    classnames: list[str]
    split_folders: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {"test": ("test",), "train": ("train",)})
    absent: tuple[int, ...] = ()
    title: str = ""

    @property
    def layout(self) -> str:
        splits = ", ".join(
            f"{self.name}/{f[0] if len(f) == 1 else '{' + ' or '.join(f) + '}'}/<class>/<image>"
            for f in self.split_folders.values())
        example = ("WordNet ids such as n01440764" if self.name == "imagenet"
                   else "e.g. zero-padded class indices")
        absent = (f"; the {len(self.absent)} class folders the CLOOB copy leaves empty may be "
                  "empty or removed (those classes then leave the classifier, as in ProtoCLIP)"
                  if self.absent else "")
        return (f"{splits}: the i-th class folder in sorted order "
                f"({example}) is class i of CLIP's {len(self.classnames)} class names, unless "
                f"every folder is named after its class{absent}")

    def split_dir(self, data_root: Path, split: str) -> Path:
        """The folder of ``split``: the first accepted name present, else the first name."""
        if split not in self.split_folders:
            raise UserError(f"{self.title or self.name} has no {split!r} split here; it has "
                            f"{', '.join(self.split_folders)}")
        candidates = [Path(data_root) / self.name / f for f in self.split_folders[split]]
        return next((c for c in candidates if c.is_dir()), candidates[0])

    def split(self, data_root: Path, name: str) -> ClassListFolder:
        return ClassListFolder(self.split_dir(data_root, name), self.classnames, self.absent,
                               title=self.title or self.name, layout=self.layout)

    def required_paths(self, data_root: Path, splits: list[str]) -> list[Path]:
        return [self.split_dir(data_root, s) for s in splits]


@dataclass
class TorchvisionData:
    """CIFAR-10, CIFAR-100 or STL-10 from the files torchvision downloads into ``--data-root``."""

    variant: str

    @property
    def layout(self) -> str:
        return stl10_layout() if self.variant == "stl10" else cifar_layout(self.variant)

    def split(self, data_root: Path, name: str) -> ImageSource:
        if self.variant == "stl10":
            return STL10Split(data_root, name)
        return CifarSplit(data_root, self.variant, name)

    def required_paths(self, data_root: Path, splits: list[str]) -> list[Path]:
        if self.variant == "stl10":
            return stl10_required_paths(data_root, splits)
        return cifar_required_paths(data_root, self.variant, splits)


@dataclass
class FoldersOrTorchvision:
    """Class folders when ``<data-root>/<name>/<split>`` exists, else torchvision's files.

    CLOOB-style folder copies and ProtoCLIP's torchvision files are both common for CIFAR and
    STL-10; either serves the zero-shot task.
    """

    folders: ClassFolderData
    files: TorchvisionData

    @property
    def layout(self) -> str:
        return f"either {self.folders.layout}; or {self.files.layout}"

    def _pick(self, data_root: Path, splits: list[str]) -> ClassFolderData | TorchvisionData:
        if all(self.folders.split_dir(data_root, s).is_dir() for s in splits):
            return self.folders
        return self.files

    def split(self, data_root: Path, name: str) -> ImageSource:
        source = self._pick(data_root, [name]).split(data_root, name)
        found, expected = len(source.classes), len(self.folders.classnames)  # type: ignore[attr-defined]
        if found != expected:
            raise UserError(f"{self.folders.title} {name} split under {data_root} names {found} "
                            f"classes, but the dataset has {expected}; these are not its files")
        return source

    def required_paths(self, data_root: Path, splits: list[str]) -> list[Path]:
        return self._pick(data_root, splits).required_paths(data_root, splits)


#: (folder name, title, split folders of the test set) of the zero-shot datasets, in
#: ProtoCLIP's order.
ZEROSHOT_DATASETS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("imagenet", "ImageNet", ("test", "val")),
    ("cifar10", "CIFAR-10", ("test",)),
    ("cifar100", "CIFAR-100", ("test",)),
    ("stl10", "STL-10", ("test",)),
    ("birdsnap", "Birdsnap", ("test",)),
    ("country211", "Country211", ("test",)),
    ("flowers102", "Flowers102", ("test",)),
    ("gtsrb", "GTSRB", ("test",)),
    ("ucf101", "UCF101 (middle frames)", ("testlist01", "test")),
    ("stanford_cars", "Stanford Cars", ("test",)),
)
TORCHVISION_VARIANTS = ("cifar10", "cifar100", "stl10")


def _folders(name: str, title: str, test_folders: tuple[str, ...], train: bool = False
             ) -> ClassFolderData:
    splits = {"test": test_folders, **({"train": ("train",)} if train else {})}
    absent = BIRDSNAP_ABSENT if name == "birdsnap" else ()
    return ClassFolderData(name, prompts()[name]["classnames"], splits, absent, title)


def zeroshot_tasks() -> list[Task]:
    """The ten zero-shot tasks of ``zeroshot-classic``."""
    tasks: list[Task] = []
    for name, title, test_folders in ZEROSHOT_DATASETS:
        entry = prompts()[name]
        folders = _folders(name, title, test_folders)
        data: Any = folders
        if name in TORCHVISION_VARIANTS:
            data = FoldersOrTorchvision(folders, TorchvisionData(name))
        # Birdsnap's class list depends on which classes the copy has: the reader supplies it.
        classnames = None if folders.absent else list(entry["classnames"])
        n_templates = len(entry["templates"])
        task = ClassificationTask(
            name=f"zeroshot-{name.replace('_', '-')}", data=data, protocol="zeroshot",
            classnames=classnames, templates=list(entry["templates"]), suites=(ZEROSHOT_SUITE,),
            description=(f"{title}: zero-shot, {len(entry['classnames'])} classes x "
                         f"{n_templates} CLIP prompt{'s' if n_templates > 1 else ''}"))
        if "_" in name:
            task.aliases = (f"zeroshot-{name}",)
        tasks.append(task)
    return tasks


def linear_tasks() -> list[Task]:
    """The four linear-probe tasks of ``linear-classic``."""
    tasks: list[Task] = [ClassificationTask(
        name="linear-imagenet", data=_folders("imagenet", "ImageNet", ("test", "val"), True),
        protocol="linear_probe", suites=(LINEAR_SUITE,),
        description="ImageNet: logistic regression on frozen image features (train -> test)")]
    for variant in TORCHVISION_VARIANTS:
        title = CIFAR_FILES[variant]["title"] if variant in CIFAR_FILES else "STL-10"
        tasks.append(ClassificationTask(
            name=f"linear-{variant}", data=TorchvisionData(variant), protocol="linear_probe",
            suites=(LINEAR_SUITE,),
            description=f"{title} (torchvision files): logistic regression on frozen image "
                        "features (train -> test)"))
    return tasks


def classic_tasks() -> list[Task]:
    """Every task of the classic suites."""
    return [*zeroshot_tasks(), *linear_tasks()]


@hookimpl
def itra_bench_tasks() -> list[Task]:
    return classic_tasks()
