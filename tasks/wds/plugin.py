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
import re
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
from itra_bench.tasks.wds.folder_access import (
    RECORDS,
    FolderAccess,
    location,
    offline_requested,
)
from itra_bench.tasks.wds.webdataset_source import (
    CAPTION_KEY,
    CLASSNAMES,
    DATASET_TYPE,
    LAYOUT,
    TEMPLATES,
    WebDatasetSplit,
    dataset_type,
    read_lines,
    shard_locations,
)
from itra_bench.transport import is_pipe, is_remote, stat_locations

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


def folder_location(root: str, data_root: Path) -> str:
    """Where the folder ``root`` of a task is: a URL or ``pipe:`` command as written, a
    relative path under ``--data-root``."""
    return root if is_remote(root) else str(Path(data_root) / root)


@dataclass
class WebDatasetData:
    """The splits of a webdataset folder with ``cls`` labels; a relative ``root`` is under
    ``--data-root``, a URL is read as :mod:`itra_bench.transport` reads it. ``access`` says
    how remote data is read (set by the task when it runs)."""

    root: str
    layout: str = LAYOUT
    access: FolderAccess | None = None

    def folder(self, data_root: Path) -> str:
        return folder_location(self.root, data_root)

    def split(self, data_root: Path, name: str) -> WebDatasetSplit:
        return WebDatasetSplit(self.folder(data_root), name, access=self.access)

    def required_paths(self, data_root: Path, splits: list[str]) -> list[Path]:
        if is_remote(self.root):
            return []  # checked by check_files, over the network
        root = Path(self.folder(data_root))
        return [root / CLASSNAMES, *(root / s for s in splits)]


@dataclass
class WebDatasetCaptionData:
    """One split of a webdataset folder whose samples carry captions (``txt``)."""

    root: str
    split: str = "test"
    layout: str = LAYOUT
    access: FolderAccess | None = None

    def folder(self, data_root: Path) -> str:
        return folder_location(self.root, data_root)

    def load(self, data_root: Path) -> WebDatasetSplit:
        return WebDatasetSplit(self.folder(data_root), self.split, labels=CAPTION_KEY,
                               access=self.access)

    def required_paths(self, data_root: Path) -> list[Path]:
        if is_remote(self.root):
            return []
        return [Path(self.folder(data_root)) / self.split]


def _access(ctx: RunContext) -> FolderAccess:
    """How the task reads remote data in this run: what was read is kept beside the feature
    cache (nowhere with --no-cache)."""
    return FolderAccess.default(ctx.cache.root / RECORDS if ctx.cache is not None else None)


def _check_type(root: str, retrieval: bool, access: FolderAccess | None = None) -> None:
    where = location(root, DATASET_TYPE)
    kind = dataset_type(root, access)
    if kind is None:
        return
    if kind == "multilabel":
        raise UserError(f"{where} says multilabel: multilabel webdatasets "
                        "(npy labels) are not supported; evaluate a single-label dataset.")
    if (kind == "retrieval") != retrieval:
        want = "retrieval" if retrieval else "a classification task"
        raise UserError(f"{where} says {kind!r} but the task asks for {want}; "
                        "set `task:` to match the data.")


def _check_shards(root: str, splits: list[str]) -> None:
    """Every shard of ``splits`` is there: present (a local folder), or answered for by its
    server (a remote one, unless offline: then the run's records are its evidence)."""
    for split in splits:
        shards = shard_locations(root, split)
        if is_remote(root) and not is_pipe(root):
            stat_locations(shards, what="shard")


def read_templates(root: str, access: FolderAccess | None = None) -> list[str]:
    """The folder's zero-shot prompt templates, each checked to hold the class name slot."""
    path = location(root, TEMPLATES)
    templates = read_lines(path, "prompt template", access)
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

    def _root(self, data_root: Path) -> str:
        return self.data.folder(data_root)

    def required_paths(self, data_root: Path, options: Mapping[str, Any]) -> list[Path]:
        paths = super().required_paths(data_root, options)
        if self.protocol == "zeroshot" and self.templates_from_file \
                and not is_remote(self.data.root):
            paths.append(Path(self._root(data_root)) / TEMPLATES)
        return paths

    def check_files(self, data_root: Path, options: Mapping[str, Any]) -> list[str]:
        if is_remote(self.data.root) and offline_requested():
            return []  # no network: the run reads what earlier runs kept, or says what is not
        try:
            self._resolved(data_root, FolderAccess())
            _check_shards(self._root(data_root), self._splits())
        except UserError as exc:
            return [str(exc)]
        return []

    def _resolved(self, data_root: Path, access: FolderAccess | None = None
                  ) -> ClassificationTask:
        """This task with the folder's class names and templates filled in, and reading
        remote data as ``access`` says."""
        access = access or FolderAccess.default()
        root = self._root(data_root)
        _check_type(root, retrieval=False, access=access)
        classnames = read_lines(location(root, CLASSNAMES), "class name", access)
        templates = self.templates
        if self.protocol == "zeroshot" and self.templates_from_file:
            templates = read_templates(root, access)
        return replace(self, classnames=classnames, templates=templates,
                       templates_from_file=False, data=replace(self.data, access=access))

    def run(self, model: EncoderModel, ctx: RunContext) -> TaskResult:
        return ClassificationTask.run(self._resolved(ctx.data_root, _access(ctx)), model, ctx)


