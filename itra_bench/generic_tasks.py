"""Task types shared by many datasets: image classification under the zero-shot, linear-probe,
k-NN and clustering protocols, and image-text retrieval.

A dataset plugs in through a small data object (where its images and labels come from); the
task type holds the control flow once, so adding a dataset is a data change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from itra_bench.context import RunContext
from itra_bench.datasets.captions_csv import CaptionsCSV
from itra_bench.datasets.imagefolder import LAYOUT as IMAGEFOLDER_LAYOUT
from itra_bench.datasets.imagefolder import ImageFolderSplit
from itra_bench.errors import UserError
from itra_bench.model_api import IMAGE, TEXT
from itra_bench.task import Task, TaskResult, positive_int_option
from itra_bench.task_fields import file_key, not_from_file

if TYPE_CHECKING:
    import torch

    from itra_bench.encoding import EncodedImages
    from itra_bench.model import EncoderModel


class LabelledImages(Protocol):
    """An image source with integer ``targets`` and ``classes`` (folder or class names)."""

    targets: list[int]
    classes: list[str]
    identity: str

    def __len__(self) -> int: ...


class ClassificationData(Protocol):
    """Where a classification dataset's splits come from."""

    layout: str

    def split(self, data_root: Path, name: str) -> LabelledImages:
        """Open split ``name`` (raising MissingDataError when absent)."""
        ...

    def required_paths(self, data_root: Path, splits: list[str]) -> list[Path]:
        """Files and folders that must exist for ``splits``."""
        ...


@dataclass
class ImageFolderData:
    """An ImageFolder tree ``root/<split>/<class>/<image>``; relative roots are under
    ``--data-root``."""

    root: str = file_key(help="the ImageFolder tree ROOT/<split>/<class>/<image>; a relative "
                         "one is under paths_relative_to")
    layout: str = not_from_file(IMAGEFOLDER_LAYOUT)

    def _root(self, data_root: Path) -> Path:
        return Path(data_root) / self.root

    def split(self, data_root: Path, name: str, classes: list[str] | None = None
              ) -> ImageFolderSplit:
        return ImageFolderSplit(self._root(data_root), name, classes)

    def class_list(self, data_root: Path, splits: list[str]) -> list[str]:
        """The task's one class list: the union of the class folders of ``splits``."""
        root = self._root(data_root)
        return sorted({p.name for s in splits if (root / s).is_dir()
                       for p in (root / s).iterdir() if p.is_dir()})

    def required_paths(self, data_root: Path, splits: list[str]) -> list[Path]:
        return [self._root(data_root) / s for s in splits]


def _pretty_classname(folder: str) -> str:
    return folder.replace("_", " ")


def _labels_of(source: LabelledImages, encoded: EncodedImages) -> torch.Tensor:
    import torch

    return torch.tensor(source.targets, dtype=torch.long)[encoded.indices]


def _details(*encoded: EncodedImages) -> dict[str, Any]:
    skipped = [s for e in encoded for s in e.skipped]
    return {"skipped_corrupt": skipped} if skipped else {}


CLASSIFICATION_PROTOCOLS = ("zeroshot", "linear_probe", "knn", "clustering")
_MAIN_SCORES = {"zeroshot": "acc1", "linear_probe": "acc1", "knn": "acc1", "clustering": "nmi"}


