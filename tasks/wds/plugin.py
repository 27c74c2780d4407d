"""clip-benchmark's WebDataset folders as tasks: a folder downloaded for clip-benchmark runs
here unchanged.

On the command line, ``--tasks wds:/path/to/wds_vtab-cifar10`` evaluates the folder's
``test`` split (zero-shot classification, or retrieval when its ``dataset_type.txt`` says
so). A task file chooses the protocol and split::

    name: cifar10-wds
    task_type: wds
    root: wds_vtab-cifar10          # relative to --data-root
    task: zeroshot_classification   # (default) | linear_probe | knn | clustering | retrieval
    split: test                     # linear_probe and knn also read train_split (train)

Class names come from ``classnames.txt`` (used as written) and prompts from
``zeroshot_classification_templates.txt`` (``{c}`` marks the class name), unless the file
sets ``templates``. The layout is described in :mod:`itra_bench.tasks.wds.webdataset_source`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from itra_bench import hookimpl
from itra_bench.context import RunContext
from itra_bench.errors import UserError
from itra_bench.generic_tasks import ClassificationTask, RetrievalTask
from itra_bench.protocols.templates import fill_template
from itra_bench.task import Task, TaskResult
from itra_bench.task_fields import build, file_key, read_keys
from itra_bench.tasks.wds.webdataset_source import (
    CAPTION_KEY,
    CLASSNAMES,
    DATASET_TYPE,
    LAYOUT,
    TEMPLATES,
    WebDatasetSplit,
    dataset_type,
    read_lines,
    shard_paths,
)

if TYPE_CHECKING:
    from itra_bench.model import EncoderModel

#: The ``task`` values of a task file and the protocol each runs.
TASKS = {"zeroshot_classification": "zeroshot", "linear_probe": "linear_probe", "knn": "knn",
         "clustering": "clustering", "retrieval": "retrieval"}
DEFAULT_TASK = "zeroshot_classification"


@dataclass
class WebDatasetFolder:
    """A webdataset folder and how to evaluate it: the keys of a task file of task type
    ``wds`` besides the common ones (:class:`itra_bench.task.Task`'s), and what
    ``--tasks wds:PATH`` sets."""

    root: str = file_key(help="the webdataset folder; a relative one is under --data-root")
    task: str | None = file_key(None, help=f"{' | '.join(TASKS)} (default: {DEFAULT_TASK})")
    split: str = file_key("test", help="the split evaluated")
    train_split: str = file_key("train", help="linear_probe, knn: the split fitted on")
    templates: list[str] | None = file_key(None, help="zeroshot: the prompt templates ({c} "
                                           "is the class name; default: the folder's)")
    k: int = file_key(20, help="knn: the neighbours that vote")
    weighting: str = file_key("uniform", help="knn: how the votes are weighted")
    temperature: float = file_key(0.07, help="knn: the temperature of similarity weighting")


@dataclass
class WebDatasetData:
    """The splits of a webdataset folder with ``cls`` labels; a relative ``root`` is under
    ``--data-root``."""

    root: str
    layout: str = LAYOUT

    def folder(self, data_root: Path) -> Path:
        return Path(data_root) / self.root

    def split(self, data_root: Path, name: str) -> WebDatasetSplit:
        return WebDatasetSplit(self.folder(data_root), name)

    def required_paths(self, data_root: Path, splits: list[str]) -> list[Path]:
        root = self.folder(data_root)
        return [root / CLASSNAMES, *(root / s for s in splits)]


@dataclass
class WebDatasetCaptionData:
    """One split of a webdataset folder whose samples carry captions (``txt``)."""

    root: str
    split: str = "test"
    layout: str = LAYOUT

    def folder(self, data_root: Path) -> Path:
        return Path(data_root) / self.root

    def load(self, data_root: Path) -> WebDatasetSplit:
        return WebDatasetSplit(self.folder(data_root), self.split, labels=CAPTION_KEY)

    def required_paths(self, data_root: Path) -> list[Path]:
        return [self.folder(data_root) / self.split]


def _check_type(root: Path, retrieval: bool) -> None:
    kind = dataset_type(root)
    if kind == "multilabel":
        raise UserError(f"{root / DATASET_TYPE} says multilabel: multilabel webdatasets "
                        "(npy labels) are not supported; evaluate a single-label dataset.")
    if (root / DATASET_TYPE).is_file() and (kind == "retrieval") != retrieval:
        want = "retrieval" if retrieval else "a classification task"
        raise UserError(f"{root / DATASET_TYPE} says {kind!r} but the task asks for {want}; "
                        "set `task:` to match the data.")


def read_templates(root: Path) -> list[str]:
    """The folder's zero-shot prompt templates, each checked to hold the class name slot."""
    path = root / TEMPLATES
    templates = read_lines(path, "prompt template")
    for line_no, template in enumerate(templates, 1):
        try:
            fill_template(template, "cat")
        except ValueError as exc:
            raise UserError(f"{path}, line {line_no}: {exc}") from None
    return templates


@dataclass
class WebDatasetClassificationTask(ClassificationTask):
    """A classification protocol on a webdataset folder; names and prompts are read from the
    folder when the task runs (``templates_from_file``: unless the task file set them)."""

    templates_from_file: bool = True

    def _root(self, data_root: Path) -> Path:
        return self.data.folder(data_root)

    def required_paths(self, data_root: Path, options: Mapping[str, Any]) -> list[Path]:
        paths = super().required_paths(data_root, options)
        if self.protocol == "zeroshot" and self.templates_from_file:
            paths.append(self._root(data_root) / TEMPLATES)
        return paths

    def check_files(self, data_root: Path, options: Mapping[str, Any]) -> list[str]:
        try:
            self._resolved(data_root)
            for split in self._splits():
                shard_paths(self._root(data_root) / split)
        except UserError as exc:
            return [str(exc)]
        return []

    def _resolved(self, data_root: Path) -> ClassificationTask:
        """This task with the folder's class names and templates filled in."""
        root = self._root(data_root)
        _check_type(root, retrieval=False)
        classnames = read_lines(root / CLASSNAMES, "class name")
        templates = self.templates
        if self.protocol == "zeroshot" and self.templates_from_file:
            templates = read_templates(root)
        return replace(self, classnames=classnames, templates=templates,
                       templates_from_file=False)

    def run(self, model: EncoderModel, ctx: RunContext) -> TaskResult:
        return ClassificationTask.run(self._resolved(ctx.data_root), model, ctx)


@dataclass
class WebDatasetRetrievalTask(RetrievalTask):
    """Image-text retrieval on a webdataset folder whose samples carry ``txt`` captions."""

    def check_files(self, data_root: Path, options: Mapping[str, Any]) -> list[str]:
        try:
            _check_type(self.data.folder(data_root), retrieval=True)
            shard_paths(self.data.folder(data_root) / self.data.split)
        except UserError as exc:
            return [str(exc)]
        return []

    def run(self, model: EncoderModel, ctx: RunContext) -> TaskResult:
        _check_type(self.data.folder(ctx.data_root), retrieval=True)
        return RetrievalTask.run(self, model, ctx)


def _make(name: str, folder: WebDatasetFolder, *, description: str = "",
          suites: tuple[str, ...] = (), source: str = "") -> Task:
    """The task that evaluates ``folder``."""
    task = folder.task or DEFAULT_TASK
    if task == "retrieval":
        return WebDatasetRetrievalTask(
            name=name, data=WebDatasetCaptionData(folder.root, folder.split),
            description=description, suites=suites)
    templates = folder.templates
    kwargs: dict[str, Any] = {"templates": templates} if templates is not None else {}
    return WebDatasetClassificationTask(
        name=name, data=WebDatasetData(folder.root), protocol=TASKS[task],
        eval_split=folder.split, train_split=folder.train_split, knn_k=folder.k,
        knn_weighting=folder.weighting, knn_temperature=folder.temperature,
        description=description, suites=suites, source=source,
        templates_from_file=templates is None, **kwargs)


def _default_task(root: Path) -> str:
    return "retrieval" if dataset_type(root) == "retrieval" else DEFAULT_TASK


def wds_task(doc: dict[str, Any], path: Path) -> Task:
    """Task-file factory of the task type ``wds``."""
    from itra_bench.protocols.knn import WEIGHTINGS as KNN_WEIGHTINGS
    values = read_keys((Task, WebDatasetFolder), doc, path, "task type wds")
    # A relative root is under --data-root, unknown here, so the default does not look at
    # the folder; a dataset_type.txt that disagrees is refused when the task is checked.
    task = values["task"] or DEFAULT_TASK
    if task not in TASKS:
        raise UserError(f"{path}: key 'task' must be one of {', '.join(TASKS)}, got {task!r}")
    for t in values["templates"] or []:
        try:
            fill_template(t, "cat")
        except ValueError as exc:
            raise UserError(f"{path}: key 'templates': {exc}") from None
    if values["k"] < 1:
        raise UserError(f"{path}: key 'k' must be a positive integer, got {values['k']}")
    if not 0 < values["temperature"] < math.inf:
        # As the file wrote it (the value read is a float: 0.0 where the file says 0).
        raise UserError(f"{path}: key 'temperature' must be a positive number, got "
                        f"{doc['temperature']}")
    if values["weighting"] not in KNN_WEIGHTINGS:
        raise UserError(f"{path}: key 'weighting' must be one of {KNN_WEIGHTINGS}")
    return _make(values["name"], build(WebDatasetFolder, values),
                 description=values["description"], suites=values["suites"], source=str(path))


#: What ``--tasks`` accepts to name a folder directly.
PREFIX = "wds:"


def wds_task_from_path(path: str) -> Task:
    """The task of ``--tasks wds:PATH``: the ``test`` split of the webdataset folder PATH
    (relative to the working directory), zero-shot classification unless its
    ``dataset_type.txt`` says retrieval. Its name is ``wds/<folder name without wds_>``."""
    if path.startswith(PREFIX):
        path = path[len(PREFIX):]
    if not path.strip():
        raise UserError(f"--tasks {PREFIX}: give the folder after the colon, e.g. "
                        f"{PREFIX}/data/wds_vtab-cifar10")
    root = Path(path).expanduser().absolute()
    label = root.name.removeprefix("wds_") or root.name
    return _make(f"wds/{label}", WebDatasetFolder(str(root), _default_task(root)),
                 description=f"clip-benchmark webdataset folder {root}")


@hookimpl
def itra_bench_task_file_protocols() -> dict[str, Callable[[dict[str, Any], Path], Task]]:
    return {"wds": wds_task}


@hookimpl
def itra_bench_task_prefixes() -> dict[str, Callable[[str], Task]]:
    return {PREFIX.rstrip(":"): wds_task_from_path}
