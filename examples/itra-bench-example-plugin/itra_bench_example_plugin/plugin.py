"""The plugin module that the ``itra_bench`` entry point names: one function per hook.

itra-bench calls each ``@hookimpl`` function by name (see ``itra_bench.hookspecs``); a plugin
implements only the hooks it needs. Hooks return cheap descriptions: models are built and
data read only when a run asks for them.

itra-bench imports this module on every command, ``itra-bench list`` and ``--help`` included,
so it imports nothing heavy itself: the model module (and torchvision with it) is imported
only when a ``colorhist`` model is built and torch by the task only in its ``run``. Names
from ``itra_bench`` load on first use, so importing the torch-free ones (``ModelBuilder``,
``Task``, ...) here stays cheap; ``EncoderModel`` is imported for type checkers only.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from itra_bench import LazyFactory, LossSpec, ModelBuilder, ModelOptions, Task, hookimpl
from itra_bench_example_plugin.tasks import DigitsCentroidTask

if TYPE_CHECKING:
    from itra_bench import EncoderModel

#: Task files shipped as package data (pyproject's package-data lists them).
CARDS_DIR = Path(__file__).parent / "cards"


def _build_colorhist(rest: str, options: ModelOptions) -> EncoderModel:
    from itra_bench_example_plugin.colorhist import build

    return build(rest, options)


@hookimpl
def itra_bench_model_builders() -> list[ModelBuilder]:
    return [ModelBuilder("colorhist", _build_colorhist,
                         description="per-channel colour histogram (weight-free, image only)",
                         example="colorhist:16")]


@hookimpl
def itra_bench_losses() -> list[LossSpec]:
    # A LazyFactory imports the loss module only when itra-train builds the loss
    # (LossSpec("example-cosine", PairedCosineLoss, ...) works too, importing it now).
    return [LossSpec("example-cosine",
                     LazyFactory("itra_bench_example_plugin.losses", "PairedCosineLoss"),
                     description="mean (1 - cosine) between paired image and text features")]


@hookimpl
def itra_bench_tasks() -> list[Task]:
    # The task's `suites` field puts it in the `example` suite; no itra_bench_suites needed.
    return [DigitsCentroidTask()]


@hookimpl
def itra_bench_task_files() -> list[Path]:
    # Datasets as data: each YAML file is read like `--tasks FILE`. imagenette.yaml is an
    # ELEVATER dataset card (`task_type: elevater`), so it becomes an ELEVATER task with its
    # zero-shot, linear-probe and fine-tune modes, without a line of task code.
    return sorted(CARDS_DIR.glob("*.yaml"))