@dataclass
class ClassificationTask(Task):
    """One image-classification dataset evaluated under one protocol.

    zeroshot needs image and text towers and uses ``classnames`` x ``templates``;
    linear_probe and knn fit on ``train_split`` (linear_probe picks its L2 strength on
    ``val_split``, or on a part carved from the training split); clustering uses the
    evaluation split alone.
    """

    data: Any = not_from_file(None)
    protocol: str = "zeroshot"
    eval_split: str = file_key("test", name="split", help="the split evaluated")
    train_split: str = file_key("train", help="linear_probe, knn: the split fitted on")
    val_split: str | None = file_key(None, help="linear_probe: the split its L2 strength is "
                                     "chosen on (default: a part of the training split)")
    classnames: list[str] | None = file_key(None, help="the class names, one per class "
                                            "folder in sorted order (default: the folder names)")
    templates: list[str] = file_key(default_factory=lambda: ["a photo of a {}."],
                                    help="zeroshot: the prompt templates; {} is the class name")
    knn_k: int = file_key(20, name="k", help="knn: the neighbours that vote")
    knn_weighting: str = file_key("uniform", name="weighting",
                                  help="knn: how the votes are weighted (uniform, ...)")
    knn_temperature: float = file_key(0.07, name="temperature",
                                      help="knn: the temperature of similarity weighting")
    #: Where the task was declared (a task file), for messages.
    source: str = not_from_file("")

    def __post_init__(self) -> None:
        if self.protocol not in CLASSIFICATION_PROTOCOLS:
            raise ValueError(f"protocol must be one of {CLASSIFICATION_PROTOCOLS}")
        self.main_score = _MAIN_SCORES[self.protocol]
        self.modalities = frozenset({IMAGE, TEXT} if self.protocol == "zeroshot" else {IMAGE})
        self.layout = self.data.layout

    def _splits(self) -> list[str]:
        if self.protocol in ("linear_probe", "knn"):
            extra = [self.val_split] if self.val_split else []
            return [self.train_split, *extra, self.eval_split]
        return [self.eval_split]

    def required_paths(self, data_root: Path, options: Mapping[str, Any]) -> list[Path]:
        return self.data.required_paths(data_root, self._splits())

    def _class_list(self, data_root: Path) -> list[str] | None:
        """The one class list every split is read with (None: the data fixes its own)."""
        if not hasattr(self.data, "class_list"):
            return None
        classes = self.data.class_list(data_root, self._splits())
        if self.classnames is not None and len(self.classnames) != len(classes):
            where = f"{self.source}: key 'classnames'" if self.source else \
                f"task {self.name!r}: classnames"
            raise UserError(
                f"{where} lists {len(self.classnames)} names but the data has "
                f"{len(classes)} class folders ({', '.join(classes[:8])}"
                f"{', ...' if len(classes) > 8 else ''}); give one name per class folder, in "
                "sorted folder order, or drop `classnames` to use the folder names")
        return classes

    def check_files(self, data_root: Path, options: Mapping[str, Any]) -> list[str]:
        try:
            self._class_list(data_root)
        except UserError as exc:
            return [str(exc)]
        return []

    def _open(self, data_root: Path, split: str, classes: list[str] | None,
              needs_every_class: bool, same_as: LabelledImages | None = None
              ) -> LabelledImages:
        """Split ``split`` read with the task's class list; when the data fixes its own list,
        it must equal that of ``same_as`` (the evaluated split)."""
        source = (self.data.split(data_root, split) if classes is None
                  else self.data.split(data_root, split, classes))
        if same_as is not None and list(source.classes) != list(same_as.classes):
            raise UserError(f"task {self.name!r}: the {split!r} split names other classes than "
                            f"the {self.eval_split!r} split; every split must share one class "
                            "list")
        if needs_every_class:
            present = set(source.targets)
            empty = [i for i in range(len(source.classes)) if i not in present]
            if empty:
                where = getattr(source, "class_dir", None)
                names = [str(where(i)) if where else f"{split}/{source.classes[i]}"
                         for i in empty]
                raise UserError(
                    f"task {self.name!r}: the {split!r} split has no images of "
                    f"{len(empty)} class(es) that {self.protocol} needs: {', '.join(names)}. "
                    "Add images to those folders, or remove the class from every split.")
        return source

    def run(self, model: EncoderModel, ctx: RunContext) -> TaskResult:
        from itra_bench.encoding import encode_images, encode_texts
        from itra_bench.protocols.clustering import clustering_scores
        from itra_bench.protocols.knn import knn_classification
        from itra_bench.protocols.linear_probe import linear_probe
        from itra_bench.protocols.zeroshot import build_zeroshot_classifier, zeroshot_classification

        classes = self._class_list(ctx.data_root)
        test = self._open(ctx.data_root, self.eval_split, classes, needs_every_class=False)
        test_enc = encode_images(model, test, ctx, split=self.eval_split)
        test_y = _labels_of(test, test_enc)
        num_classes = len(test.classes)
        if self.protocol == "zeroshot":
            names = self.classnames or [_pretty_classname(c) for c in test.classes]
            classifier = build_zeroshot_classifier(
                lambda texts: encode_texts(model, texts, ctx, "encode class prompts"),
                names, self.templates)
            metrics = zeroshot_classification(test_enc.features, classifier, test_y)
            return TaskResult(metrics, self.main_score, len(test_y), _details(test_enc))
        if self.protocol == "clustering":
            metrics = clustering_scores(test_enc.features, test_y, num_clusters=num_classes,
                                        seed=ctx.seed)
            return TaskResult(metrics, self.main_score, len(test_y), _details(test_enc))

        train = self._open(ctx.data_root, self.train_split, classes, needs_every_class=True,
                           same_as=test)
        train_enc = encode_images(model, train, ctx, split=self.train_split)
        train_y = _labels_of(train, train_enc)
        encoded = [train_enc, test_enc]
        if self.protocol == "knn":
            metrics = knn_classification(
                train_enc.features, train_y, test_enc.features, test_y, num_classes,
                k=self.knn_k, weighting=self.knn_weighting, temperature=self.knn_temperature,
                device=ctx.device)
            details = {"k": self.knn_k, "weighting": self.knn_weighting}
        else:
            val_x = val_y = None
            if self.val_split:
                val = self._open(ctx.data_root, self.val_split, classes,
                                 needs_every_class=False, same_as=test)
                val_enc = encode_images(model, val, ctx, split=self.val_split)
                val_x, val_y = val_enc.features, _labels_of(val, val_enc)
                encoded.append(val_enc)
            metrics = linear_probe(train_enc.features, train_y, test_enc.features, test_y,
                                   num_classes, val_x=val_x, val_y=val_y, seed=ctx.seed,
                                   device=ctx.device, progress=ctx.progress)
            details = {}
        return TaskResult(metrics, self.main_score, len(test_y), {**details, **_details(*encoded)})