@dataclass
class WebDatasetRetrievalTask(RetrievalTask):
    """Image-text retrieval on a webdataset folder whose samples carry ``txt`` captions."""

    def check_files(self, data_root: Path, options: Mapping[str, Any]) -> list[str]:
        if is_remote(self.data.root) and offline_requested():
            return []
        try:
            _check_type(self.data.folder(data_root), retrieval=True, access=FolderAccess())
            _check_shards(self.data.folder(data_root), [self.data.split])
        except UserError as exc:
            return [str(exc)]
        return []

    def run(self, model: EncoderModel, ctx: RunContext) -> TaskResult:
        access = _access(ctx)
        _check_type(self.data.folder(ctx.data_root), retrieval=True, access=access)
        return RetrievalTask.run(replace(self, data=replace(self.data, access=access)),
                                 model, ctx)


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


def _default_task(root: str) -> str:
    try:
        kind = dataset_type(root)
    except UserError:
        if not offline_requested():
            raise
        # Offline, and never read beside the default cache: the run reads the type from its
        # own --cache-dir and refuses a retrieval folder taken for classification.
        kind = None
    return "retrieval" if kind == "retrieval" else DEFAULT_TASK


def wds_task(doc: dict[str, Any], path: Path) -> Task:
    """Task-file factory of the task type ``wds``."""
    from itra_bench.protocols.knn import WEIGHTINGS as KNN_WEIGHTINGS
    values = read_keys((Task, WebDatasetFolder), doc, path, "task type wds")
    # A relative root is under --data-root, unknown here, so the default does not look at
    # the folder; a dataset_type.txt that disagrees is refused when the task is checked.
    task = values["task"] or DEFAULT_TASK
    if is_remote(values["root"]) and not is_pipe(values["root"]):
        values["root"] = remote_folder(values["root"])
    if is_pipe(values["root"]):
        # A file may name data, never a command to run (as it never names code to import).
        raise UserError(f"{path}: key 'root' is a pipe: command; a task file cannot run "
                        "commands. Name the folder by a path or URL, or give the command "
                        f"on the command line: --tasks '{PREFIX}{values['root']}'.")
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


_HF_TREE = re.compile(r"^(https://huggingface\.co/datasets/[^/]+/[^/]+)/tree/(.+)$")


def remote_folder(url: str) -> str:
    """The location of a remote folder's files: a Hugging Face dataset page
    (``https://huggingface.co/datasets/USER/REPO/tree/BRANCH``, what clip-benchmark takes) is
    read through its ``resolve`` URLs; any other URL as written."""
    match = _HF_TREE.match(url.rstrip("/"))
    return f"{match.group(1)}/resolve/{match.group(2)}" if match else url.rstrip("/")


def _label(root: str) -> str:
    """A folder's name without clip-benchmark's ``wds_`` prefix (the repository's name for a
    Hugging Face URL, the path's last part for a pipe: command's ``{file}`` folder)."""
    if is_pipe(root):
        root = root.split("{file}", 1)[0].rstrip("/ ")
    hf = _HF_TREE.match(root.rstrip("/")) or re.match(
        r"^https://huggingface\.co/datasets/[^/]+/([^/]+)/resolve/", root)
    name = hf.group(1).rsplit("/", 1)[-1] if hf else re.split(r"[/\s]", root.rstrip("/"))[-1]
    return name.removeprefix("wds_") or name


def wds_task_from_path(path: str) -> Task:
    """The task of ``--tasks wds:PATH``: the ``test`` split of the webdataset folder PATH (a
    folder relative to the working directory, a URL, or a ``pipe:`` command with ``{file}``
    where each file's path in the folder goes), zero-shot classification unless its
    ``dataset_type.txt`` says retrieval. Its name is ``wds/<folder name without wds_>``."""
    if path.startswith(PREFIX):
        path = path[len(PREFIX):]
    if not path.strip():
        raise UserError(f"--tasks {PREFIX}: give the folder after the colon, e.g. "
                        f"{PREFIX}/data/wds_vtab-cifar10")
    if is_pipe(path) and "{file}" not in path:
        raise UserError(f"--tasks {PREFIX}{path}: a pipe: command names a folder's files by "
                        "the placeholder {file} (their path in the folder), e.g. "
                        f"'{PREFIX}pipe:aws s3 cp s3://bucket/wds_cifar10/{{file}} -'")
    if is_remote(path):
        root = path if is_pipe(path) else remote_folder(path)
        label = _label(path)
    else:
        local = Path(path).expanduser().absolute()
        root, label = str(local), local.name.removeprefix("wds_") or local.name
    return _make(f"wds/{label}", WebDatasetFolder(root, _default_task(root)),
                 description=f"clip-benchmark webdataset folder {root}")


@hookimpl
def itra_bench_task_file_protocols() -> dict[str, Callable[[dict[str, Any], Path], Task]]:
    return {"wds": wds_task}


@hookimpl
def itra_bench_task_prefixes() -> dict[str, Callable[[str], Task]]:
    return {PREFIX.rstrip(":"): wds_task_from_path}