class CaptionData(Protocol):
    """Where a retrieval dataset's images and captions come from."""

    layout: str

    def load(self, data_root: Path) -> Any:
        """An ImageSource with ``captions`` and ``text_to_image`` lists."""
        ...

    def required_paths(self, data_root: Path) -> list[Path]:
        """Files that must exist."""
        ...


@dataclass
class CaptionsCSVData:
    """A caption table in the trainer's CSV format; relative paths are under ``--data-root``."""

    file: str = file_key(help="the caption table; a relative one is under paths_relative_to")
    separator: str = file_key("\t", help="the table's column separator (one character)")
    img_key: str = file_key("filepath", help="the column of image paths (relative to the "
                            "table's folder)")
    caption_key: str = file_key("title", help="the column of captions")

    @property
    def layout(self) -> str:
        sep = {"\t": "tab", ",": "comma"}.get(self.separator, repr(self.separator))
        return (f"{self.file}: a {sep}-separated table with a header naming the columns "
                f"{self.img_key!r} (image path, relative to the table's folder) and "
                f"{self.caption_key!r} (one caption per row; repeat the image for more captions)")

    def load(self, data_root: Path) -> CaptionsCSV:
        return CaptionsCSV(Path(data_root) / self.file, self.separator, self.img_key,
                           self.caption_key)

    def required_paths(self, data_root: Path) -> list[Path]:
        return [Path(data_root) / self.file]


@dataclass
class RetrievalTask(Task):
    """Image-text retrieval with one or more captions per image: R@1/5/10 both ways."""

    data: Any = not_from_file(None)
    protocol: str = "retrieval"
    main_score: str = "mean_recall"
    modalities: frozenset[str] = frozenset({IMAGE, TEXT})

    def __post_init__(self) -> None:
        self.layout = self.data.layout

    def required_paths(self, data_root: Path, options: Mapping[str, Any]) -> list[Path]:
        return self.data.required_paths(data_root)

    def run(self, model: EncoderModel, ctx: RunContext) -> TaskResult:
        import torch

        from itra_bench.encoding import encode_images, encode_texts
        from itra_bench.protocols.retrieval import retrieval_metrics

        source = self.data.load(ctx.data_root)
        enc = encode_images(model, source, ctx, split="retrieval")
        # Drop captions of images that were skipped as corrupt, and renumber the rest.
        new_index = {int(old): new for new, old in enumerate(enc.indices.tolist())}
        keep = [t for t, img in enumerate(source.text_to_image) if img in new_index]
        captions = [source.captions[t] for t in keep]
        text_to_image = torch.tensor([new_index[source.text_to_image[t]] for t in keep])
        text_features = encode_texts(model, captions, ctx, "encode captions")
        # query_block: queries scored together (the ranks of a distributed job share them)
        block = positive_int_option(ctx.options, "query_block", 1024) or 1024
        metrics = retrieval_metrics(enc.features, text_features, text_to_image,
                                    chunk_size=block, device=ctx.device, world=ctx.world)
        details = {"num_images": len(enc.indices), "num_captions": len(captions),
                   **_details(enc)}
        return TaskResult(metrics, self.main_score, len(captions), details)


